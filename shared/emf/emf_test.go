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
	w.Emit(map[string]string{"Connector": "twilio"}, Metric{"AuthFailures", 1, Count})
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != 2 || !bytes.Contains(lines[0], []byte(`"Connector":"twilio"`)) {
		t.Fatalf("records = %q, want two, each naming its connector (Logs Insights groups by it)", lines)
	}
	got := append(Parse(lines[0]), Parse(lines[1])...)
	want := []Datum{
		// Volume metrics are published without the connector: one series each, not one per connector.
		{Namespace: Namespace, Name: "Received", Unit: Count, Value: 1, Dimensions: map[string]string{}, Time: at},
		{Namespace: Namespace, Name: "Latency", Unit: Milliseconds, Value: 12.5, Dimensions: map[string]string{}, Time: at},
		// A failure count alarmed per connector is published per connector and in total.
		{Namespace: Namespace, Name: "AuthFailures", Unit: Count, Value: 1, Dimensions: map[string]string{"Connector": "twilio"}, Time: at},
		{Namespace: Namespace, Name: "AuthFailures", Unit: Count, Value: 1, Dimensions: map[string]string{}, Time: at},
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
		in     []string
		metric string
		want   [][]string
	}{
		{nil, "Processed", [][]string{{}}},
		{[]string{"Job"}, "DriftItems", [][]string{{"Job"}}},
		{[]string{"Connector"}, "Received", [][]string{{}}},
		{[]string{"Outcome", "Connector"}, "Processed", [][]string{{"Outcome"}, {}}},
		{[]string{"Connector"}, "AuthFailures", [][]string{{"Connector"}, {}}},
		{[]string{"Connector"}, "EnqueueFailures", [][]string{{"Connector"}, {}}},
		{[]string{"Kind", "Connector"}, "Conflicts", [][]string{{"Kind"}, {}}},
	} {
		got := DimensionSets(tc.in, tc.metric)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("DimensionSets(%v, %s) (-want +got):\n%s", tc.in, tc.metric, diff)
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
			if len(d.Dimensions) != 1 {
				continue // the total
			}
			if d.Name == "LagMs" {
				lags++
			} else {
				sum[d.Dimensions["Outcome"]+" "+d.Name] += d.Value
			}
		}
	}
	if want := map[string]float64{"APPLIED Processed": MaxValues + 5, "NOOP Processed": 1}; !cmp.Equal(sum, want) {
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
