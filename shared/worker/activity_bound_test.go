package worker

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/timeline"
	"github.com/crmsync/crmsync/tools/moto"
)

// An activity item has a bounded size: 10,000 status callbacks of one call all commit (DynamoDB,
// and moto, refuse items over 400 KB), the stored activity keeps only its newest
// timeline.MaxEntries entries (the full history stays in the ledger), and the contact still
// rebuilds from the ledger with an empty diff.
//
// Written before the fix; on the old code every update appended an entry to the one document
// and the item outgrew DynamoDB's limit long before the end (CRMSYNC_BOUND_UPDATES=700):
//
//	activity_bound_test.go:67: apply twilio:bound:CABOUND:340: outcome REJECTED (permanent
//	failure: transact write: ValidationException: Item size has exceeded the maximum allowed size)
func TestActivityWithTenThousandUpdatesStaysBounded(t *testing.T) {
	// Its own moto_server and tables: it runs beside the package's other long test (make test's
	// longest path was the two of them one after the other).
	t.Parallel()
	// Stock moto deep-copies every table a transaction touches, so 10,000 transactions would take
	// far longer than the suite allows; the patched moto_server (tools/moto/patched.py: the same
	// API answers, an undo log instead of the copy) runs them in a couple of minutes.
	endpoint, err := moto.FreeEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	server, err := moto.StartPatched(context.Background(), endpoint)
	if err != nil {
		t.Fatalf("patched moto: %v", err)
	}
	t.Cleanup(server.Stop)
	tb := provisionOn(t, endpoint)
	w := newWorker(t, tb, tb.ddb, newClock(t0.Add(48*time.Hour)))
	ctx := context.Background()
	phone := "+14155550188"
	statuses := []string{"queued", "ringing", "in-progress", "ringing", "in-progress"}
	updates := 10000
	if n, err := strconv.Atoi(os.Getenv("CRMSYNC_BOUND_UPDATES")); err == nil && n > 0 {
		updates = n // a quicker local run
	}
	// Each update carries a 1 KB attribute (a vendor's error text, say), so an unbounded item
	// would pass 400 KB after a few hundred updates.
	note := strings.Repeat("x", 1024)
	for i := range updates {
		status := statuses[i%len(statuses)]
		if i == updates-1 {
			status = "completed"
		}
		at := t0.Add(time.Duration(i) * time.Second)
		ev := &canonical.Event{
			Key: fmt.Sprintf("twilio:bound:CABOUND:%d", i), Source: "twilio", Kind: canonical.KindCallStatus, OccurredAt: at, ReceivedAt: at,
			GroupKey: "phone:" + phone, Subject: canonical.Person{Phones: []string{phone}},
			Fields: map[string]map[string]string{"contact": {"phone": phone, "last_call_status": status, "last_activity_at": at.Format(time.RFC3339)}},
			Activity: &canonical.Activity{ID: "call:CABOUND", Type: "call", Status: status, Direction: "inbound", DurationSec: i % 60,
				Participants: []canonical.Participant{{Role: "caller", Phone: phone}}, Attrs: map[string]string{"sequence": fmt.Sprint(i), "note": note}},
			MappingVersion: "twilio/1", PayloadHash: canonical.HashHex(fmt.Sprintf("bound%d", i)),
		}
		res, err := w.Apply(ctx, ev)
		if err != nil {
			t.Fatalf("apply %s: %v", ev.Key, err)
		}
		if res.Outcome != "APPLIED" {
			t.Fatalf("apply %s: outcome %s (%s) %+v", ev.Key, res.Outcome, res.Reason, res)
		}
	}
	v := getContact(t, w, ContactQuery{Phone: phone})
	if len(v.Timeline) != 1 {
		t.Fatalf("timeline has %d activities", len(v.Timeline))
	}
	call := v.Timeline[0].Activity
	if call.Status != "completed" || len(call.Entries) != timeline.MaxEntries || !call.Truncated ||
		call.Entries[len(call.Entries)-1].Key != fmt.Sprintf("twilio:bound:CABOUND:%d", updates-1) {
		t.Fatalf("call = status %s, %d entries (truncated %v), last %+v", call.Status, len(call.Entries), call.Truncated, call.Entries[len(call.Entries)-1])
	}
	rebuilt, err := w.Rebuild(ctx, v.Contact.ID)
	if err != nil {
		t.Fatal(err)
	}
	diff, err := w.DiffRebuild(ctx, rebuilt)
	if err != nil {
		t.Fatal(err)
	}
	if !diff.Empty() {
		t.Fatalf("rebuild diff = %+v", diff)
	}
}
