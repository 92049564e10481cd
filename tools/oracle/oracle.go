// Package oracle owns the reliability suite's independent model of crmsync: from the set of unique
// events a load generator sent (described as the facts it put in the vendor payloads, not as the
// connectors parse them) and the policy file alone, it computes what the CRM must hold once
// everything has been applied — each person's contact fields with their winning event, identities
// and account, and each timeline entry's status and history — and compares that with what the CRM
// table actually holds.
//
// It shares no code with the worker's decision path: it does not import shared/decide,
// shared/timeline, shared/worker (nor shared/store or shared/policy, which sit on that path); the
// rules are re-implemented here plainly from the design (section 5: owner_wins_unless_blank,
// first_touch, latest, precedence; section 6: one activity per interaction, status never
// regresses) and config/policy.yaml is read with its own small parser. Only the rules that are
// order-independent are checked for provenance: owner_wins_unless_blank keeps whichever non-owner
// value arrived first, so for those fields the oracle expects the value (the generator gives each
// person one value per such field) and not which event wrote it.
package oracle

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Event is one unique vendor event, as the generator knows it: what it sent, mapped to the CRM
// vocabulary the way the vendor's semantics and the design say it must be.
type Event struct {
	// Key is the canonical event key the connector derives (design section 3).
	Key string
	// Source is the connector.
	Source string
	// OccurredAt is the vendor's time of the event.
	OccurredAt time.Time
	// Person identifies the generated person the event is about.
	Person string
	// Emails and Phones are the person's identities the event carries, normalised.
	Emails []string
	// Phones are E.164.
	Phones []string
	// Contact holds the contact fields the event proposes.
	Contact map[string]string
	// AccountName is the account name the event proposes ("" none).
	AccountName string
	// Domain is the non-free-mail email domain an account is found or created by ("" none).
	Domain string
	// Activity is the timeline interaction the event reports (nil none).
	Activity *Activity
}

// Activity is an event's view of one interaction.
type Activity struct {
	// ID is the activity id (call:<sid>, meeting:<uri>, email:<message-id>, form:<id>, ...).
	ID string
	// Type is call, meeting, email, form or note.
	Type string
	// Status is the status the event reports ("" none).
	Status string
	// Cancel is set when the event cancels the interaction (a canceled meeting).
	Cancel bool
}

// Policy is what the oracle reads of config/policy.yaml: each source's authority and each
// entity field's group (owner and rule).
type Policy struct {
	Version   string
	Authority map[string]int
	// Groups maps entity -> field -> group.
	Groups map[string]map[string]Group
}

// Group is one field group of the policy.
type Group struct {
	Name, Owner, Rule string
}

// ParsePolicy reads a policy file.
func ParsePolicy(b []byte) (*Policy, error) {
	var doc struct {
		Version any `yaml:"version"`
		Sources map[string]struct {
			Authority int `yaml:"authority"`
		} `yaml:"sources"`
		Entities map[string]struct {
			Groups map[string]struct {
				Fields []string `yaml:"fields"`
				Owner  string   `yaml:"owner"`
				Rule   string   `yaml:"rule"`
			} `yaml:"groups"`
		} `yaml:"entities"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("oracle: policy: %w", err)
	}
	p := &Policy{Version: fmt.Sprint(doc.Version), Authority: map[string]int{}, Groups: map[string]map[string]Group{}}
	for name, s := range doc.Sources {
		p.Authority[name] = s.Authority
	}
	for ent, e := range doc.Entities {
		p.Groups[ent] = map[string]Group{}
		for gname, g := range e.Groups {
			for _, f := range g.Fields {
				p.Groups[ent][f] = Group{Name: gname, Owner: g.Owner, Rule: g.Rule}
			}
		}
	}
	return p, nil
}

// Field is an expected field value and, when the rule makes it order-independent, the event that
// must have written it.
type Field struct {
	Value string
	// Source and EventKey name the winning event; empty when only the value is expected.
	Source, EventKey string
}

// Timeline is an expected (or actual) timeline entry.
type Timeline struct {
	ID, Type, Status string
	Canceled         bool
	// Keys are the event keys merged into it, sorted (each exactly once).
	Keys []string
}

// Person is what the CRM must hold for one person.
type Person struct {
	ID string
	// HasContact says whether a contact must exist (some event proposed contact fields).
	HasContact bool
	// Identities are the person's identities across its events ("email:<addr>",
	// "phone:<e164>"), sorted: what its contact must have claimed, if it has one.
	Identities []string
	// Fields are the contact's expected fields.
	Fields map[string]Field
	// AccountDomain is the domain of the contact's account ("" none); AccountName its name.
	AccountDomain, AccountName string
	// Activities are the person's timeline entries by id: under the contact, or unassociated when
	// there is no contact.
	Activities map[string]*Timeline
}

// Expect computes every person's expected state from the unique events.
func Expect(p *Policy, events []Event) map[string]*Person {
	byPerson := map[string][]Event{}
	for _, e := range events {
		byPerson[e.Person] = append(byPerson[e.Person], e)
	}
	out := map[string]*Person{}
	for id, evs := range byPerson {
		out[id] = expectPerson(p, id, evs)
	}
	return out
}

func expectPerson(p *Policy, id string, evs []Event) *Person {
	x := &Person{ID: id, Fields: map[string]Field{}, Activities: map[string]*Timeline{}}
	idents := map[string]bool{}
	for _, e := range evs {
		if len(e.Contact) > 0 && len(e.Emails)+len(e.Phones) > 0 {
			x.HasContact = true
		}
		for _, m := range e.Emails {
			idents["email:"+m] = true
		}
		for _, ph := range e.Phones {
			idents["phone:"+ph] = true
		}
	}
	for k := range idents {
		x.Identities = append(x.Identities, k)
	}
	sort.Strings(x.Identities)
	if x.HasContact {
		x.Fields = expectFields(p, evs)
		for _, e := range evs {
			if e.AccountName != "" && e.Domain != "" {
				x.AccountDomain, x.AccountName = e.Domain, e.AccountName
			}
		}
	}
	// Timeline: one entry per interaction; status never regresses.
	type best struct {
		rank int
		at   time.Time
		key  string
	}
	bests := map[string]*best{}
	for _, e := range evs {
		a := e.Activity
		if a == nil || a.ID == "" {
			continue
		}
		t := x.Activities[a.ID]
		if t == nil {
			t = &Timeline{ID: a.ID, Type: a.Type}
			x.Activities[a.ID] = t
		}
		t.Keys = append(t.Keys, e.Key)
		if a.Cancel {
			t.Canceled = true
		}
		status := strings.ToLower(a.Status)
		if status == "" {
			continue
		}
		r := rank(a.Type, status)
		b := bests[a.ID]
		if b == nil || r > b.rank || (r == b.rank && later(e.OccurredAt, e.Key, b.at, b.key)) {
			bests[a.ID] = &best{rank: r, at: e.OccurredAt, key: e.Key}
			t.Status = status
		}
	}
	for _, t := range x.Activities {
		sort.Strings(t.Keys)
	}
	return x
}

// later reports whether (at, key) comes after (bat, bkey): later time, then higher key.
func later(at time.Time, key string, bat time.Time, bkey string) bool {
	if !at.Equal(bat) {
		return at.After(bat)
	}
	return key > bkey
}

// rank orders an activity's statuses (design section 6): calls queued < ringing < in-progress <
// a terminal status; meetings scheduled < canceled; emails sent/received < accepted <
// delivered/failed < opened < clicked < unsubscribed/complained; forms started < submitted.
func rank(typ, status string) int {
	switch typ {
	case "call":
		switch status {
		case "queued", "initiated":
			return 1
		case "ringing":
			return 2
		case "in-progress", "answered":
			return 3
		case "completed", "busy", "failed", "no-answer", "canceled":
			return 4
		}
	case "meeting":
		switch status {
		case "scheduled", "active":
			return 1
		case "rescheduled":
			return 2
		case "canceled", "cancelled":
			return 3
		}
	case "email":
		switch status {
		case "sent", "received":
			return 1
		case "accepted":
			return 2
		case "delivered", "failed", "rejected":
			return 3
		case "opened":
			return 4
		case "clicked":
			return 5
		case "unsubscribed", "complained":
			return 6
		}
	case "form":
		switch status {
		case "started":
			return 1
		case "submitted":
			return 2
		}
	}
	return 0
}

// proposal is one event's value for one field.
type proposal struct {
	value, source, key string
	at                 time.Time
	authority          int
}

// expectFields applies each field group's rule to every proposal of the person's events.
func expectFields(p *Policy, evs []Event) map[string]Field {
	props := map[string][]proposal{}
	for _, e := range evs {
		if len(e.Emails)+len(e.Phones) == 0 {
			continue
		}
		for f, v := range e.Contact {
			if v == "" {
				continue // a blank proposal never writes
			}
			props[f] = append(props[f], proposal{value: v, source: e.Source, key: e.Key, at: e.OccurredAt, authority: p.Authority[e.Source]})
		}
	}
	out := map[string]Field{}
	for f, ps := range props {
		g, ok := p.Groups["contact"][f]
		if !ok {
			continue // not in the policy: rejected, never stored
		}
		if _, known := p.Authority[ps[0].source]; !known {
			continue
		}
		var w proposal
		switch g.Rule {
		case "first_touch": // earliest wins; a tie goes to the lower key
			w = pick(ps, func(a, b proposal) bool {
				if !a.at.Equal(b.at) {
					return a.at.Before(b.at)
				}
				return a.key < b.key
			})
		case "latest": // latest wins; ties by authority, then the higher key
			w = pick(ps, func(a, b proposal) bool {
				if !a.at.Equal(b.at) {
					return a.at.After(b.at)
				}
				if a.authority != b.authority {
					return a.authority > b.authority
				}
				return a.key > b.key
			})
		case "precedence": // higher authority wins; equal authority falls back to latest, then key
			w = pick(ps, func(a, b proposal) bool {
				if a.authority != b.authority {
					return a.authority > b.authority
				}
				if !a.at.Equal(b.at) {
					return a.at.After(b.at)
				}
				return a.key > b.key
			})
		case "owner_wins_unless_blank", "owner_only":
			owner := false
			for _, q := range ps {
				owner = owner || q.source == g.Owner
			}
			if owner || g.Rule == "owner_only" {
				continue // not generated by the load: no owner writes, owner_only refuses others
			}
			// Non-owners fill a blank field: the first to arrive wins, so only the value is
			// determined, and only when every proposal agrees.
			same := true
			for _, q := range ps {
				same = same && q.value == ps[0].value
			}
			if same {
				out[f] = Field{Value: ps[0].value}
			} else {
				out[f] = Field{Value: "\x00order-dependent"}
			}
			continue
		default:
			continue
		}
		out[f] = Field{Value: w.value, Source: w.source, EventKey: w.key}
	}
	return out
}

func pick(ps []proposal, better func(a, b proposal) bool) proposal {
	w := ps[0]
	for _, q := range ps[1:] {
		if better(q, w) {
			w = q
		}
	}
	return w
}
