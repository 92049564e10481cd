package worker

import (
	"context"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/store"
)

// An event redelivered after its source's dedup window is re-decided (nothing it set is
// reverted), but the ledger keeps the original outcome, reason and recording time and lists the
// redelivery beside them.
func TestRedeliveryAfterDedupWindowKeepsTheOriginalOutcome(t *testing.T) {
	tb := provision(t)
	c := newClock(t0)
	w := newWorker(t, tb, tb.ddb, c)
	ev := callback(1, "ringing", "+14155550100", 0)
	first := mustApply(t, w, ev)
	original, err := w.applier.getLedger(context.Background(), ev.Key)
	if err != nil || original == nil {
		t.Fatalf("ledger item: %+v %v", original, err)
	}
	c.Advance(31 * 24 * time.Hour) // past twilio's 30-day window
	again := mustApply(t, w, ev)
	if again.Duplicate {
		t.Fatalf("a redelivery after the window was acknowledged as a duplicate")
	}
	got, err := w.applier.getLedger(context.Background(), ev.Key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome != first.Outcome || got.Reason != original.Reason || got.RecordedAt != original.RecordedAt {
		t.Errorf("ledger outcome %q reason %q recorded %s; want the original %q %q %s",
			got.Outcome, got.Reason, got.RecordedAt, first.Outcome, original.Reason, original.RecordedAt)
	}
	if len(got.Redeliveries) != 1 || got.Redeliveries[0].Outcome != again.Outcome || got.Redeliveries[0].At != store.FormatTime(c.Now()) {
		t.Errorf("redeliveries = %+v, want one at %s with outcome %s", got.Redeliveries, store.FormatTime(c.Now()), again.Outcome)
	}
	if got.DedupUntil <= c.Now().UnixMilli() {
		t.Errorf("dedup_until %d: a new window should start at the redelivery", got.DedupUntil)
	}
}

// A source whose dedup window is forever keeps its ledger items: no TTL attribute, so DynamoDB
// never expires the item that makes a later redelivery a duplicate. A windowed source's items
// expire after the retention.
func TestForeverSourcesLedgerItemsHaveNoTTL(t *testing.T) {
	tb := provision(t)
	c := newClock(t0)
	w := newWorker(t, tb, tb.ddb, c)
	tests := []struct {
		name    string
		ev      *canonical.Event
		wantTTL bool
	}{
		{"typeform (forever)", lead("typeform:f1", "f@example.com", t0, map[string]string{"first_name": "F"}), false},
		{"twilio (30d)", callback(1, "ringing", "+14155550100", 0), true},
	}
	for _, tt := range tests {
		mustApply(t, w, tt.ev)
		got, err := w.applier.getLedger(context.Background(), tt.ev.Key)
		if err != nil || got == nil {
			t.Fatalf("%s: ledger item %+v %v", tt.name, got, err)
		}
		if hasTTL := got.ExpiresAt != 0; hasTTL != tt.wantTTL {
			t.Errorf("%s: expires_at = %d, want a TTL: %v", tt.name, got.ExpiresAt, tt.wantTTL)
		}
	}
}

// A redelivery after the dedup window that refuses what the original applied (a newer event set
// the field since) keeps the original's audit: its own decisions are audited beside it, never
// over it. Written before the fix: the redelivery's audit item had the original's key and
// replaced it, so the contact's trail lost "applied last_call_status" for the event.
func TestRedeliveryAfterDedupWindowKeepsTheOriginalAudit(t *testing.T) {
	tb := provision(t)
	c := newClock(t0)
	w := newWorker(t, tb, tb.ddb, c)
	first := callback(1, "ringing", "+14155550100", 0)
	mustApply(t, w, first)
	mustApply(t, w, callback(2, "completed", "+14155550100", 30))
	c.Advance(31 * 24 * time.Hour) // past twilio's 30-day window
	mustApply(t, w, first)
	decisions := map[string]int{}
	for _, entry := range getContact(t, w, ContactQuery{Phone: "+14155550100"}).Audit {
		if entry.EventKey == first.Key && entry.Field == "last_call_status" {
			decisions[entry.Decision]++
		}
	}
	if decisions["applied"] != 1 || decisions["rejected"] != 1 {
		t.Errorf("last_call_status decisions of %s in the audit: %v, want the original's applied and the redelivery's rejected", first.Key, decisions)
	}
}
