package decide

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/crmsync/crmsync/shared/policy"
)

// propPolicy has few sources with tied authorities and few distinct times, so ties on every
// tie-breaker are frequent.
const propPolicy = `version: prop
sources:
  crm: { authority: 50, override_roles: [admin] }
  a:   { authority: 10 }
  b:   { authority: 10 }
  c:   { authority: 20 }
entities:
  contact:
    groups:
      ft: { fields: [f1, f2], rule: first_touch }
      lt: { fields: [l1, l2], rule: latest }
      pr: { fields: [p1, p2], owner: crm, rule: precedence }
`

var propFields = []string{"f1", "f2", "l1", "l2", "p1", "p2"}

// genEvents draws a set of distinct events (unique keys) and then re-delivers some of them.
func genEvents(t *rapid.T) []Proposal {
	n := rapid.IntRange(1, 10).Draw(t, "n")
	var evs []Proposal
	for i := range n {
		fields := map[string]string{}
		for _, f := range propFields {
			if rapid.Bool().Draw(t, "has_"+f) {
				fields[f] = rapid.SampledFrom([]string{"", "x", "y", "z"}).Draw(t, "val_"+f)
			}
		}
		evs = append(evs, Proposal{
			Source: rapid.SampledFrom([]string{"crm", "a", "b", "c"}).Draw(t, "source"),
			// Keys are unique per event but unrelated to time order.
			EventKey:   fmt.Sprintf("k%d-%02d", rapid.IntRange(0, 9).Draw(t, "keyprefix"), i),
			OccurredAt: at(rapid.IntRange(0, 3).Draw(t, "hour")),
			Fields:     fields,
		})
	}
	dups := rapid.SliceOfN(rapid.IntRange(0, n-1), 0, 5).Draw(t, "dups")
	for _, i := range dups {
		evs = append(evs, evs[i])
	}
	return evs
}

func run(pol *policy.Policy, evs []Proposal) Record {
	rec := Record{}
	for _, e := range evs {
		rec = Apply(rec, Decide(pol, "contact", rec, e))
	}
	return rec
}

// model computes the expected final record directly: per field, the best non-blank proposal
// under the field's rule, found by scanning all events once.
func model(pol *policy.Policy, evs []Proposal) Record {
	rec := Record{}
	for _, f := range propFields {
		g, _ := pol.GroupOf("contact", f)
		var best *Provenance
		for _, e := range evs {
			v := e.Fields[f]
			if v == "" {
				continue
			}
			c := Provenance{Value: v, Source: e.Source, EventKey: e.EventKey, OccurredAt: e.OccurredAt}
			if best == nil || better(pol, g.Rule, c, *best) {
				best = &c
			}
		}
		if best != nil {
			rec[f] = *best
		}
	}
	return rec
}

// better is an independent restatement of the rules' orders.
func better(pol *policy.Policy, r policy.Rule, c, b Provenance) bool {
	ca, ba := pol.Authority(c.Source), pol.Authority(b.Source)
	switch r {
	case policy.FirstTouch:
		if !c.OccurredAt.Equal(b.OccurredAt) {
			return c.OccurredAt.Before(b.OccurredAt)
		}
		return c.EventKey < b.EventKey
	case policy.Precedence:
		if ca != ba {
			return ca > ba
		}
		if !c.OccurredAt.Equal(b.OccurredAt) {
			return c.OccurredAt.After(b.OccurredAt)
		}
		return c.EventKey > b.EventKey
	default:
		if !c.OccurredAt.Equal(b.OccurredAt) {
			return c.OccurredAt.After(b.OccurredAt)
		}
		if ca != ba {
			return ca > ba
		}
		return c.EventKey > b.EventKey
	}
}

// TestOrderIndependence: first_touch, latest and precedence converge to the same record —
// values and provenance — for every delivery order of the same events, with duplicates, and that
// record is the one the rules define.
func TestOrderIndependence(t *testing.T) {
	pol, err := policy.Parse("prop.yaml", []byte(propPolicy))
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(t *rapid.T) {
		evs := genEvents(t)
		want := run(pol, evs)
		if diff := cmp.Diff(model(pol, evs), want); diff != "" {
			t.Fatalf("record differs from the rules' model (-model +got):\n%s", diff)
		}
		for i := range 3 {
			perm := rapid.Permutation(evs).Draw(t, fmt.Sprintf("perm%d", i))
			if diff := cmp.Diff(want, run(pol, perm)); diff != "" {
				t.Fatalf("permutation %d converged differently (-first +perm):\n%s", i, diff)
			}
		}
		// Re-delivering everything again changes nothing.
		again := want
		for _, e := range evs {
			ds := Decide(pol, "contact", again, e)
			if Changed(ds) {
				t.Fatalf("re-delivery of %s changed the record: %+v", e.EventKey, ds)
			}
		}
	})
}
