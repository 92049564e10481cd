package decide

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/crmsync/crmsync/shared/policy"
)

// ownerPolicy has a group of every rule, owner groups owned by the system of record and one
// owned by a vendor, few sources with tied authorities and (in the generator) few distinct
// times, so ties on every tie-breaker are frequent.
const ownerPolicy = `version: prop-owner
sources:
  crm: { authority: 50, override_roles: [admin] }
  a:   { authority: 10 }
  b:   { authority: 10 }
  c:   { authority: 20 }
entities:
  contact:
    groups:
      oo: { fields: [o1, o2], owner: crm, rule: owner_only }
      ow: { fields: [w1, w2], owner: crm, rule: owner_wins_unless_blank }
      oc: { fields: [c1], owner: c, rule: owner_wins_unless_blank }
      ft: { fields: [f1], rule: first_touch }
      lt: { fields: [l1], rule: latest }
      pr: { fields: [p1], owner: crm, rule: precedence }
`

var ownerPropFields = []string{"o1", "o2", "w1", "w2", "c1", "f1", "l1", "p1"}

// genOwnerEvents draws a set of distinct events — CRM edits (source crm, with an actor and a
// role, as crm.change events carry) and vendor proposals — then re-delivers (replays) some.
func genOwnerEvents(t *rapid.T) []Proposal {
	n := rapid.IntRange(1, 12).Draw(t, "n")
	var evs []Proposal
	for i := range n {
		fields := map[string]string{}
		for _, f := range ownerPropFields {
			if rapid.Bool().Draw(t, "has_"+f) {
				fields[f] = rapid.SampledFrom([]string{"", "x", "y", "z"}).Draw(t, "val_"+f)
			}
		}
		e := Proposal{
			Source: rapid.SampledFrom([]string{"crm", "crm", "a", "b", "c"}).Draw(t, "source"),
			// Keys are unique per event but unrelated to time order.
			EventKey:   fmt.Sprintf("k%d-%02d", rapid.IntRange(0, 9).Draw(t, "keyprefix"), i),
			OccurredAt: at(rapid.IntRange(0, 3).Draw(t, "hour")),
			Fields:     fields,
		}
		if e.Source == "crm" {
			e.Actor = fmt.Sprintf("user%d@example.com", i)
			e.Role = rapid.SampledFrom([]string{"rep", "admin"}).Draw(t, "role")
		}
		evs = append(evs, e)
	}
	for _, i := range rapid.SliceOfN(rapid.IntRange(0, n-1), 0, 6).Draw(t, "replays") {
		evs = append(evs, evs[i])
	}
	return evs
}

// ownerModel computes the expected final record for one delivery order. Under an owner rule
// the field is the owner's latest non-blank write by (occurred_at, event key), whatever the
// order; with no owner write, owner_only leaves it blank and owner_wins_unless_blank keeps the
// first non-owner fill in delivery order (the one order-dependent case, by design). The other
// rules' fields are the best proposal under better (property_test.go).
func ownerModel(pol *policy.Policy, evs []Proposal) Record {
	rec := Record{}
	for _, f := range ownerPropFields {
		g, _ := pol.GroupOf("contact", f)
		var best, firstFill *Provenance
		for _, e := range evs {
			v := e.Fields[f]
			if v == "" {
				continue
			}
			c := Provenance{Value: v, Source: e.Source, EventKey: e.EventKey, OccurredAt: e.OccurredAt}
			switch {
			case !g.Rule.NeedsOwner():
				if best == nil || better(pol, g.Rule, c, *best) {
					best = &c
				}
			case e.Source == g.Owner:
				if best == nil || better(pol, policy.Latest, c, *best) { // one source: no authority ties
					best = &c
				}
			case firstFill == nil && g.Rule == policy.OwnerWinsUnlessBlank:
				firstFill = &c
			}
		}
		switch {
		case best != nil:
			rec[f] = *best
		case firstFill != nil:
			rec[f] = *firstFill
		}
	}
	return rec
}

// converging returns the record restricted to the fields whose value is order-independent for
// this event set: every field except an owner_wins_unless_blank field no owner write reached.
func converging(pol *policy.Policy, rec Record) Record {
	out := Record{}
	for f, p := range rec {
		g, _ := pol.GroupOf("contact", f)
		if g.Rule == policy.OwnerWinsUnlessBlank && p.Source != g.Owner {
			continue
		}
		out[f] = p
	}
	return out
}

// TestOwnerRulesOrderIndependence: any permutation of a set of CRM edits and vendor proposals,
// with replays, ends in the same record — values and provenance — for fields of every rule
// group (owner_wins_unless_blank fields once the owner has written them; before that the first
// non-owner fill stands, by design), and each delivery ends in the record the rules define.
//
// Written before the fix; on the old code it failed at once:
//
//	owner_property_test.go:135: [rapid] failed after 0 tests: permutation 0: record differs from the rules' model (-model +got):
//	- "w2": {Value: "x", Source: "crm", EventKey: "k0-00", OccurredAt: s"2026-11-01 13:00:00 +0000 UTC"},
//	+ "w2": {Value: "x", Source: "crm", EventKey: "k0-01", OccurredAt: s"2026-11-01 12:00:00 +0000 UTC"},
//
// (two CRM edits of w2, delivered oldest-first: the owner write processed first kept the
// provenance, and with different values the one processed last won, not the latest).
func TestOwnerRulesOrderIndependence(t *testing.T) {
	pol, err := policy.Parse("prop-owner.yaml", []byte(ownerPolicy))
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(t *rapid.T) {
		evs := genOwnerEvents(t)
		want := run(pol, evs)
		if diff := cmp.Diff(ownerModel(pol, evs), want); diff != "" {
			t.Fatalf("record differs from the rules' model (-model +got):\n%s", diff)
		}
		for i := range 4 {
			perm := rapid.Permutation(evs).Draw(t, fmt.Sprintf("perm%d", i))
			got := run(pol, perm)
			if diff := cmp.Diff(ownerModel(pol, perm), got); diff != "" {
				t.Fatalf("permutation %d: record differs from the rules' model (-model +got):\n%s", i, diff)
			}
			if diff := cmp.Diff(converging(pol, want), converging(pol, got)); diff != "" {
				t.Fatalf("permutation %d converged differently (-first +perm):\n%s", i, diff)
			}
		}
		// Replaying every event again (a forced re-run is re-decided) changes nothing.
		for _, e := range evs {
			if ds := Decide(pol, "contact", want, e); Changed(ds) {
				t.Fatalf("replay of %s changed the record: %+v", e.EventKey, ds)
			}
		}
	})
}
