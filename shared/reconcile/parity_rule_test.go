package reconcile_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/shared/reconcile/check"
)

// Parity recomputes a contact the way the worker decided it: each group's real rule, folded in
// the order the worker applied the events. The identity group is owner_wins_unless_blank (owner
// crm): here the owner wrote first_name and a vendor's later proposal was refused, and last_name
// was filled by the first vendor lead applied while a lead with an earlier occurred_at, delivered
// later, was refused. The record is correct, so parity reports no drift.
//
// Written before the fix; on the old code parity folded by occurred_at and reported false drift
// (and its repair, `crmsync rebuild`, would have rewritten the correct value):
//
//	parity_rule_test.go:71: field drift on a correct record: [{Kind:field_drift Entity:contact
//	ID:c-ed42ad4e8345debf2d624fd6 Field:last_name Stored:Smith Expected:Smyth ... Detail:stored by
//	typeform (typeform:pr-2-979238532), recomputed from typeform (typeform:pr-1-979238532) ...}]
func TestParityNoDriftForOwnerRuleDecidedInApplicationOrder(t *testing.T) {
	s := newStack(t, 5*time.Minute)
	token := fmt.Sprintf("%d", time.Now().UnixNano()%1e9)
	email := "rob-" + token + "@acme.example"
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	lead := func(key string, at time.Time, fields map[string]string) *canonical.Event {
		return &canonical.Event{Key: "typeform:" + key + "-" + token, Source: "typeform", Kind: canonical.KindLeadSubmitted,
			OccurredAt: at, ReceivedAt: at, GroupKey: "email:" + email, Subject: canonical.Person{Emails: []string{email}},
			Fields: map[string]map[string]string{"contact": fields}, MappingVersion: "typeform/1",
			PayloadHash: canonical.HashHex(key + token)}
	}
	edit := func(change string, at time.Time, fields map[string]string) *canonical.Event {
		return &canonical.Event{Key: "crm:" + change + "-" + token, Source: "crm", Kind: canonical.KindCRMChange,
			OccurredAt: at, ReceivedAt: at, GroupKey: "email:" + email, Subject: canonical.Person{Emails: []string{email}},
			Actor:  &canonical.Actor{Email: "alice@example.com", Role: "sales", Type: "user"},
			Fields: map[string]map[string]string{"contact": fields}, ExternalIDs: map[string]string{"change_id": change},
			MappingVersion: "crm/1", PayloadHash: canonical.HashHex(change + token)}
	}
	// The lead with the later occurred_at arrives first and fills the identity fields.
	s.apply(lead("pr-2", base.Add(20*time.Minute), map[string]string{"first_name": "Rob", "last_name": "Smith", "utm_source": "ads"}))
	// The owner edits first_name in the CRM.
	s.apply(edit("pr-new", base.Add(30*time.Minute), map[string]string{"first_name": "Robert"}))
	// An owner edit with an earlier occurred_at reaches crmsync late (the queue does not promise
	// occurred_at order); the worker decides it by the rule as it stands.
	s.apply(edit("pr-old", base.Add(25*time.Minute), map[string]string{"first_name": "Bob"}))
	// A vendor proposes first_name and last_name later: refused, the fields are set (and
	// first_name is the owner's).
	s.apply(lead("pr-3", base.Add(40*time.Minute), map[string]string{"first_name": "Bobby", "last_name": "Smithers"}))
	// A lead that happened before the first one, delivered last: refused too.
	s.apply(lead("pr-1", base.Add(10*time.Minute), map[string]string{"first_name": "R.", "last_name": "Smyth", "utm_source": "newsletter"}))

	stored := s.contact(email).Contact
	if stored.Fields["first_name"].Source != "crm" {
		t.Fatalf("first_name = %+v, want the owner's", stored.Fields["first_name"])
	}
	if stored.Fields["last_name"].Value != "Smith" {
		t.Fatalf("last_name = %+v, want Smith (filled by the first lead applied)", stored.Fields["last_name"])
	}
	// first_touch is order-independent: the earliest lead's utm_source stands.
	if stored.Fields["utm_source"].Value != "newsletter" {
		t.Fatalf("utm_source = %+v", stored.Fields["utm_source"])
	}

	rep := s.run(reconcile.Request{Job: reconcile.JobParity})
	if drift := findings(rep, check.KindFieldDrift); len(drift) > 0 {
		t.Fatalf("field drift on a correct record: %+v", drift)
	}
	if rep.Counts["contacts_checked"] < 1 || rep.Counts["contacts_drifted"] != 0 {
		t.Fatalf("counts = %v", rep.Counts)
	}

	// And the operator's rebuild of the contact changes nothing.
	rebuilt, err := s.worker.Rebuild(context.Background(), stored.ID)
	if err != nil {
		t.Fatal(err)
	}
	diff, err := s.worker.DiffRebuild(context.Background(), rebuilt)
	if err != nil || !diff.Empty() {
		t.Fatalf("rebuild diff = %+v, %v", diff, err)
	}
}
