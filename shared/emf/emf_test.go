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

// While held, records of one dimension set merge into one: counts summed, other values listed
// (split past MaxValues); every value reads back as before, and nothing is written until the
// last Release.
func TestHoldAggregatesOneRecordPerDimensionSet(t *testing.T) {
	var buf bytes.Buffer
	at := time.UnixMilli(1_800_000_000_000)
	w := New(&buf, func() time.Time { return at })
	w.Hold()
	w.Hold() // nested: a batch inside an invocation
	twilio := map[string]string{"Connector": "twilio", "Outcome": "APPLIED"}
	for i := range MaxValues + 5 {
		w.Emit(twilio, Metric{"Processed", 1, Count}, Metric{"LagMs", float64(i), Milliseconds})
	}
	w.Emit(map[string]string{"Connector": "mailgun", "Outcome": "NOOP"}, Metric{"Processed", 1, Count})
	w.Release()
	if buf.Len() != 0 {
		t.Fatalf("wrote before the last Release: %s", buf.String())
	}
	w.Release()
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if got, want := len(lines), 3; got != want { // twilio (100 lags), twilio (5 more lags), mailgun
		t.Fatalf("records = %d, want %d:\n%s", got, want, buf.String())
	}
	sum := map[string]float64{}
	lags := 0
	for _, line := range lines {
		for _, d := range Parse(line) {
			if len(d.Dimensions) != 2 {
				continue // rollups
			}
			if d.Name == "LagMs" {
				lags++
			} else {
				sum[d.Dimensions["Connector"]+" "+d.Name] += d.Value
			}
		}
	}
	if want := map[string]float64{"twilio Processed": MaxValues + 5, "mailgun Processed": 1}; !cmp.Equal(sum, want) {
		t.Errorf("sums = %v, want %v", sum, want)
	}
	if lags != MaxValues+5 {
		t.Errorf("LagMs values = %d, want %d", lags, MaxValues+5)
	}
	// Not holding: one record per Emit again.
	buf.Reset()
	w.Emit(twilio, Metric{"Processed", 1, Count})
	w.Emit(twilio, Metric{"Processed", 1, Count})
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 2 {
		t.Errorf("records after Release = %d, want 2", n)
	}
}
