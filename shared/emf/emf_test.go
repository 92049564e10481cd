package emf

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEmitParseRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	at := time.UnixMilli(1_800_000_000_000)
	w := New(&buf, func() time.Time { return at })
	w.Emit(map[string]string{"Connector": "twilio"}, Metric{"Received", 1, Count}, Metric{"Latency", 12.5, Milliseconds})
	got := Parse(bytes.TrimSpace(buf.Bytes()))
	want := []Datum{
		{Namespace: Namespace, Name: "Received", Unit: Count, Value: 1, Dimensions: map[string]string{"Connector": "twilio"}, Time: at},
		{Namespace: Namespace, Name: "Latency", Unit: Milliseconds, Value: 12.5, Dimensions: map[string]string{"Connector": "twilio"}, Time: at},
		// The connector rollup: the same values with no dimension.
		{Namespace: Namespace, Name: "Received", Unit: Count, Value: 1, Dimensions: map[string]string{}, Time: at},
		{Namespace: Namespace, Name: "Latency", Unit: Milliseconds, Value: 12.5, Dimensions: map[string]string{}, Time: at},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if Parse([]byte(`{"message":"hello"}`)) != nil || Parse([]byte("not json")) != nil {
		t.Errorf("Parse found metrics in a plain log line")
	}
}

func TestDimensionSets(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want [][]string
	}{
		{nil, [][]string{{}}},
		{[]string{"Job"}, [][]string{{"Job"}}},
		{[]string{"Connector"}, [][]string{{"Connector"}, {}}},
		{[]string{"Outcome", "Connector"}, [][]string{{"Connector", "Outcome"}, {"Outcome"}, {}}},
	} {
		got := DimensionSets(tc.in)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("DimensionSets(%v) (-want +got):\n%s", tc.in, diff)
		}
	}
}
