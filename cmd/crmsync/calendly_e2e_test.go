package main

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

// Ada books a discovery call, then reschedules it: Calendly sends invitee.canceled (rescheduled:
// true, new_invitee) for her old booking and invitee.created (old_invitee) for the new one.
// Posted over HTTP with the worker running, they leave on Ada's timeline the old meeting
// rescheduled — not canceled — and linked to the new one, and the new one scheduled and linked
// back, both links naming activities that exist.
func TestCalendlyReschedulePairLinksTheMeetings(t *testing.T) {
	s := startStack(t, true)
	const (
		oldMeeting = "meeting:https://api.calendly.com/scheduled_events/FCDA5BHRWZQ6NTXW"
		newMeeting = "meeting:https://api.calendly.com/scheduled_events/GQ4S8WZK2M7TPRXB"
		oldInvitee = "DHFE2JQZ7KX4MNPA"
		newInvitee = "JW5N3RTY8HB2KCQM"
	)
	if status, body := s.post(s.sample("calendly")); status != 200 {
		t.Fatalf("booking: %d %s", status, body)
	}
	s.waitContact(func(d *contactDoc) error {
		if d.activity(oldMeeting) == nil {
			return fmt.Errorf("%s not on Ada's timeline yet", oldMeeting)
		}
		return nil
	}, "--email", "ada@example.com")
	for _, file := range []string{"calendly-reschedule-canceled.json", "calendly-reschedule-created.json"} {
		body, err := os.ReadFile("../../events/payloads/" + file)
		if err != nil {
			t.Fatal(err)
		}
		if status, resp := s.post(s.signed("calendly", body, "application/json")); status != 200 {
			t.Fatalf("%s: %d %s", file, status, resp)
		}
	}
	d := s.waitContact(func(d *contactDoc) error {
		old, next := d.activity(oldMeeting), d.activity(newMeeting)
		switch {
		case old == nil || len(old.Updates) < 2:
			return fmt.Errorf("the old meeting has not merged the reschedule's cancellation yet: %+v", old)
		case next == nil:
			return fmt.Errorf("%s not on Ada's timeline yet", newMeeting)
		}
		return nil
	}, "--email", "ada@example.com")
	old, next := d.activity(oldMeeting), d.activity(newMeeting)

	type meeting struct {
		Status, Outcome, RescheduledTo, Participation string
		Canceled                                      bool
		RelatesTo                                     []string
	}
	got := map[string]meeting{
		oldMeeting: {old.Status, old.Outcome, old.Attrs["rescheduled_to"], old.Attrs["invitee_status."+oldInvitee], old.Canceled, old.RelatesTo},
		newMeeting: {next.Status, next.Outcome, next.Attrs["rescheduled_to"], next.Attrs["invitee_status."+newInvitee], next.Canceled, next.RelatesTo},
	}
	want := map[string]meeting{
		oldMeeting: {Status: "rescheduled", RescheduledTo: newMeeting, Participation: "rescheduled"},
		newMeeting: {Status: "scheduled", Participation: "active", RelatesTo: []string{oldMeeting}},
	}
	for id, w := range want {
		if g := got[id]; g.Status != w.Status || g.Outcome != w.Outcome || g.RescheduledTo != w.RescheduledTo ||
			g.Participation != w.Participation || g.Canceled != w.Canceled || !slices.Equal(g.RelatesTo, w.RelatesTo) {
			t.Errorf("%s = %+v, want %+v", id, g, w)
		}
	}
	for _, a := range []*timelineEntry{old, next} {
		if c := a.Associations.Contact; c == nil || c.ID != d.Contact.ID {
			t.Errorf("%s association = %+v, want Ada's contact %s", a.ID, a.Associations.Contact, d.Contact.ID)
		}
	}
	if q := s.quarantined(); len(q) != 0 {
		t.Errorf("quarantined: %v", q)
	}
}

// A subscription's other events (here a routing form submission, in Calendly's documented
// shape) are acknowledged without an event and never quarantined.
func TestCalendlyIgnoredEventIsAcknowledged(t *testing.T) {
	s := startStack(t, false)
	body := []byte(`{"created_at":"2025-03-12T10:15:03.000000Z","created_by":"https://api.calendly.com/users/EBHAAFHDCAEQTSEZ",` +
		`"event":"routing_form_submission.created","payload":{"uri":"https://api.calendly.com/routing_form_submissions/RFS7Q2M4K9XW3TBN",` +
		`"routing_form":"https://api.calendly.com/routing_forms/RF5D8N2QK7ZW4XMP","questions_and_answers":[{"question_uuid":"7a1c2e3f-0b4d-4e5f-8a9b-0c1d2e3f4a5b",` +
		`"question":"Team size","answer":"11-50"}],"tracking":{"utm_campaign":null,"utm_source":null,"utm_medium":null,"utm_content":null,"utm_term":null,` +
		`"salesforce_uuid":null},"result":{"type":"event_type","value":"https://api.calendly.com/event_types/GBGBDCAADAEDCRZ2"},"submitter":null,` +
		`"submitter_type":null,"created_at":"2025-03-12T10:15:02.000000Z","updated_at":"2025-03-12T10:15:02.000000Z"}}`)
	status, resp := s.post(s.signed("calendly", body, "application/json"))
	if status != 200 || resp != `{"status":"accepted","events":0}` {
		t.Errorf("routing_form_submission.created: %d %s, want 200 with no event", status, resp)
	}
	if q := s.quarantined(); len(q) != 0 {
		t.Errorf("quarantined: %v", q)
	}
	if evs := s.drain(); len(evs) != 0 {
		t.Errorf("enqueued %v", keysOf(evs))
	}
}
