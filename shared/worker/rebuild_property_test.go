package worker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/crmsync/crmsync/shared/canonical"
)

// Exact rebuild over random histories: random sequences of leads, call status callbacks,
// emails parked before their contact exists (and adopted when it appears), CRM edits with locks
// and unlocks, forced replays (Worker.Replay) and the consistency job's re-associations
// (Worker.Reassociate), applied one at a time through the real worker on moto, with occurred_at
// times drawn independently of delivery order. Afterwards `rebuild --dry-run` of every contact
// shows an empty diff: the record's fields and locks, and every activity under the contact.
//
// Written before the fix; on the old code it failed on the first history, e.g. an unlock that
// changed nothing applied before a lock with an earlier occurred_at, which the old rebuild folded
// in occurred_at order (lock, then unlock):
//
//	rebuild_property_test.go:179: contact c-0486005e95d88049d47dfc02: rebuild diff = fields
//	[{Field:company Stored:{Value: Source: EventKey: OccurredAt: LockedBy:admin@example.com}
//	Rebuilt:{Value: Source: EventKey: OccurredAt: LockedBy:}}] activities []

// histPeople are the people of one history: person i has email hist-i@<token>.example and phone
// +1415556<token digits><i>.
const histPeople = 2

// histWorld names one check's people and keys.
type histWorld struct {
	token string
	n     int
}

func (h histWorld) email(p int) string { return fmt.Sprintf("hist-%d@%s.example", p, h.token) }
func (h histWorld) phone(p int) string { return fmt.Sprintf("+1415%03d%04d", h.n%1000, p) }
func (h histWorld) key(kind string, i int) string {
	return fmt.Sprintf("%s:%s-%d", kind, h.token, i)
}

var histNames = []string{"Ada", "Bob", "Cy", "Di"}

// drawFields draws proposed contact fields from a vendor: identity (owner_wins_unless_blank),
// attribution (first_touch), firmographic (precedence).
func drawFields(t *rapid.T, label string) map[string]string {
	fields := map[string]string{}
	for _, f := range []string{"first_name", "last_name", "utm_source", "company"} {
		if rapid.Bool().Draw(t, label+"-has-"+f) {
			fields[f] = rapid.SampledFrom(histNames).Draw(t, label+"-"+f)
		}
	}
	if len(fields) == 0 {
		fields["first_name"] = rapid.SampledFrom(histNames).Draw(t, label+"-first_name")
	}
	return fields
}

// historyEvent draws and builds the i-th event of a history.
func historyEvent(t *rapid.T, h histWorld, i int) *canonical.Event {
	label := fmt.Sprintf("e%d", i)
	person := rapid.IntRange(0, histPeople-1).Draw(t, label+"-person")
	at := t0.Add(time.Duration(rapid.IntRange(0, 30).Draw(t, label+"-minute")) * time.Minute)
	email, phone := h.email(person), h.phone(person)
	key := h.key("k", i)
	hash := canonical.HashHex(key + h.token)
	switch kind := rapid.IntRange(0, 3).Draw(t, label+"-kind"); kind {
	case 0: // a lead, sometimes carrying the phone too
		ev := lead("typeform:"+key, email, at, drawFields(t, label))
		if rapid.Bool().Draw(t, label+"-with-phone") {
			ev.Subject.Phones = []string{phone}
		}
		ev.PayloadHash = hash
		return ev
	case 1: // a call status callback of one of a few calls
		status := rapid.SampledFrom(callStatuses).Draw(t, label+"-status")
		call := fmt.Sprintf("CA%s%d", h.token, rapid.IntRange(0, 1).Draw(t, label+"-call"))
		fields := map[string]string{"last_activity_at": at.Format(time.RFC3339), "last_call_status": status}
		return &canonical.Event{
			Key: "twilio:" + key, Source: "twilio", Kind: canonical.KindCallStatus, OccurredAt: at, ReceivedAt: at,
			GroupKey: "phone:" + phone, Subject: canonical.Person{Phones: []string{phone}},
			Fields: map[string]map[string]string{"contact": fields},
			Activity: &canonical.Activity{ID: "call:" + call, Type: "call", Status: status, Direction: "inbound",
				DurationSec:  rapid.IntRange(0, 3).Draw(t, label+"-dur") * 10,
				Participants: []canonical.Participant{{Role: "caller", Phone: phone}}},
			MappingVersion: "twilio/1", PayloadHash: hash,
		}
	case 2: // a Mailgun event of one of a few emails (no contact fields: parked until the contact exists)
		status := rapid.SampledFrom([]string{"accepted", "delivered", "opened", "clicked", "failed"}).Draw(t, label+"-status")
		msg := fmt.Sprintf("email:<m%d-%s@us.example>", rapid.IntRange(0, 1).Draw(t, label+"-msg"), h.token)
		return &canonical.Event{
			Key: "mailgun:" + key, Source: "mailgun", Kind: canonical.KindEmailEvent, OccurredAt: at, ReceivedAt: at,
			GroupKey: "email:" + email, Subject: canonical.Person{Emails: []string{email}},
			Activity:    &canonical.Activity{ID: msg, Type: "email", Status: status, Attrs: map[string]string{"event": status}},
			PayloadHash: hash, MappingVersion: "mailgun/1",
		}
	default: // a CRM edit by an override role, sometimes locking or unlocking a field
		fields := map[string]string{}
		if rapid.Bool().Draw(t, label+"-writes") {
			fields[rapid.SampledFrom([]string{"first_name", "last_name", "company"}).Draw(t, label+"-field")] =
				rapid.SampledFrom(histNames).Draw(t, label+"-value")
		}
		ev := crmEdit(key, email, at, "admin@example.com", "revops", fields)
		ev.PayloadHash = hash
		if op := rapid.IntRange(0, 2).Draw(t, label+"-lock"); op > 0 || len(fields) == 0 {
			verb := "lock"
			if op == 2 {
				verb = "unlock"
			}
			ev.Fields["contact"+LockSuffix] = map[string]string{rapid.SampledFrom([]string{"first_name", "company"}).Draw(t, label+"-lockfield"): verb}
		}
		return ev
	}
}

func TestRebuildExactOverRandomHistories(t *testing.T) {
	t.Parallel() // its own tables; runs beside the activity-bound test
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c)
	rapidChecks(t, 15)
	runs := 0
	ctx := context.Background()
	rapid.Check(t, func(rt *rapid.T) {
		runs++
		h := histWorld{token: fmt.Sprintf("h%d%d", time.Now().UnixNano()%1e6, runs), n: runs*7 + int(time.Now().UnixNano()%97)}
		var applied []string
		activities := map[string]bool{}
		steps := rapid.IntRange(3, 18).Draw(rt, "steps")
		for i := range steps {
			c.Advance(time.Second)
			switch op := rapid.IntRange(0, 9).Draw(rt, fmt.Sprintf("op%d", i)); {
			case op == 0 && len(applied) > 0: // a forced re-run of an earlier event
				key := rapid.SampledFrom(applied).Draw(rt, fmt.Sprintf("replay%d", i))
				if _, err := w.Replay(ctx, key, "ops@example.com", "property test"); err != nil {
					rt.Fatalf("replay %s: %v", key, err)
				}
			case op == 1 && len(activities) > 0: // the consistency job re-associates what waits
				for id := range activities {
					if _, err := w.Reassociate(ctx, id, h.key("reassoc", i), "property test"); err != nil {
						rt.Fatalf("reassociate %s: %v", id, err)
					}
				}
			default:
				ev := historyEvent(rt, h, i)
				res, err := w.Apply(ctx, ev)
				if err != nil {
					rt.Fatalf("apply %s: %v", ev.Key, err)
				}
				if res.Outcome == "APPLIED" || res.Outcome == "NOOP" {
					applied = append(applied, ev.Key)
				}
				if ev.Activity != nil {
					activities[ev.Activity.ID] = true
				}
			}
		}
		seen := map[string]bool{}
		for p := range histPeople {
			for _, q := range []ContactQuery{{Email: h.email(p)}, {Phone: h.phone(p)}} {
				id, err := w.ResolveContact(ctx, q)
				if err != nil || id == "" || seen[id] {
					continue
				}
				seen[id] = true
				rebuilt, err := w.Rebuild(ctx, id)
				if err != nil {
					rt.Fatalf("rebuild %s: %v", id, err)
				}
				diff, err := w.DiffRebuild(ctx, rebuilt)
				if err != nil {
					rt.Fatalf("diff %s: %v", id, err)
				}
				if !diff.Empty() {
					view, _ := w.GetContact(ctx, ContactQuery{ID: id})
					rt.Fatalf("contact %s: rebuild diff = fields %+v activities %+v\nstored timeline: %d activities; rebuilt %d",
						id, diff.Fields, diff.Activities, len(view.Timeline), len(rebuilt.Activities))
				}
			}
		}
	})
}
