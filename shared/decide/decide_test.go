package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/policy"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func at(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }

func pv(value, source, key string, h int) Provenance {
	return Provenance{Value: value, Source: source, EventKey: key, OccurredAt: at(h)}
}

func locked(p Provenance, by string) Provenance { p.LockedBy = by; return p }

func realPolicy(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// prop builds a one-field proposal.
func prop(source, key string, h int, field, value string) Proposal {
	return Proposal{Source: source, EventKey: key, OccurredAt: at(h), Fields: map[string]string{field: value}}
}

func withRole(p Proposal, actor, role string) Proposal { p.Actor, p.Role = actor, role; return p }
func withLock(p Proposal, f ...string) Proposal        { p.Lock = f; return p }
func withUnlock(p Proposal, f ...string) Proposal      { p.Unlock = f; return p }

func TestDecideOneField(t *testing.T) {
	pol := realPolicy(t)
	emailCRM := pv("a@x.com", "crm", "c1", 0)
	lsTF := pv("typeform", "typeform", "tf5", 5)
	callTw := pv("busy", "twilio", "tw5", 5)
	coCal := pv("Acme", "calendly", "cal5", 5)

	tests := []struct {
		name    string
		entity  string
		field   string
		cur     Provenance // zero = absent
		prop    Proposal
		outcome Outcome
		rule    string
		reason  string     // substring
		after   Provenance // checked for every outcome (== cur unless applied)
	}{
		// owner_only (deal.stage, owner crm)
		{"owner_only owner writes", "deal", "stage", pv("new", "crm", "c1", 0), prop("crm", "c2", 1, "stage", "won"),
			Applied, "owner_only", "owner crm writes", pv("won", "crm", "c2", 1)},
		{"owner_only non-owner rejected", "deal", "stage", pv("new", "crm", "c1", 0), prop("typeform", "t1", 9, "stage", "won"),
			Rejected, "owner_only", "owner_only: crm owns pipeline", pv("new", "crm", "c1", 0)},
		{"owner_only non-owner into blank rejected", "deal", "stage", Provenance{}, prop("reconcile", "r1", 9, "stage", "won"),
			Rejected, "owner_only", "owner_only: crm owns pipeline", Provenance{}},
		{"owner_only non-owner same value noop", "deal", "stage", pv("new", "crm", "c1", 0), prop("twilio", "t1", 9, "stage", "new"),
			Noop, "owner_only", "same value", pv("new", "crm", "c1", 0)},

		// owner_wins_unless_blank (contact.email, owner crm)
		{"owbu non-owner fills blank", "contact", "email", Provenance{}, prop("typeform", "t1", 1, "email", "b@x.com"),
			Applied, "owner_wins_unless_blank", "fills blank", pv("b@x.com", "typeform", "t1", 1)},
		{"owbu non-owner over set rejected", "contact", "email", emailCRM, prop("reconcile", "r1", 1, "email", "b@x.com"),
			Rejected, "owner_wins_unless_blank", "crm owns identity and the field is set", emailCRM},
		{"owbu owner overwrites other source", "contact", "email", pv("b@x.com", "typeform", "t1", 1), prop("crm", "c2", -5, "email", "a@x.com"),
			Applied, "owner_wins_unless_blank", "owner crm writes", pv("a@x.com", "crm", "c2", -5)},
		// An older owner edit with the current value changes nothing; a later one moves the
		// provenance (owner_order_test.go).
		{"owbu older owner same value noop", "contact", "email", emailCRM, prop("crm", "c9", -1, "email", "a@x.com"),
			Noop, "owner_wins_unless_blank", "same value", emailCRM},

		// first_touch (contact.lead_source)
		{"first_touch fills blank", "contact", "lead_source", Provenance{}, prop("meta-leads", "m1", 3, "lead_source", "meta"),
			Applied, "first_touch", "field was blank", pv("meta", "meta-leads", "m1", 3)},
		{"first_touch later event rejected", "contact", "lead_source", lsTF, prop("crm", "c1", 6, "lead_source", "crm"),
			Rejected, "first_touch", "current value is from an earlier event tf5", lsTF},
		{"first_touch late-arriving earlier event replaces", "contact", "lead_source", lsTF, prop("meta-leads", "m1", 4, "lead_source", "meta"),
			Applied, "first_touch", "earlier event", pv("meta", "meta-leads", "m1", 4)},
		{"first_touch exact tie lower key wins", "contact", "lead_source", lsTF, prop("meta-leads", "a0", 5, "lead_source", "meta"),
			Applied, "first_touch", "lower-key", pv("meta", "meta-leads", "a0", 5)},
		{"first_touch exact tie higher key loses", "contact", "lead_source", lsTF, prop("meta-leads", "zz", 5, "lead_source", "meta"),
			Rejected, "first_touch", "lower-key event tf5", lsTF},
		{"first_touch earlier same value moves provenance", "contact", "lead_source", lsTF, prop("generic", "g1", 1, "lead_source", "typeform"),
			Applied, "first_touch", "same value; provenance moves to earlier event g1", pv("typeform", "generic", "g1", 1)},
		{"first_touch later same value noop", "contact", "lead_source", lsTF, prop("generic", "g1", 9, "lead_source", "typeform"),
			Noop, "first_touch", "same value", lsTF},
		{"first_touch duplicate delivery noop", "contact", "lead_source", lsTF, prop("typeform", "tf5", 5, "lead_source", "typeform"),
			Noop, "first_touch", "same value", lsTF},

		// latest (contact.last_call_status)
		{"latest later wins", "contact", "last_call_status", callTw, prop("mailgun", "mg", 6, "last_call_status", "done"),
			Applied, "latest", "later event", pv("done", "mailgun", "mg", 6)},
		{"latest earlier rejected even with authority", "contact", "last_call_status", callTw, prop("crm", "c1", 4, "last_call_status", "done"),
			Rejected, "latest", "from a later event tw5", callTw},
		{"latest tie higher authority wins", "contact", "last_call_status", pv("busy", "calendly", "aaa", 5), prop("twilio", "a", 5, "last_call_status", "done"),
			Applied, "latest", "tied, higher-authority", pv("done", "twilio", "a", 5)},
		{"latest tie lower authority loses", "contact", "last_call_status", callTw, prop("calendly", "zzz", 5, "last_call_status", "done"),
			Rejected, "latest", "tied, higher-authority event tw5", callTw},
		{"latest tie equal authority higher key wins", "contact", "last_call_status", pv("busy", "calendly", "k1", 5), prop("msgraph", "k2", 5, "last_call_status", "done"),
			Applied, "latest", "tied, higher-key", pv("done", "msgraph", "k2", 5)},
		{"latest tie equal authority lower key loses", "contact", "last_call_status", pv("busy", "calendly", "k2", 5), prop("msgraph", "k1", 5, "last_call_status", "done"),
			Rejected, "latest", "tied, higher-key", pv("busy", "calendly", "k2", 5)},

		// precedence (contact.company)
		{"precedence higher authority wins though older", "contact", "company", coCal, prop("reconcile", "r1", -9, "company", "Acme Inc"),
			Applied, "precedence", "higher-authority event", pv("Acme Inc", "reconcile", "r1", -9)},
		{"precedence lower authority loses though newer", "contact", "company", coCal, prop("typeform", "t1", 9, "company", "ACME"),
			Rejected, "precedence", "from a higher-authority event cal5", coCal},
		{"precedence equal authority later wins", "contact", "company", coCal, prop("msgraph", "g1", 6, "company", "ACME"),
			Applied, "precedence", "later event", pv("ACME", "msgraph", "g1", 6)},
		{"precedence equal authority earlier loses", "contact", "company", coCal, prop("msgraph", "g1", 4, "company", "ACME"),
			Rejected, "precedence", "from a later event", coCal},
		{"precedence equal authority tie higher key wins", "contact", "company", coCal, prop("msgraph", "cal6", 5, "company", "ACME"),
			Applied, "precedence", "tied, higher-key", pv("ACME", "msgraph", "cal6", 5)},

		// blanks never clear
		{"blank from owner is noop", "contact", "email", emailCRM, prop("crm", "c2", 9, "email", ""),
			Noop, "owner_wins_unless_blank", "blank proposal", emailCRM},
		{"blank under first_touch is noop", "contact", "lead_source", lsTF, prop("meta-leads", "m1", 0, "lead_source", ""),
			Noop, "first_touch", "blank proposal", lsTF},
		{"blank into blank is noop", "deal", "stage", Provenance{}, prop("crm", "c1", 0, "stage", ""),
			Noop, "owner_only", "blank proposal", Provenance{}},

		// unknown field, entity, source
		{"unknown field", "contact", "shoe_size", Provenance{}, prop("crm", "c1", 0, "shoe_size", "42"),
			Rejected, RuleUnknownField, `field "shoe_size" is not in any group of contact`, Provenance{}},
		{"field of another entity", "contact", "stage", Provenance{}, prop("crm", "c1", 0, "stage", "won"),
			Rejected, RuleUnknownField, "not in any group of contact", Provenance{}},
		{"unknown entity", "lead", "email", Provenance{}, prop("crm", "c1", 0, "email", "a@x.com"),
			Rejected, RuleUnknownField, `entity "lead" is not in policy`, Provenance{}},
		{"unknown source", "contact", "email", Provenance{}, prop("hubspot", "h1", 0, "email", "a@x.com"),
			Rejected, RuleUnknownSource, `source "hubspot" is not in policy 2026-11-01+`, Provenance{}},

		// locks
		{"admin locks with value", "contact", "lead_source", lsTF, withLock(withRole(prop("crm", "c1", 9, "lead_source", "referral"), "alice", "admin"), "lead_source"),
			Applied, RuleLock, "locked by alice with value written by override", locked(pv("referral", "crm", "c1", 9), "alice")},
		{"revops locks without value", "contact", "lead_source", lsTF, withLock(withRole(Proposal{Source: "crm", EventKey: "c1", OccurredAt: at(9)}, "bob", "revops"), "lead_source"),
			Applied, RuleLock, "locked by bob", locked(lsTF, "bob")},
		{"lock of blank field", "contact", "company", Provenance{}, withLock(withRole(Proposal{Source: "crm", EventKey: "c1"}, "bob", "revops"), "company"),
			Applied, RuleLock, "locked by bob", Provenance{LockedBy: "bob"}},
		{"lock without actor names role", "contact", "company", coCal, withLock(withRole(Proposal{Source: "crm", EventKey: "c1"}, "", "admin"), "company"),
			Applied, RuleLock, "locked by role:admin", locked(coCal, "role:admin")},
		{"already locked noop", "contact", "company", locked(coCal, "bob"), withLock(withRole(Proposal{Source: "crm", EventKey: "c1"}, "bob", "revops"), "company"),
			Noop, RuleLock, "already locked by bob", locked(coCal, "bob")},
		{"lock by non-override role rejected", "contact", "lead_source", lsTF, withLock(withRole(prop("crm", "c1", 9, "lead_source", "referral"), "carol", "rep"), "lead_source"),
			Rejected, RuleLock, "lock requires role in override_roles", lsTF},
		{"lock by non-crm source rejected", "contact", "lead_source", lsTF, withLock(withRole(prop("typeform", "t1", 1, "lead_source", "x"), "eve", "admin"), "lead_source"),
			Rejected, RuleLock, "lock requires role in override_roles", lsTF},
		{"unlock by non-override role rejected", "contact", "lead_source", locked(lsTF, "alice"), withUnlock(withRole(Proposal{Source: "crm", EventKey: "c1"}, "carol", "rep"), "lead_source"),
			Rejected, RuleLock, "unlock requires role in override_roles", locked(lsTF, "alice")},
		{"lock and unlock together rejected", "contact", "company", coCal, withUnlock(withLock(withRole(Proposal{Source: "crm"}, "bob", "admin"), "company"), "company"),
			Rejected, RuleLock, "lock and unlock", coCal},
		{"locked field refuses automation", "contact", "lead_source", locked(lsTF, "alice"), prop("meta-leads", "m1", 0, "lead_source", "meta"),
			BlockedByLock, RuleLock, "locked by alice", locked(lsTF, "alice")},
		{"locked field refuses owner automation", "contact", "email", locked(emailCRM, "alice"), prop("crm", "c2", 9, "email", "new@x.com"),
			BlockedByLock, RuleLock, `locked by alice; role "" is not in crm override_roles`, locked(emailCRM, "alice")},
		{"locked field refuses crm non-override role", "contact", "email", locked(emailCRM, "alice"), withRole(prop("crm", "c2", 9, "email", "new@x.com"), "carol", "rep"),
			BlockedByLock, RuleLock, `role "rep" is not in crm override_roles`, locked(emailCRM, "alice")},
		{"locked field blank proposal noop", "contact", "email", locked(emailCRM, "alice"), prop("typeform", "t1", 9, "email", ""),
			Noop, "owner_wins_unless_blank", "blank proposal", locked(emailCRM, "alice")},
		{"override role writes locked field past its rule", "contact", "lead_source", locked(lsTF, "alice"), withRole(prop("crm", "c2", 9, "lead_source", "event"), "bob", "revops"),
			Applied, RuleLock, "override by bob (revops) of field locked by alice", locked(pv("event", "crm", "c2", 9), "alice")},
		{"override same value on locked field noop", "contact", "lead_source", locked(lsTF, "alice"), withRole(prop("crm", "c2", 9, "lead_source", "typeform"), "bob", "revops"),
			Noop, RuleLock, "same value", locked(lsTF, "alice")},
		{"unlock", "contact", "lead_source", locked(lsTF, "alice"), withUnlock(withRole(Proposal{Source: "crm", EventKey: "c3"}, "bob", "admin"), "lead_source"),
			Applied, RuleLock, "unlocked by bob (was locked by alice)", lsTF},
		{"unlock of unlocked field noop", "contact", "lead_source", lsTF, withUnlock(withRole(Proposal{Source: "crm", EventKey: "c3"}, "bob", "admin"), "lead_source"),
			Noop, RuleLock, "not locked", lsTF},
		{"unlock with losing value: unlock applies, value judged by rule", "contact", "lead_source", locked(lsTF, "alice"), withUnlock(withRole(prop("crm", "c3", 9, "lead_source", "crm"), "bob", "admin"), "lead_source"),
			Applied, "first_touch", "unlocked by bob (was locked by alice); rejected: first_touch: current value is from an earlier event", lsTF},
		{"unlock with winning value", "contact", "lead_source", locked(lsTF, "alice"), withUnlock(withRole(prop("crm", "c3", 1, "lead_source", "crm"), "bob", "admin"), "lead_source"),
			Applied, "first_touch", "unlocked by bob (was locked by alice); first_touch: earlier event", pv("crm", "crm", "c3", 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := Record{}
			if tt.cur != (Provenance{}) {
				rec[tt.field] = tt.cur
			}
			before := Apply(rec, nil)
			ds := Decide(pol, tt.entity, rec, tt.prop)
			if len(ds) != 1 {
				t.Fatalf("got %d decisions, want 1: %+v", len(ds), ds)
			}
			d := ds[0]
			if d.Field != tt.field || d.Outcome != tt.outcome || d.Rule != tt.rule || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("got %s %s %s %q\nwant %s %s %s %q", d.Field, d.Outcome, d.Rule, d.Reason, tt.field, tt.outcome, tt.rule, tt.reason)
			}
			if diff := cmp.Diff(tt.cur, d.Before); diff != "" {
				t.Errorf("Before (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.after, d.After); diff != "" {
				t.Errorf("After (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, rec); diff != "" {
				t.Errorf("Decide modified the record:\n%s", diff)
			}
			if got := Apply(rec, ds)[tt.field]; !got.Equal(tt.after) {
				t.Errorf("Apply: field = %+v, want %+v", got, tt.after)
			}
		})
	}
}

func TestDecideManyFields(t *testing.T) {
	pol := realPolicy(t)
	rec := Record{
		"email":       pv("a@x.com", "crm", "c0", 0),
		"lead_source": locked(pv("web", "typeform", "t0", 0), "alice"),
	}
	ds := Decide(pol, "contact", rec, Proposal{
		Source: "typeform", EventKey: "t1", OccurredAt: at(1),
		Fields: map[string]string{
			"utm_source":  "google",
			"email":       "other@x.com",
			"first_name":  "Ada",
			"lead_source": "ads",
			"nickname":    "ada",
			"phone":       "",
		},
	})
	type short struct {
		Field   string
		Outcome Outcome
		Rule    string
	}
	var got []short
	for _, d := range ds {
		got = append(got, short{d.Field, d.Outcome, d.Rule})
	}
	want := []short{
		{"email", Rejected, "owner_wins_unless_blank"},
		{"first_name", Applied, "owner_wins_unless_blank"},
		{"lead_source", BlockedByLock, RuleLock},
		{"nickname", Rejected, RuleUnknownField},
		{"phone", Noop, "owner_wins_unless_blank"},
		{"utm_source", Applied, "first_touch"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
	if !Changed(ds) {
		t.Error("Changed = false")
	}
	next := Apply(rec, ds)
	if next["first_name"].Value != "Ada" || next["utm_source"].Value != "google" || next["email"].Value != "a@x.com" || len(next) != 4 {
		t.Errorf("Apply = %+v", next)
	}

	// Lock-only fields appear in the decisions too, sorted and without duplicates.
	ds = Decide(pol, "contact", rec, Proposal{
		Source: "crm", EventKey: "c1", OccurredAt: at(2), Actor: "bob", Role: "admin",
		Fields: map[string]string{"company": "Acme"},
		Lock:   []string{"email", "company", "email"},
		Unlock: []string{"lead_source"},
	})
	got = nil
	for _, d := range ds {
		got = append(got, short{d.Field, d.Outcome, d.Rule})
	}
	want = []short{
		{"company", Applied, RuleLock},
		{"email", Applied, RuleLock},
		{"lead_source", Applied, RuleLock},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("lock decisions (-want +got):\n%s", diff)
	}
	next = Apply(rec, ds)
	if next["email"].LockedBy != "bob" || next["company"].LockedBy != "bob" || next["lead_source"].LockedBy != "" || next["company"].Value != "Acme" {
		t.Errorf("Apply = %+v", next)
	}

	if ds := Decide(pol, "contact", rec, Proposal{Source: "crm"}); len(ds) != 0 || Changed(ds) {
		t.Errorf("empty proposal: %+v", ds)
	}
}
