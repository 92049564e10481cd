package store

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestPackRoundTrip(t *testing.T) {
	batch, err := os.ReadFile("../../events/sqs-ingest-batch.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{`{"key":"twilio:call:CA1:3"}`, string(batch), strings.Repeat("é", 5000)} {
		packed := Pack([]byte(doc))
		if len(packed) == 0 || packed[0] != packedV1 {
			t.Fatalf("Pack(%.20q) = %x, want format %d first", doc, packed[:min(len(packed), 4)], packedV1)
		}
		got, err := packed.Unpack()
		if err != nil || got != doc {
			t.Errorf("round trip of %d bytes: got %d bytes, %v", len(doc), len(got), err)
		}
	}
	if Pack(nil) != nil {
		t.Error("an empty document packs to something")
	}
	if got, err := Packed(nil).Unpack(); got != "" || err != nil {
		t.Errorf("nil unpacks to %q, %v", got, err)
	}
	for _, bad := range []Packed{{0x7f, 1, 2}, {packedV1, 0xff, 0xff}} {
		if _, err := bad.Unpack(); err == nil {
			t.Errorf("Unpack(%x) succeeded, want an error", []byte(bad))
		}
	}
}

// Items written before packing keep their documents in the plain attributes; the accessors
// read either form, and setting a document clears the plain one.
func TestDocumentsReadPackedAndPlain(t *testing.T) {
	const doc = `{"id":"call:CA1","status":"completed"}`
	tests := []struct {
		name string
		item LedgerItem
		want string
	}{
		{"packed", LedgerItem{Event: Pack([]byte(doc))}, doc},
		{"written before packing", LedgerItem{PlainEvent: doc}, doc},
		{"none", LedgerItem{}, ""},
	}
	for _, tt := range tests {
		got, err := tt.item.EventJSON()
		if err != nil || got != tt.want || tt.item.HasEvent() != (tt.want != "") {
			t.Errorf("%s: EventJSON = %q, %v; HasEvent %v", tt.name, got, err, tt.item.HasEvent())
		}
	}
	legacy := ActivityItem{PlainDoc: doc}
	if got, err := legacy.DocJSON(); got != doc || err != nil {
		t.Errorf("plain doc = %q, %v", got, err)
	}
	legacy.SetDoc(`{"id":"call:CA1","status":"busy"}`)
	if got, _ := legacy.DocJSON(); legacy.PlainDoc != "" || got != `{"id":"call:CA1","status":"busy"}` {
		t.Errorf("after SetDoc: plain %q, doc %q", legacy.PlainDoc, got)
	}
}

// A ledger item's compact event, the bulk of the item, packs to well under half its size: write
// units are billed per KB of item.
func TestPackedLedgerEventIsSmall(t *testing.T) {
	event := `{"key":"twilio:call:CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7:3","source":"twilio","kind":"call.status",` +
		`"occurred_at":"2025-03-11T16:05:12Z","received_at":"2025-03-11T16:05:13.120399Z","group_key":"phone:+14155550123",` +
		`"subject":{"phones":["+14155550123"]},"fields":{"contact":{"last_activity_at":"2025-03-11T16:05:12Z",` +
		`"last_call_status":"completed","phone":"+14155550123"}},"activity":{"id":"call:CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7",` +
		`"type":"call","status":"completed","direction":"inbound","duration_sec":312,"participants":[{"role":"caller",` +
		`"phone":"+14155550123"},{"role":"callee","phone":"+14155550100"}]},"external_ids":{"call_sid":` +
		`"CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7","account_sid":"ACdec0de00000000000000000000000001"},"mapping_version":"twilio/1",` +
		`"payload_hash":"0d2abfe0b08d3a8bc8e9e06b8e3f9931acdf8a088bffd284493460fd615f5360"}`
	if packed := Pack([]byte(event)); len(packed)*2 > len(event) {
		t.Errorf("a %d-byte event packs to %d bytes, want under half", len(event), len(packed))
	}
}

// Packing reuses its deflate writers: a document costs kilobytes of allocation, not the
// megabyte a new writer holds.
func TestPackReusesWriters(t *testing.T) {
	doc := []byte(strings.Repeat(`{"key":"twilio:call:CA1:3","status":"completed"}`, 20))
	Pack(doc) // warm the pool
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const n = 50
	for range n {
		Pack(doc)
	}
	runtime.ReadMemStats(&after)
	if perCall := (after.TotalAlloc - before.TotalAlloc) / n; perCall > 64<<10 {
		t.Errorf("Pack allocates %d bytes per call, want a reused writer (a new one holds about 1 MB)", perCall)
	}
}
