package typeform

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

const responseBody = `{
  "event_id": "01HQ8Z6W3XKJ5Y2R7T9V0B1C2D",
  "event_type": "form_response",
  "form_response": {
    "form_id": "lT4Z3j",
    "token": "a3a12ec67a1365927098a606107fac15",
    "landed_at": "2024-03-01T09:58:00Z",
    "submitted_at": "2024-03-01T10:00:00Z",
    "hidden": {"utm_source": "linkedin", "utm_campaign": "q1-launch", "gclid": "abc", "email": "prefill@example.com", "utm_term": ""},
    "definition": {
      "id": "lT4Z3j",
      "title": "Request a demo",
      "fields": [
        {"id": "f1", "ref": "first_name", "type": "short_text", "title": "First name"},
        {"id": "f2", "ref": "Last-Name", "type": "short_text", "title": "Last name"},
        {"id": "f3", "ref": "work_email", "type": "email", "title": "Email"},
        {"id": "f4", "ref": "phone", "type": "phone_number", "title": "Phone"},
        {"id": "f5", "ref": "company", "type": "short_text", "title": "Company"},
        {"id": "f6", "ref": "website", "type": "website", "title": "Website"},
        {"id": "f7", "ref": "foo", "type": "long_text", "title": "Anything else?"},
        {"id": "f8", "ref": "team_size", "type": "multiple_choice", "title": "Team size"},
        {"id": "f9", "type": "yes_no", "title": "Newsletter?"}
      ]
    },
    "answers": [
      {"type": "text", "text": "Jane", "field": {"id": "f1", "ref": "first_name", "type": "short_text"}},
      {"type": "text", "text": "Doe", "field": {"id": "f2", "ref": "Last-Name", "type": "short_text"}},
      {"type": "email", "email": "Jane.Doe@Example.com", "field": {"id": "f3", "ref": "work_email", "type": "email"}},
      {"type": "phone_number", "phone_number": "+14155550100", "field": {"id": "f4", "ref": "phone", "type": "phone_number"}},
      {"type": "text", "text": "Acme Inc", "field": {"id": "f5", "ref": "company", "type": "short_text"}},
      {"type": "url", "url": "https://www.Acme.example/about", "field": {"id": "f6", "ref": "website", "type": "website"}},
      {"type": "text", "text": "Call me", "field": {"id": "f7", "ref": "foo", "type": "long_text"}},
      {"type": "choice", "choice": {"label": "10-50"}, "field": {"id": "f8", "ref": "team_size", "type": "multiple_choice"}},
      {"type": "boolean", "boolean": true, "field": {"id": "f9", "type": "yes_no"}}
    ]
  }
}`

func sec(cur, prev string) connector.Secret {
	s := connector.Secret{Current: map[string]string{SecretSigningKey: cur}}
	if prev != "" {
		s.Previous = map[string]string{SecretSigningKey: prev}
	}
	return s
}

func signed(t *testing.T, body, key string) *connector.Request {
	t.Helper()
	r := &connector.Request{Headers: map[string]string{"content-type": "application/json"}, Body: []byte(body)}
	if err := New().Sign(r, sec(key, ""), time.Time{}); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignKnownValue(t *testing.T) {
	// printf 'hello' | openssl dgst -sha256 -hmac key -binary | base64
	r := signed(t, "hello", "key")
	if got, want := r.Headers[headerSignature], "sha256=kwezuRXvtRcf8U2MtV+8x5jGwO8UVtZt7RpqpyOli3s="; got != want {
		t.Errorf("Sign() = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1709287200, 0)
	tampered := signed(t, responseBody, "cur")
	tampered.Body = []byte(strings.Replace(responseBody, "Jane", "John", 1))
	missing := signed(t, responseBody, "cur")
	delete(missing.Headers, headerSignature)
	hexSig := signed(t, responseBody, "cur")
	hexSig.Headers[headerSignature] = "sha256=0011aabb"
	noPrefix := signed(t, responseBody, "cur")
	noPrefix.Headers[headerSignature] = strings.TrimPrefix(noPrefix.Headers[headerSignature], "sha256=")

	tests := []struct {
		name    string
		req     *connector.Request
		sec     connector.Secret
		wantErr bool
	}{
		{"valid current", signed(t, responseBody, "cur"), sec("cur", "old"), false},
		{"valid previous after rotation", signed(t, responseBody, "old"), sec("cur", "old"), false},
		{"wrong secret", signed(t, responseBody, "other"), sec("cur", "old"), true},
		{"tampered body", tampered, sec("cur", ""), true},
		{"missing header", missing, sec("cur", ""), true},
		{"hex instead of base64", hexSig, sec("cur", ""), true},
		{"no sha256= prefix", noPrefix, sec("cur", ""), true},
		{"no key configured", signed(t, responseBody, "cur"), connector.Secret{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New().Verify(tt.req, tt.sec, now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Verify() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
				t.Errorf("Verify() = %v, want ErrUnauthenticated", err)
			}
		})
	}
}

func TestParse(t *testing.T) {
	partial := `{"event_id":"E2","event_type":"form_response_partial","form_response":{"form_id":"F","token":"T2",
	  "landed_at":"2024-03-01T09:58:00Z","hidden":{"phone":"(415) 555-0111"},"answers":[{"type":"text","text":"x","field":{"id":"q1","type":"short_text"}}]}}`
	tests := []struct {
		name string
		body string
		want canonical.Event
	}{
		{
			name: "full response",
			body: responseBody,
			want: canonical.Event{
				Key:        "typeform:01HQ8Z6W3XKJ5Y2R7T9V0B1C2D",
				Source:     "typeform",
				Kind:       canonical.KindLeadSubmitted,
				OccurredAt: time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC),
				GroupKey:   "email:jane.doe@example.com",
				Subject: canonical.Person{
					Emails: []string{"jane.doe@example.com", "prefill@example.com"},
					Phones: []string{"+14155550100"},
					Name:   "Jane Doe",
				},
				Fields: map[string]map[string]string{
					"contact": {
						"first_name": "Jane", "last_name": "Doe", "email": "jane.doe@example.com",
						"phone": "+14155550100", "company": "Acme Inc", "lead_source": "typeform",
						"utm_source": "linkedin", "utm_campaign": "q1-launch",
						"last_activity_at": "2024-03-01T10:00:00Z",
					},
					"account": {"name": "Acme Inc", "domain": "acme.example"},
				},
				Activity: &canonical.Activity{
					ID: "form:a3a12ec67a1365927098a606107fac15", Type: "form", Status: "submitted",
					Subject:      "Request a demo",
					Participants: []canonical.Participant{{Role: "from", Email: "jane.doe@example.com", Phone: "+14155550100", Name: "Jane Doe"}},
					Attrs:        map[string]string{"form_id": "lT4Z3j"},
				},
				ExternalIDs: map[string]string{
					"event_id": "01HQ8Z6W3XKJ5Y2R7T9V0B1C2D", "response_token": "a3a12ec67a1365927098a606107fac15", "form_id": "lT4Z3j",
				},
				MappingVersion: MappingVersion,
				PayloadHash:    canonical.PayloadHash([]byte(responseBody)),
				Unmapped: []string{
					"form_response.answers[ref=f9]",
					"form_response.answers[ref=foo]",
					"form_response.answers[ref=team_size]",
					"form_response.hidden.gclid",
				},
			},
		},
		{
			name: "partial response with hidden phone",
			body: partial,
			want: canonical.Event{
				Key: "typeform:E2", Source: "typeform", Kind: canonical.KindLeadSubmitted,
				OccurredAt: time.Date(2024, 3, 1, 9, 58, 0, 0, time.UTC),
				GroupKey:   "phone:+14155550111",
				Subject:    canonical.Person{Phones: []string{"+14155550111"}},
				Fields: map[string]map[string]string{"contact": {
					"phone": "+14155550111", "lead_source": "typeform", "last_activity_at": "2024-03-01T09:58:00Z",
				}},
				Activity: &canonical.Activity{
					ID: "form:T2", Type: "form", Status: "partial",
					Participants: []canonical.Participant{{Role: "from", Phone: "+14155550111"}},
					Attrs:        map[string]string{"form_id": "F"},
				},
				ExternalIDs:    map[string]string{"event_id": "E2", "response_token": "T2", "form_id": "F"},
				MappingVersion: MappingVersion,
				PayloadHash:    canonical.PayloadHash([]byte(partial)),
				Unmapped:       []string{"form_response.answers[ref=q1]"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := New().Parse(&connector.Request{Body: []byte(tt.body), ReceivedAt: time.Unix(1709287300, 0)}, connector.Secret{})
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

func TestParseNoIdentity(t *testing.T) {
	body := `{"event_id":"E3","event_type":"form_response","form_response":{"token":"T3","submitted_at":"2024-03-01T10:00:00Z","answers":[]}}`
	got, err := New().Parse(&connector.Request{Body: []byte(body)}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if g := got.Events[0].GroupKey; g != "typeform:T3" {
		t.Errorf("GroupKey = %q, want typeform:T3", g)
	}
}

func TestParseUnusable(t *testing.T) {
	tests := []struct{ name, body string }{
		{"not JSON", "{"},
		{"unknown event type", `{"event_id":"E","event_type":"other","form_response":{"token":"T","submitted_at":"2024-03-01T10:00:00Z"}}`},
		{"no event_id", `{"event_type":"form_response","form_response":{"token":"T","submitted_at":"2024-03-01T10:00:00Z"}}`},
		{"no form_response", `{"event_id":"E","event_type":"form_response"}`},
		{"no token", `{"event_id":"E","event_type":"form_response","form_response":{"submitted_at":"2024-03-01T10:00:00Z"}}`},
		{"no time", `{"event_id":"E","event_type":"form_response","form_response":{"token":"T"}}`},
		{"answers wrong type", `{"event_id":"E","event_type":"form_response","form_response":{"token":"T","answers":{}}}`},
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
	a, err := New().Parse(&connector.Request{Body: []byte(responseBody), ReceivedAt: time.Unix(1, 0)}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New().Parse(&connector.Request{Body: []byte(responseBody), ReceivedAt: time.Unix(99999, 0)}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("retry differs (-first +second):\n%s", diff)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(responseBody), "sha256=kwezuRXvtRcf8U2MtV+8x5jGwO8UVtZt7RpqpyOli3s=")
	f.Add([]byte(""), "sha256=")
	f.Add([]byte("x"), "sha1=abc")
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		req := &connector.Request{Headers: map[string]string{headerSignature: header}, Body: body}
		if _, err := New().Verify(req, sec("k", "old"), time.Time{}); err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
			t.Errorf("Verify() = %v", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(responseBody))
	f.Add([]byte(`{"event_id":"E","event_type":"form_response","form_response":{"token":"T","hidden":{"website":"::"},"answers":[{"type":"number","number":1e400}]}}`))
	f.Add([]byte(`{"event_id":"E","event_type":"form_response","form_response":{"token":"T","answers":[{"type":"choice","field":{"ref":"company"}}]}}`))
	f.Add([]byte(`[]`))
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
