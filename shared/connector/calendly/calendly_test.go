package calendly

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

const createdBody = `{
  "created_at": "2024-03-01T10:00:05.000000Z",
  "created_by": "https://api.calendly.com/users/HOST1",
  "event": "invitee.created",
  "payload": {
    "cancel_url": "https://calendly.com/cancellations/INV2",
    "created_at": "2024-03-01T10:00:00.000000Z",
    "email": " Jane.Doe@Example.com ",
    "first_name": "Jane",
    "last_name": "Doe",
    "name": "Jane Doe",
    "new_invitee": null,
    "old_invitee": "https://api.calendly.com/scheduled_events/EV1/invitees/INV1",
    "questions_and_answers": [{"answer": "10k", "position": 0, "question": "What is your budget?"}],
    "reschedule_url": "https://calendly.com/reschedulings/INV2",
    "rescheduled": false,
    "status": "active",
    "text_reminder_number": "+1 415 555 0100",
    "timezone": "Europe/Berlin",
    "tracking": {"utm_campaign": "spring", "utm_source": "google", "utm_medium": null, "utm_content": null, "utm_term": null, "salesforce_uuid": "SF1"},
    "updated_at": "2024-03-01T10:00:00.000000Z",
    "uri": "https://api.calendly.com/scheduled_events/EV2/invitees/INV2",
    "payment": null,
    "scheduled_event": {
      "uri": "https://api.calendly.com/scheduled_events/EV2",
      "name": "30 Minute Meeting",
      "start_time": "2024-03-05T14:00:00.000000Z",
      "end_time": "2024-03-05T14:30:00.000000Z",
      "event_memberships": [{"user": "https://api.calendly.com/users/HOST1", "user_email": "Rep@Corp.example", "user_name": "Rep One"}]
    },
    "some_new_member": {"x": 1}
  }
}`

const canceledBody = `{
  "created_at": "2024-03-02T09:00:05.000000Z",
  "event": "invitee.canceled",
  "payload": {
    "created_at": "2024-03-01T10:00:00.000000Z",
    "updated_at": "2024-03-02T09:00:00.000000Z",
    "email": "jane.doe@example.com",
    "name": "Jane Doe",
    "rescheduled": true,
    "new_invitee": "https://api.calendly.com/scheduled_events/EV3/invitees/INV3",
    "uri": "https://api.calendly.com/scheduled_events/EV2/invitees/INV2",
    "cancellation": {"canceled_by": "Jane Doe", "reason": "conflict", "canceler_type": "invitee"},
    "scheduled_event": {"uri": "https://api.calendly.com/scheduled_events/EV2", "name": "30 Minute Meeting",
      "start_time": "2024-03-05T14:00:00Z", "end_time": "2024-03-05T14:30:00Z", "event_memberships": []}
  }
}`

func sec(cur, prev string) connector.Secret {
	s := connector.Secret{Current: map[string]string{SecretSigningKey: cur}}
	if prev != "" {
		s.Previous = map[string]string{SecretSigningKey: prev}
	}
	return s
}

func signed(t *testing.T, body, key string, at time.Time) *connector.Request {
	t.Helper()
	r := &connector.Request{Method: "POST", Headers: map[string]string{"content-type": "application/json"}, Body: []byte(body)}
	if err := New().Sign(r, sec(key, ""), at); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignKnownValue(t *testing.T) {
	// printf '1700000000.{}' | openssl dgst -sha256 -hmac key
	r := signed(t, "{}", "key", time.Unix(1700000000, 0))
	want := "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
	if got := r.Headers[headerSignature]; got != want {
		t.Errorf("Sign() header = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	c := New()
	now := time.Unix(1709287205, 0)
	tampered := signed(t, createdBody, "cur", now)
	tampered.Body = []byte(strings.Replace(createdBody, "Jane", "John", 1))
	missing := signed(t, createdBody, "cur", now)
	delete(missing.Headers, headerSignature)
	noV1 := signed(t, createdBody, "cur", now)
	noV1.Headers[headerSignature] = "t=" + strconv.FormatInt(now.Unix(), 10)
	spaced := signed(t, createdBody, "cur", now)
	spaced.Headers[headerSignature] = strings.Replace(spaced.Headers[headerSignature], ",", " , ", 1)

	tests := []struct {
		name    string
		req     *connector.Request
		sec     connector.Secret
		wantErr bool
	}{
		{"valid current", signed(t, createdBody, "cur", now), sec("cur", "old"), false},
		{"valid previous after rotation", signed(t, createdBody, "old", now), sec("cur", "old"), false},
		{"tolerant spacing", spaced, sec("cur", ""), false},
		{"2m59s old", signed(t, createdBody, "cur", now.Add(-179*time.Second)), sec("cur", ""), false},
		{"wrong secret", signed(t, createdBody, "other", now), sec("cur", "old"), true},
		{"tampered body", tampered, sec("cur", ""), true},
		{"missing header", missing, sec("cur", ""), true},
		{"no v1", noV1, sec("cur", ""), true},
		{"expired", signed(t, createdBody, "cur", now.Add(-181*time.Second)), sec("cur", ""), true},
		{"future", signed(t, createdBody, "cur", now.Add(181*time.Second)), sec("cur", ""), true},
		{"no key configured", signed(t, createdBody, "cur", now), connector.Secret{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Verify(tt.req, tt.sec, now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Verify() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
				t.Errorf("Verify() = %v, want ErrUnauthenticated", err)
			}
		})
	}
}

func tp(s string) *time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return &t
}

func TestParse(t *testing.T) {
	recv := time.Date(2024, 3, 1, 10, 0, 6, 0, time.UTC)
	tests := []struct {
		name string
		body string
		want canonical.Event
	}{
		{
			name: "created after reschedule",
			body: createdBody,
			want: canonical.Event{
				Key:        "calendly:invitee.created:https://api.calendly.com/scheduled_events/EV2/invitees/INV2",
				Source:     "calendly",
				Kind:       canonical.KindMeetingScheduled,
				OccurredAt: time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC),
				GroupKey:   "email:jane.doe@example.com",
				Subject:    canonical.Person{Emails: []string{"jane.doe@example.com"}, Phones: []string{"+14155550100"}, Name: "Jane Doe"},
				Actor:      &canonical.Actor{ID: "https://api.calendly.com/users/HOST1", Email: "rep@corp.example", Name: "Rep One", Role: "host", Type: "user"},
				Fields: map[string]map[string]string{"contact": {
					"email": "jane.doe@example.com", "phone": "+14155550100", "first_name": "Jane", "last_name": "Doe",
					"timezone": "Europe/Berlin", "utm_source": "google", "utm_campaign": "spring",
					"last_activity_at": "2024-03-01T10:00:00Z",
				}},
				Activity: &canonical.Activity{
					ID: "meeting:https://api.calendly.com/scheduled_events/EV2", Type: "meeting", Status: "scheduled",
					Subject: "30 Minute Meeting", StartAt: tp("2024-03-05T14:00:00Z"), EndAt: tp("2024-03-05T14:30:00Z"),
					Participants: []canonical.Participant{
						{Role: "invitee", Email: "jane.doe@example.com", Name: "Jane Doe"},
						{Role: "host", Email: "rep@corp.example", Name: "Rep One"},
					},
					RelatesTo: "meeting:https://api.calendly.com/scheduled_events/EV1",
					Attrs: map[string]string{
						"invitee":               "https://api.calendly.com/scheduled_events/EV2/invitees/INV2",
						"invitee_status.INV2":   "active",
						"old_invitee":           "https://api.calendly.com/scheduled_events/EV1/invitees/INV1",
						"rescheduled_from":      "meeting:https://api.calendly.com/scheduled_events/EV1",
						"rescheduled_from.INV2": "meeting:https://api.calendly.com/scheduled_events/EV1",
					},
				},
				ExternalIDs: map[string]string{
					"invitee_uri":         "https://api.calendly.com/scheduled_events/EV2/invitees/INV2",
					"scheduled_event_uri": "https://api.calendly.com/scheduled_events/EV2",
				},
				MappingVersion: "calendly/2",
				PayloadHash:    canonical.PayloadHash([]byte(createdBody)),
				Unmapped: []string{
					"payload.questions_and_answers[What is your budget?]",
					"payload.some_new_member",
					"payload.tracking.salesforce_uuid",
				},
			},
		},
		{
			name: "canceled for reschedule",
			body: canceledBody,
			want: canonical.Event{
				Key:        "calendly:invitee.canceled:https://api.calendly.com/scheduled_events/EV2/invitees/INV2",
				Source:     "calendly",
				Kind:       canonical.KindMeetingScheduled, // moved, not canceled
				OccurredAt: time.Date(2024, 3, 2, 9, 0, 0, 0, time.UTC),
				GroupKey:   "email:jane.doe@example.com",
				Subject:    canonical.Person{Emails: []string{"jane.doe@example.com"}, Name: "Jane Doe"},
				Fields: map[string]map[string]string{"contact": {
					"email": "jane.doe@example.com", "last_activity_at": "2024-03-02T09:00:00Z",
				}},
				Activity: &canonical.Activity{
					ID: "meeting:https://api.calendly.com/scheduled_events/EV2", Type: "meeting", Status: "rescheduled",
					Subject: "30 Minute Meeting", StartAt: tp("2024-03-05T14:00:00Z"), EndAt: tp("2024-03-05T14:30:00Z"),
					Participants: []canonical.Participant{{Role: "invitee", Email: "jane.doe@example.com", Name: "Jane Doe"}},
					Attrs: map[string]string{
						"invitee":             "https://api.calendly.com/scheduled_events/EV2/invitees/INV2",
						"invitee_status.INV2": "rescheduled",
						"new_invitee":         "https://api.calendly.com/scheduled_events/EV3/invitees/INV3",
						"rescheduled":         "true",
						"rescheduled_to":      "meeting:https://api.calendly.com/scheduled_events/EV3",
						"rescheduled_to.INV2": "meeting:https://api.calendly.com/scheduled_events/EV3",
						"canceler_type":       "invitee",
					},
				},
				ExternalIDs: map[string]string{
					"invitee_uri":         "https://api.calendly.com/scheduled_events/EV2/invitees/INV2",
					"scheduled_event_uri": "https://api.calendly.com/scheduled_events/EV2",
				},
				MappingVersion: "calendly/2",
				PayloadHash:    canonical.PayloadHash([]byte(canceledBody)),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := New().Parse(&connector.Request{Body: []byte(tt.body), ReceivedAt: recv}, connector.Secret{})
			if err != nil {
				t.Fatalf("Parse() = %v", err)
			}
			if len(got.Events) != 1 {
				t.Fatalf("got %d events, want 1", len(got.Events))
			}
			if err := got.Events[0].Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Events[0]); diff != "" {
				t.Errorf("Parse() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseUnusable(t *testing.T) {
	tests := []struct{ name, body string }{
		{"not JSON", "nope"},
		{"unknown event", `{"event":"invitee.rescheduled","payload":{"uri":"u","scheduled_event":{"uri":"e"},"created_at":"2024-01-01T00:00:00Z"}}`},
		{"no event", `{"payload":{"uri":"u","scheduled_event":{"uri":"e"},"created_at":"2024-01-01T00:00:00Z"}}`},
		{"no uri", `{"event":"invitee.created","payload":{"scheduled_event":{"uri":"e"},"created_at":"2024-01-01T00:00:00Z"}}`},
		{"no scheduled event", `{"event":"invitee.created","payload":{"uri":"u","created_at":"2024-01-01T00:00:00Z"}}`},
		{"payload wrong type", `{"event":"invitee.created","payload":[1]}`},
		{"no time", `{"event":"invitee.created","payload":{"uri":"u","scheduled_event":{"uri":"e"}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New().Parse(&connector.Request{Body: []byte(tt.body)}, connector.Secret{}); !errors.Is(err, connector.ErrUnusable) {
				t.Errorf("Parse() = %v, want ErrUnusable", err)
			}
		})
	}
}

func TestKeyStability(t *testing.T) {
	a, err := New().Parse(&connector.Request{Body: []byte(createdBody), ReceivedAt: time.Unix(1, 0)}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New().Parse(&connector.Request{Body: []byte(createdBody), ReceivedAt: time.Unix(99999, 0)}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("retry differs (-first +second):\n%s", diff)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(createdBody), "t=1709287205,v1=00ff")
	f.Add([]byte("{}"), "t=,v1=")
	f.Add([]byte(""), "v1=zz,t=99999999999999999999")
	f.Add([]byte("x"), ",,,==")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		req := &connector.Request{Headers: map[string]string{headerSignature: header}, Body: body}
		if _, err := New().Verify(req, sec("k", "old"), time.Unix(1709287205, 0)); err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
			t.Errorf("Verify() = %v", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(createdBody))
	f.Add([]byte(canceledBody))
	f.Add([]byte(`{"event":"invitee.created","payload":{"uri":"u","scheduled_event":{"uri":"e","start_time":"x"},"tracking":{"utm_source":5}}}`))
	f.Add([]byte(`null`))
	for _, name := range []string{"calendly-reschedule-canceled.json", "calendly-reschedule-created.json", "calendly-group-canceled.json", "calendly-no-show.json"} {
		if b, err := os.ReadFile(filepath.Join(payloads, name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"event":"routing_form_submission.created","payload":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := New().Parse(&connector.Request{Body: body, ReceivedAt: time.Unix(1700000000, 0)}, connector.Secret{})
		if err != nil {
			if !errors.Is(err, connector.ErrUnusable) {
				t.Errorf("Parse() = %v", err)
			}
			return
		}
		for _, ev := range got.Events {
			if err := ev.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		}
	})
}
