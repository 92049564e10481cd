package calendly

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/timeline"
)

// The fixtures are Calendly deliveries in the documented webhook shape: the envelope (event,
// created_at, created_by) around the Invitee resource with its scheduled_event
// (https://developer.calendly.com/docs/api-guides/see-how-webhook-payloads-change-when-invitees-reschedule-events).
const payloads = "../../../events/payloads"

const (
	oldMeeting   = "meeting:https://api.calendly.com/scheduled_events/FCDA5BHRWZQ6NTXW"
	newMeeting   = "meeting:https://api.calendly.com/scheduled_events/GQ4S8WZK2M7TPRXB"
	groupMeeting = "meeting:https://api.calendly.com/scheduled_events/MV6T2KQ9ZR4XWBNP"
	adaOld       = "DHFE2JQZ7KX4MNPA" // Ada's invitee on the first meeting
	adaNew       = "JW5N3RTY8HB2KCQM" // Ada's invitee on the meeting she moved to
	grace        = "RB7C4XPL9QN2MTWD" // Grace's invitee on the group demo
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(payloads, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit returns a fixture's delivery with fn applied to its decoded JSON (for variants of a
// documented delivery: another invitee of the same group event, the host's cancellation).
func edit(t *testing.T, body []byte, fn func(delivery, payload, event map[string]any)) []byte {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	p := d["payload"].(map[string]any)
	se, _ := p["scheduled_event"].(map[string]any)
	fn(d, p, se)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseOne(t *testing.T, body []byte) canonical.Event {
	t.Helper()
	got, err := New().Parse(&connector.Request{Body: body, ReceivedAt: time.Date(2025, 3, 20, 0, 0, 0, 0, time.UTC)}, connector.Secret{})
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if len(got.Events) != 1 {
		t.Fatalf("Parse() gave %d events, want 1", len(got.Events))
	}
	ev := got.Events[0]
	if err := ev.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	return ev
}

// merge folds events into one stored activity per id, as the worker does.
func merge(evs ...canonical.Event) map[string]timeline.Activity {
	out := map[string]timeline.Activity{}
	for i := range evs {
		ev := &evs[i]
		cur, ok := out[ev.Activity.ID]
		var stored *timeline.Activity
		if ok {
			stored = &cur
		}
		out[ev.Activity.ID] = timeline.Merge(stored, ev)
	}
	return out
}

// What each documented delivery maps to: the event's kind, the meeting's status ("" leaves it
// as it is), the invitee's participation and the links between meetings.
func TestParseInviteeDeliveries(t *testing.T) {
	type want struct {
		key, kind, activity, status, relatesTo string
		attrs                                  map[string]string
		contact                                []string
	}
	booking := []string{"email", "first_name", "last_activity_at", "last_name", "phone", "timezone", "utm_campaign", "utm_medium", "utm_source"}
	tests := []struct {
		name string
		file string
		want want
	}{
		{
			name: "booking",
			file: "calendly.json",
			want: want{
				key: "calendly:invitee.created:https://api.calendly.com/scheduled_events/FCDA5BHRWZQ6NTXW/invitees/" + adaOld, kind: "meeting.scheduled",
				activity: oldMeeting, status: "scheduled",
				attrs:   map[string]string{"invitee_status." + adaOld: "active"},
				contact: booking,
			},
		},
		{
			name: "reschedule: the old invitee's cancellation marks the old meeting rescheduled and names the new one",
			file: "calendly-reschedule-canceled.json",
			want: want{
				key: "calendly:invitee.canceled:https://api.calendly.com/scheduled_events/FCDA5BHRWZQ6NTXW/invitees/" + adaOld, kind: "meeting.scheduled",
				activity: oldMeeting, status: "rescheduled",
				attrs: map[string]string{
					"invitee_status." + adaOld: "rescheduled", "rescheduled_to." + adaOld: newMeeting, "rescheduled_to": newMeeting,
					"rescheduled": "true", "canceler_type": "invitee",
					"new_invitee": "https://api.calendly.com/scheduled_events/GQ4S8WZK2M7TPRXB/invitees/" + adaNew,
				},
				contact: booking,
			},
		},
		{
			name: "reschedule: the new invitee schedules the new meeting, which names the old one",
			file: "calendly-reschedule-created.json",
			want: want{
				key: "calendly:invitee.created:https://api.calendly.com/scheduled_events/GQ4S8WZK2M7TPRXB/invitees/" + adaNew, kind: "meeting.scheduled",
				activity: newMeeting, status: "scheduled", relatesTo: oldMeeting,
				attrs: map[string]string{
					"invitee_status." + adaNew: "active", "rescheduled_from." + adaNew: oldMeeting, "rescheduled_from": oldMeeting,
					"old_invitee": "https://api.calendly.com/scheduled_events/FCDA5BHRWZQ6NTXW/invitees/" + adaOld,
				},
				contact: booking,
			},
		},
		{
			name: "group event: one invitee cancels, the demo goes on",
			file: "calendly-group-canceled.json",
			want: want{
				key: "calendly:invitee.canceled:https://api.calendly.com/scheduled_events/MV6T2KQ9ZR4XWBNP/invitees/" + grace, kind: "meeting.scheduled",
				activity: groupMeeting, status: "scheduled",
				attrs:   map[string]string{"invitee_status." + grace: "canceled"},
				contact: []string{"email", "first_name", "last_activity_at", "last_name", "timezone"},
			},
		},
		{
			name: "no-show marked by the host",
			file: "calendly-no-show.json",
			want: want{
				key:      "calendly:invitee_no_show.created:https://api.calendly.com/scheduled_events/GQ4S8WZK2M7TPRXB/invitees/" + adaNew + ":https://api.calendly.com/invitee_no_shows/5ZQ7HD2KX9RWMT4B",
				kind:     "meeting.scheduled",
				activity: newMeeting, status: "",
				attrs:   map[string]string{"invitee_status." + adaNew: "no_show"},
				contact: []string{"email", "phone"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := parseOne(t, fixture(t, tt.file))
			got := want{key: ev.Key, kind: string(ev.Kind), activity: ev.Activity.ID, status: ev.Activity.Status, relatesTo: ev.Activity.RelatesTo,
				attrs: map[string]string{}}
			for k, v := range ev.Activity.Attrs {
				if k != "invitee" {
					got.attrs[k] = v
				}
			}
			for k := range ev.Fields["contact"] {
				got.contact = append(got.contact, k)
			}
			sort.Strings(got.contact)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("Parse(%s) (-want +got):\n%s", tt.file, diff)
			}
			if ev.Activity.Attrs["invitee"] != ev.ExternalIDs["invitee_uri"] || ev.MappingVersion != MappingVersion {
				t.Errorf("invitee attr %q, external ids %v, version %s", ev.Activity.Attrs["invitee"], ev.ExternalIDs, ev.MappingVersion)
			}
		})
	}
}

// A reschedule pair, in either order and however often delivered, leaves the old meeting
// rescheduled (never canceled) and linked to the new one, and the new one scheduled and linked
// back, both by activity ids that exist.
func TestRescheduleOnTheTimeline(t *testing.T) {
	booked := parseOne(t, fixture(t, "calendly.json"))
	canceled := parseOne(t, fixture(t, "calendly-reschedule-canceled.json"))
	created := parseOne(t, fixture(t, "calendly-reschedule-created.json"))
	orders := map[string][]canonical.Event{
		"as sent":               {booked, canceled, created},
		"new booking first":     {created, booked, canceled},
		"cancel before booking": {canceled, created, booked, canceled},
	}
	for name, evs := range orders {
		t.Run(name, func(t *testing.T) {
			acts := merge(evs...)
			old, next := acts[oldMeeting], acts[newMeeting]
			type view struct {
				Status, Outcome, RescheduledTo string
				Canceled                       bool
				RelatesTo                      []string
			}
			got := map[string]view{
				oldMeeting: {old.Status, old.Outcome, old.Attrs["rescheduled_to"], old.Canceled, old.RelatesTo},
				newMeeting: {next.Status, next.Outcome, next.Attrs["rescheduled_to"], next.Canceled, next.RelatesTo},
			}
			want := map[string]view{
				oldMeeting: {Status: "rescheduled", RescheduledTo: newMeeting},
				newMeeting: {Status: "scheduled", RelatesTo: []string{oldMeeting}},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("meetings (-want +got):\n%s", diff)
			}
			if _, ok := acts[old.Attrs["rescheduled_to"]]; !ok {
				t.Errorf("the old meeting links to %q, which is no activity", old.Attrs["rescheduled_to"])
			}
			if _, ok := acts[next.RelatesTo[0]]; !ok {
				t.Errorf("the new meeting relates to %q, which is no activity", next.RelatesTo[0])
			}
		})
	}
}

// In a group event each invitee's participation is tracked on its own: one cancelling cancels
// only their participation; the host cancelling the event cancels the meeting.
func TestGroupEventParticipation(t *testing.T) {
	const alan = "TK2M9ZQ4WX7RBNLC"
	graceCanceled := fixture(t, "calendly-group-canceled.json")
	booking := func(uri, email, name string, created string) []byte {
		return edit(t, graceCanceled, func(d, p, se map[string]any) {
			d["event"] = EventInviteeCreated
			d["created_at"] = created
			p["uri"], p["email"], p["name"], p["status"] = uri, email, name, "active"
			p["created_at"], p["updated_at"] = created, created
			delete(p, "cancellation")
			delete(se, "cancellation")
		})
	}
	alanBooked := parseOne(t, booking("https://api.calendly.com/scheduled_events/MV6T2KQ9ZR4XWBNP/invitees/"+alan, "alan@example.net", "Alan Turing", "2025-03-11T09:12:44.000000Z"))
	graceBooked := parseOne(t, booking("https://api.calendly.com/scheduled_events/MV6T2KQ9ZR4XWBNP/invitees/"+grace, "grace@example.org", "Grace Hopper", "2025-03-11T18:30:12.000000Z"))
	graceLeft := parseOne(t, graceCanceled)
	hostCanceled := parseOne(t, edit(t, graceCanceled, func(d, p, se map[string]any) {
		// The host cancels the demo: Calendly cancels every invitee, each delivery showing the
		// event canceled. This is Alan's.
		p["uri"], p["email"], p["name"] = "https://api.calendly.com/scheduled_events/MV6T2KQ9ZR4XWBNP/invitees/"+alan, "alan@example.net", "Alan Turing"
		p["updated_at"] = "2025-03-13T08:00:00.000000Z"
		p["cancellation"] = map[string]any{"canceled_by": "Sam Rivera", "canceler_type": "host", "reason": "Demo moved to next week", "created_at": "2025-03-13T08:00:00.000000Z"}
		se["status"] = "canceled"
		se["invitees_counter"] = map[string]any{"active": 0, "limit": 10, "total": 3}
	}))

	type view struct {
		Status        string
		Canceled      bool
		Participation map[string]string
	}
	look := func(a timeline.Activity) view {
		v := view{Status: a.Status, Canceled: a.Canceled, Participation: map[string]string{}}
		for k, s := range a.Attrs {
			if id, ok := strings.CutPrefix(k, "invitee_status."); ok {
				v.Participation[id] = s
			}
		}
		return v
	}
	tests := []struct {
		name string
		evs  []canonical.Event
		want view
	}{
		{"both booked", []canonical.Event{alanBooked, graceBooked}, view{"scheduled", false, map[string]string{alan: "active", grace: "active"}}},
		{"grace cancels", []canonical.Event{alanBooked, graceBooked, graceLeft}, view{"scheduled", false, map[string]string{alan: "active", grace: "canceled"}}},
		{"grace's cancel first", []canonical.Event{graceLeft, alanBooked, graceBooked}, view{"scheduled", false, map[string]string{alan: "active", grace: "canceled"}}},
		{"the host cancels the demo", []canonical.Event{alanBooked, graceBooked, graceLeft, hostCanceled}, view{"canceled", true, map[string]string{alan: "canceled", grace: "canceled"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, look(merge(tt.evs...)[groupMeeting])); diff != "" {
				t.Errorf("group meeting (-want +got):\n%s", diff)
			}
		})
	}
	if graceLeft.Kind == canonical.KindMeetingCanceled || hostCanceled.Kind != canonical.KindMeetingCanceled {
		t.Errorf("kinds: grace leaving %s, host canceling %s", graceLeft.Kind, hostCanceled.Kind)
	}
	if _, ok := graceLeft.Activity.Attrs["canceler_type"]; ok {
		t.Errorf("one invitee's cancellation set the meeting's canceler_type: %v", graceLeft.Activity.Attrs)
	}
}

// A no-show mark changes the invitee's participation only, and its removal restores it; the
// meeting's status is left as the bookings set it.
func TestNoShowMarkAndRemoval(t *testing.T) {
	marked := fixture(t, "calendly-no-show.json")
	removed := edit(t, marked, func(d, p, _ map[string]any) {
		d["event"] = EventNoShowDeleted
		d["created_at"] = "2025-03-14T19:02:30.000000Z"
		p["no_show"] = nil
	})
	booked := parseOne(t, fixture(t, "calendly-reschedule-created.json"))
	mark, unmark := parseOne(t, marked), parseOne(t, removed)
	if !mark.OccurredAt.Equal(time.Date(2025, 3, 14, 18, 21, 8, 0, time.UTC)) || !unmark.OccurredAt.Equal(time.Date(2025, 3, 14, 19, 2, 30, 0, time.UTC)) {
		t.Errorf("occurred at %v / %v, want the no-show's created_at / the delivery's", mark.OccurredAt, unmark.OccurredAt)
	}
	if mark.Key == unmark.Key || mark.ExternalIDs["no_show_uri"] != "https://api.calendly.com/invitee_no_shows/5ZQ7HD2KX9RWMT4B" {
		t.Errorf("keys %s / %s, external ids %v", mark.Key, unmark.Key, mark.ExternalIDs)
	}
	tests := []struct {
		name          string
		evs           []canonical.Event
		status, state string
	}{
		{"marked", []canonical.Event{booked, mark}, "scheduled", "no_show"},
		{"mark delivered before the booking", []canonical.Event{mark, booked}, "scheduled", "no_show"},
		{"mark removed", []canonical.Event{booked, mark, unmark}, "scheduled", "active"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := merge(tt.evs...)[newMeeting]
			got := [3]any{a.Status, a.Canceled, a.Attrs["invitee_status."+adaNew]}
			if want := [3]any{tt.status, false, tt.state}; got != want {
				t.Errorf("status, canceled, participation = %v, want %v", got, want)
			}
		})
	}
}

// calendlyWebhookEvents is every event a Calendly webhook subscription can send: the event enum
// of GET /sample_webhook_data and POST /webhook_subscriptions
// (https://developer.calendly.com/api-docs/calendly-api/webhooks/get-sample-webhook-data).
var calendlyWebhookEvents = []string{
	"invitee.created", "invitee.canceled", "invitee_no_show.created", "invitee_no_show.deleted",
	"routing_form_submission.created", "event_type.created", "event_type.deleted", "event_type.updated",
	"meeting_recap.created", "meeting_recap.updated", "meeting_recap.deleted",
	"contact.created", "contact.updated", "contact.deleted",
}

// Every event a subscription can send is mapped or ignored with a reason; none is quarantined.
// An event type Calendly does not document is.
func TestEveryWebhookEventIsMappedOrIgnored(t *testing.T) {
	mapped := []string{EventInviteeCreated, EventInviteeCanceled, EventNoShowCreated, EventNoShowDeleted}
	var handled []string
	handled = append(handled, mapped...)
	for name, reason := range IgnoredEvents {
		handled = append(handled, name)
		if strings.TrimSpace(reason) == "" {
			t.Errorf("%s: ignored without a reason", name)
		}
	}
	sort.Strings(handled)
	documented := slices.Clone(calendlyWebhookEvents)
	sort.Strings(documented)
	if diff := cmp.Diff(documented, handled); diff != "" {
		t.Errorf("handled events (-documented +handled):\n%s", diff)
	}
	for name := range IgnoredEvents {
		t.Run(name, func(t *testing.T) {
			// The payload is whatever the event carries; an ignored event reads none of it.
			body := `{"created_at":"2025-03-12T10:00:00.000000Z","created_by":"https://api.calendly.com/users/EBHAAFHDCAEQTSEZ","event":"` + name +
				`","payload":{"uri":"https://api.calendly.com/x/Y","created_at":"2025-03-12T10:00:00.000000Z"}}`
			got, err := New().Parse(&connector.Request{Body: []byte(body)}, connector.Secret{})
			if err != nil {
				t.Fatalf("Parse() = %v, want acknowledged", err)
			}
			if len(got.Events) != 0 || len(got.Rejected) != 0 || len(got.Notes) != 1 || !strings.Contains(got.Notes[0], name) {
				t.Errorf("Parse() = %+v, want no event and one note naming %s", got, name)
			}
		})
	}
	_, err := New().Parse(&connector.Request{Body: []byte(`{"event":"invitee.updated","payload":{}}`)}, connector.Secret{})
	if !errors.Is(err, connector.ErrUnusable) {
		t.Errorf("undocumented event: %v, want ErrUnusable", err)
	}
}

// A delivery without payload.scheduled_event still finds its meeting through the Invitee's event
// link or its own URI.
func TestMeetingWithoutScheduledEvent(t *testing.T) {
	base := fixture(t, "calendly-no-show.json")
	tests := []struct {
		name string
		body []byte
	}{
		{"event link", edit(t, base, func(_, p, _ map[string]any) { delete(p, "scheduled_event") })},
		{"invitee uri", edit(t, base, func(_, p, _ map[string]any) { delete(p, "scheduled_event"); delete(p, "event") })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseOne(t, tt.body).Activity.ID; got != newMeeting {
				t.Errorf("activity %q, want %q", got, newMeeting)
			}
		})
	}
}
