package worker

import (
	"context"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
)

// crmEdit is a crm.change event as shared/crmchange builds it: key "crm:<change id>", source
// crm, the CRM user as actor with a role, the changed fields under Fields["contact"].
func crmEdit(changeID, email string, at time.Time, actor, role string, contact map[string]string) *canonical.Event {
	return &canonical.Event{
		Key: "crm:" + changeID, Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: at, ReceivedAt: at,
		GroupKey: "email:" + email, Subject: canonical.Person{Emails: []string{email}},
		Actor:          &canonical.Actor{Email: actor, Role: role, Type: "user"},
		Fields:         map[string]map[string]string{"contact": contact},
		ExternalIDs:    map[string]string{"change_id": changeID},
		MappingVersion: "crm/1", PayloadHash: canonical.HashHex("crm-change:" + changeID),
	}
}

// Two CRM edits of one owner-ruled field (first_name: identity, owner_wins_unless_blank)
// delivered newest-first end with the newest value, and a forced re-run of the older edit is
// re-decided — it loses again — rather than re-imposed, while the re-run is still recorded.
//
// Written before the fix; on the old code the last-processed owner write won:
//
//	ordering_test.go:44: first_name after newest-first delivery = {Value:Bob ... EventKey:crm:chg-old ...}, want Robert from crm:chg-new
func TestCRMEditsOrderedByOccurredAt(t *testing.T) {
	tb := provision(t)
	w := newWorker(t, tb, tb.ddb, newClock(t0.Add(time.Hour)))
	ctx := context.Background()
	email := "rob@acme.com"
	older := crmEdit("chg-old", email, t0.Add(time.Minute), "alice@example.com", "sales", map[string]string{"first_name": "Bob", "last_name": "Smith"})
	newer := crmEdit("chg-new", email, t0.Add(2*time.Minute), "bob@example.com", "revops", map[string]string{"first_name": "Robert"})

	mustApply(t, w, newer)
	mustApply(t, w, older) // delivered late: the queue does not promise occurred_at order
	v := getContact(t, w, ContactQuery{Email: email})
	f := v.Contact.Fields["first_name"]
	if f.Value != "Robert" || f.EventKey != newer.Key || f.Source != "crm" {
		t.Fatalf("first_name after newest-first delivery = %+v, want Robert from %s", f, newer.Key)
	}
	if ln := v.Contact.Fields["last_name"]; ln.Value != "Smith" || ln.EventKey != older.Key {
		t.Errorf("last_name = %+v, want Smith from the older edit (no newer edit touched it)", ln)
	}
	var rejected bool
	for _, a := range v.Audit {
		if a.EventKey == older.Key && a.Field == "first_name" {
			rejected = a.Decision == "rejected" && a.Rule == "owner_wins_unless_blank"
		}
	}
	if !rejected {
		t.Errorf("no rejected audit entry for the older edit's first_name: %+v", v.Audit)
	}

	// A forced re-run of the older edit goes through the same decision and loses again.
	if _, err := w.Replay(ctx, older.Key, "ops@example.com", "re-run after incident"); err != nil {
		t.Fatalf("replay: %v", err)
	}
	after := getContact(t, w, ContactQuery{Email: email})
	if f := after.Contact.Fields["first_name"]; f.Value != "Robert" || f.EventKey != newer.Key {
		t.Fatalf("first_name after replay of the older edit = %+v, want Robert from %s", f, newer.Key)
	}
	if ln := after.Contact.Fields["last_name"]; ln.Value != "Smith" || ln.EventKey != older.Key {
		t.Errorf("last_name after replay = %+v", ln)
	}
	led, err := w.getLedger(ctx, older.Key)
	if err != nil || led == nil {
		t.Fatalf("ledger of %s: %+v %v", older.Key, led, err)
	}
	if len(led.Reruns) != 1 || led.Reruns[0].By != "ops@example.com" || led.Reruns[0].Why != "re-run after incident" {
		t.Fatalf("reruns = %+v, want the forced re-run recorded", led.Reruns)
	}
	var rerun, rerunRejected bool
	for _, a := range after.Audit {
		if a.EventKey != older.Key {
			continue
		}
		rerun = rerun || (a.Decision == "rerun" && a.RerunBy == "ops@example.com" && a.RerunWhy == "re-run after incident")
		rerunRejected = rerunRejected || (a.Field == "first_name" && a.RerunBy == "ops@example.com" && a.Decision == "rejected")
	}
	if !rerun || !rerunRejected {
		t.Errorf("audit after replay: rerun entry %v, re-decided first_name rejected %v: %+v", rerun, rerunRejected, after.Audit)
	}
}

// The case: two CRM edits of one field delivered in order, then `crmsync replay` of the
// older one. The re-run is re-decided against the newer value and loses; the field keeps the
// newer edit.
//
// Written before the fix; on the old code the replay re-imposed the older edit:
//
//	ordering_test.go:111: first_name after replay of the older edit = {Value:Bob Source:crm EventKey:crm:chg-1 OccurredAt:2026-11-02T09:01:00.000000000Z LockedBy:}, want Robert from crm:chg-2
func TestReplayOfOlderCRMEditDoesNotRevert(t *testing.T) {
	tb := provision(t)
	w := newWorker(t, tb, tb.ddb, newClock(t0.Add(time.Hour)))
	ctx := context.Background()
	email := "bert@acme.com"
	older := crmEdit("chg-1", email, t0.Add(time.Minute), "alice@example.com", "sales", map[string]string{"first_name": "Bob"})
	newer := crmEdit("chg-2", email, t0.Add(2*time.Minute), "alice@example.com", "sales", map[string]string{"first_name": "Robert"})
	mustApply(t, w, older)
	mustApply(t, w, newer)
	res, err := w.Replay(ctx, older.Key, "ops@example.com", "verify after incident")
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if f := getContact(t, w, ContactQuery{Email: email}).Contact.Fields["first_name"]; f.Value != "Robert" || f.EventKey != newer.Key {
		t.Fatalf("first_name after replay of the older edit = %+v, want Robert from %s", f, newer.Key)
	}
	led, err := w.getLedger(ctx, older.Key)
	if err != nil || led == nil || len(led.Reruns) != 1 || led.Reruns[0].By != "ops@example.com" {
		t.Fatalf("ledger of %s after replay: %+v %v (result %+v)", older.Key, led, err, res)
	}
}
