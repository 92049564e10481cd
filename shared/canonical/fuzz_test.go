package canonical

import (
	"errors"
	"testing"
)

// An SQS message body is decoded and validated without panicking; what decodes survives a round
// trip with the same key, group and deduplication ids.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"key":"twilio:call:CA1:0","source":"twilio","kind":"call.status","occurred_at":"2025-03-11T15:00:00Z",` +
		`"received_at":"2025-03-11T15:00:01Z","group_key":"phone:+14155550123","subject":{"phones":["+14155550123"]},` +
		`"fields":{"contact":{"phone":"+14155550123"}},"activity":{"id":"call:CA1","type":"call","status":"ringing"},` +
		`"mapping_version":"twilio/1","payload_hash":"ab"}`))
	f.Add([]byte(`{"key":"k"}`))
	f.Add([]byte(`{"key":"k","source":"s","kind":"x","group_key":"g","occurred_at":"0001-01-01T00:00:00Z","payload_hash":"h"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Unmarshal(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Unmarshal error %v does not wrap ErrInvalid", err)
			}
			return
		}
		out, err := ev.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a valid event: %v", err)
		}
		again, err := Unmarshal(out)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if again.Key != ev.Key || again.DedupID() != ev.DedupID() || again.GroupID() != ev.GroupID() {
			t.Fatalf("round trip changed the identity: %q/%q -> %q/%q", ev.Key, ev.GroupKey, again.Key, again.GroupKey)
		}
	})
}
