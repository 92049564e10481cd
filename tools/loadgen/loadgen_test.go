package loadgen

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/tools/samples"
)

var planNow = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func plan(seed uint64) *Plan {
	return NewPlan(Options{Events: 2000, People: 200, DupRate: 0.3, ReorderRate: 0.2, Seed: seed, Now: planNow})
}

// A plan has exactly the events asked for, unique keys, every connector, the duplicates and
// reordering asked for, and each duplicate after its original.
func TestPlanShape(t *testing.T) {
	p := plan(1)
	if len(p.Unique) != 2000 {
		t.Fatalf("%d unique events, want 2000", len(p.Unique))
	}
	keys := map[string]bool{}
	for _, d := range p.Unique {
		if keys[d.Event.Key] {
			t.Fatalf("duplicate key %s", d.Event.Key)
		}
		keys[d.Event.Key] = true
		if d.Event.OccurredAt.After(planNow) || d.Event.OccurredAt.Before(planNow.Add(-60*24*time.Hour)) {
			t.Errorf("%s occurred at %s, outside the window", d.Event.Key, d.Event.OccurredAt)
		}
	}
	for _, name := range registry.Names() {
		if p.BySource[name] == 0 {
			t.Errorf("no %s events", name)
		}
	}
	if p.Duplicates != 600 || len(p.Schedule) != 2600 {
		t.Errorf("duplicates %d, schedule %d: want 600 and 2600", p.Duplicates, len(p.Schedule))
	}
	if p.Late < 150 || p.Late > 250 {
		t.Errorf("%d late duplicates, want about a third of 600", p.Late)
	}
	if p.OutOfOrder < 300 || p.OutOfOrder > 500 {
		t.Errorf("%d deliveries out of order, want about 400", p.OutOfOrder)
	}
	sent := map[string]bool{}
	for _, s := range p.Schedule {
		if s.Dup && !sent[s.Delivery.Event.Key] {
			t.Fatalf("duplicate of %s scheduled before its original", s.Delivery.Event.Key)
		}
		sent[s.Delivery.Event.Key] = true
	}
}

// Every event of a person shares one identity, so the person can only ever be one contact.
func TestPersonEventsShareAnIdentity(t *testing.T) {
	byPerson := map[string][]map[string]bool{}
	for _, d := range plan(2).Unique {
		ids := map[string]bool{}
		for _, e := range d.Event.Emails {
			ids["email:"+e] = true
		}
		for _, ph := range d.Event.Phones {
			ids["phone:"+ph] = true
		}
		if len(ids) == 0 {
			t.Fatalf("%s carries no identity", d.Event.Key)
		}
		byPerson[d.Event.Person] = append(byPerson[d.Event.Person], ids)
	}
	for person, sets := range byPerson {
		for id := range sets[0] {
			shared := true
			for _, s := range sets[1:] {
				shared = shared && s[id]
			}
			if shared {
				goto next
			}
		}
		t.Errorf("person %s: no identity is on all of their %d events", person, len(sets))
	next:
	}
}

// The same seed gives the same plan.
func TestPlanDeterministic(t *testing.T) {
	a, b := plan(3), plan(3)
	if !reflect.DeepEqual(a.Events(), b.Events()) || len(a.Fixtures) != len(b.Fixtures) {
		t.Fatal("two plans from one seed differ")
	}
	if reflect.DeepEqual(a.Events(), plan(4).Events()) {
		t.Fatal("plans from two seeds are identical")
	}
}

// Every generated delivery verifies and parses with its connector, to the key the generator
// announced (hydrated connectors aside, to their thin key).
func TestDeliveriesParseToTheirKeys(t *testing.T) {
	secs, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	for _, d := range plan(5).Unique[:400] {
		req, err := Sign(d, "http://127.0.0.1:3000", secs[d.Connector], time.Now(), rnd)
		if err != nil {
			t.Fatalf("sign %s: %v", d.Event.Key, err)
		}
		c, _ := registry.New(d.Connector)
		if _, err := c.Verify(req, secs[d.Connector], time.Now()); err != nil {
			t.Fatalf("%s does not verify: %v", d.Event.Key, err)
		}
		parsed, err := c.Parse(req, secs[d.Connector])
		if err != nil || len(parsed.Events) != 1 {
			t.Fatalf("%s does not parse to one event: %v", d.Event.Key, err)
		}
		if got := parsed.Events[0].Key; got != d.Event.Key {
			t.Errorf("%s parses to key %s", d.Event.Key, got)
		}
	}
}

// Every thin delivery names the vendor object its event is hydrated from, among the plan's
// fixtures (the reliability run poisons some of them); a whole delivery names none.
func TestThinDeliveriesNameTheirFixture(t *testing.T) {
	p := plan(2)
	fixtures := map[string]bool{}
	for _, f := range p.Fixtures {
		fixtures[f.Path] = true
	}
	for _, d := range p.Unique {
		thin := d.Connector == "msgraph" || d.Connector == "meta-leads"
		switch {
		case thin && !fixtures[d.Fixture]:
			t.Errorf("%s: fixture %q is not among the plan's", d.Event.Key, d.Fixture)
		case !thin && d.Fixture != "":
			t.Errorf("%s carries its event whole, yet names fixture %q", d.Event.Key, d.Fixture)
		}
	}
}
