package generic

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// Standard Webhooks' published test vector.
const (
	vecSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecTS     = "1614265330"
	vecBody   = `{"test": 2432232314}`
	vecSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	otherKey  = "whsec_c2Vjb25kLWtleS1mb3ItdGVzdHMtb25seQ=="
)

var vecNow = time.Unix(1614265330, 0)

func vecReq() *connector.Request {
	return &connector.Request{
		Method: "POST",
		Path:   "/webhooks/generic",
		Headers: map[string]string{
			"webhook-id":        vecID,
			"webhook-timestamp": vecTS,
			"webhook-signature": vecSig,
			"content-type":      "application/json",
		},
		Body: []byte(vecBody),
	}
}

func TestVerify(t *testing.T) {
	cur := connector.Secret{Current: map[string]string{"signing_key": vecSecret}}
	rotated := connector.Secret{
		Current:  map[string]string{"signing_key": otherKey},
		Previous: map[string]string{"signing_key": vecSecret},
	}
	wrong := connector.Secret{Current: map[string]string{"signing_key": otherKey}}
	tests := []struct {
		name   string
		mutate func(*connector.Request)
		sec    connector.Secret
		now    time.Time
		ok     bool
	}{
		{"published vector", nil, cur, vecNow, true},
		{"key without whsec_ prefix", nil, connector.Secret{Current: map[string]string{"signing_key": strings.TrimPrefix(vecSecret, "whsec_")}}, vecNow, true},
		{"previous key after rotation", nil, rotated, vecNow, true},
		{"several signatures, one valid", func(r *connector.Request) {
			r.Headers["webhook-signature"] = "v1,bm9wZQ== v2,abc " + vecSig
		}, cur, vecNow, true},
		{"4m59s late", nil, cur, vecNow.Add(4*time.Minute + 59*time.Second), true},
		{"4m59s early", nil, cur, vecNow.Add(-4*time.Minute - 59*time.Second), true},
		{"tampered body", func(r *connector.Request) { r.Body = []byte(`{"test": 2432232315}`) }, cur, vecNow, false},
		{"tampered id", func(r *connector.Request) { r.Headers["webhook-id"] = "msg_other" }, cur, vecNow, false},
		{"tampered timestamp", func(r *connector.Request) { r.Headers["webhook-timestamp"] = "1614265331" }, cur, vecNow, false},
		{"wrong key", nil, wrong, vecNow, false},
		{"no key configured", nil, connector.Secret{}, vecNow, false},
		{"undecodable key", nil, connector.Secret{Current: map[string]string{"signing_key": "whsec_!!!"}}, vecNow, false},
		{"missing id", func(r *connector.Request) { delete(r.Headers, "webhook-id") }, cur, vecNow, false},
		{"missing timestamp", func(r *connector.Request) { delete(r.Headers, "webhook-timestamp") }, cur, vecNow, false},
		{"missing signature", func(r *connector.Request) { delete(r.Headers, "webhook-signature") }, cur, vecNow, false},
		{"malformed timestamp", func(r *connector.Request) { r.Headers["webhook-timestamp"] = "yesterday" }, cur, vecNow, false},
		{"only v2 signatures", func(r *connector.Request) {
			r.Headers["webhook-signature"] = strings.Replace(vecSig, "v1,", "v2,", 1)
		}, cur, vecNow, false},
		{"expired (5m01s)", nil, cur, vecNow.Add(5*time.Minute + time.Second), false},
		{"future (5m01s)", nil, cur, vecNow.Add(-5*time.Minute - time.Second), false},
	}
	c := New()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := vecReq()
			if tt.mutate != nil {
				tt.mutate(req)
			}
			_, err := c.Verify(req, tt.sec, tt.now)
			if tt.ok && err != nil {
				t.Fatalf("Verify: got %v, want nil", err)
			}
			if !tt.ok {
				if !errors.Is(err, connector.ErrUnauthenticated) {
					t.Fatalf("Verify: got %v, want ErrUnauthenticated", err)
				}
				if strings.Contains(err.Error(), "g0hM9") || strings.Contains(err.Error(), "MfKQ9") {
					t.Fatalf("error leaks a secret or signature: %v", err)
				}
			}
		})
	}
}

func TestSignRoundTrip(t *testing.T) {
	c := New()
	sec := connector.Secret{Current: map[string]string{"signing_key": vecSecret}}
	req := &connector.Request{Headers: map[string]string{"webhook-id": vecID}, Body: []byte(vecBody)}
	if err := c.Sign(req, sec, vecNow); err != nil {
		t.Fatal(err)
	}
	if got, want := req.Headers["webhook-signature"], vecSig; got != want {
		t.Fatalf("Sign: got %q, want %q", got, want)
	}
	// Without an id, Sign derives a stable one.
	a := &connector.Request{Body: []byte(sampleLead)}
	b := &connector.Request{Body: []byte(sampleLead)}
	if err := c.Sign(a, sec, vecNow); err != nil {
		t.Fatal(err)
	}
	if err := c.Sign(b, sec, vecNow.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if a.Headers["webhook-id"] != b.Headers["webhook-id"] {
		t.Fatalf("derived ids differ: %q, %q", a.Headers["webhook-id"], b.Headers["webhook-id"])
	}
	if _, err := c.Verify(a, sec, vecNow); err != nil {
		t.Fatalf("Verify(signed): %v", err)
	}
	if err := c.Sign(&connector.Request{}, connector.Secret{}, vecNow); err == nil {
		t.Fatal("Sign without key: got nil error")
	}
}

const sampleLead = `{
  "schema": "crmsync.generic/v1",
  "type": "lead",
  "occurred_at": "2026-03-02T10:15:00Z",
  "external_id": "lp-4711",
  "person": {
    "emails": ["  Ada.Lovelace@Example.com ", "not-an-email"],
    "phones": ["+1 (415) 867-5309"],
    "first_name": "Ada",
    "last_name": "Lovelace",
    "company": "Analytical Engines Ltd",
    "job_title": "CTO",
    "nickname": "ada"
  },
  "attribution": {
    "campaign": "spring-launch",
    "utm_source": "google",
    "utm_medium": "cpc",
    "utm_campaign": "spring",
    "utm_term": "crm sync",
    "utm_content": "ad-a"
  },
  "landing_page": "https://example.com/demo"
}`

const sampleCall = `{
  "schema": "crmsync.generic/v1",
  "type": "activity",
  "occurred_at": "2026-03-02T11:00:00+01:00",
  "person": {"phones": ["415-867-5309"], "name": "Ada Lovelace"},
  "activity": {
    "id": "dialer-991",
    "type": "call",
    "status": "completed",
    "direction": "outbound",
    "start_at": "2026-03-02T09:55:00Z",
    "end_at": "2026-03-02T10:00:00Z",
    "duration_sec": 300,
    "deal_id": "D-17"
  }
}`

const sampleEmail = `{
  "schema": "crmsync.generic/v1",
  "type": "activity",
  "occurred_at": "2026-03-02T12:00:00Z",
  "person": {"emails": ["grace@example.org"]},
  "activity": {"id": "<CAF=abc@Mail.Example.ORG>", "type": "email", "direction": "inbound", "subject": "Hello"}
}`

func parseReq(body, id string, received time.Time) *connector.Request {
	return &connector.Request{
		Method:     "POST",
		Headers:    map[string]string{"webhook-id": id},
		Body:       []byte(body),
		ReceivedAt: received,
	}
}

func TestParse(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 10, 15, 0, 0, time.UTC)
	start := time.Date(2026, 3, 2, 9, 55, 0, 0, time.UTC)
	end := start.Add(5 * time.Minute)
	tests := []struct {
		name string
		body string
		want canonical.Event
	}{
		{
			name: "lead",
			body: sampleLead,
			want: canonical.Event{
				Key:        "generic:msg_1",
				Source:     "generic",
				Kind:       canonical.KindLeadSubmitted,
				OccurredAt: t0,
				GroupKey:   "email:ada.lovelace@example.com",
				Subject: canonical.Person{
					Emails: []string{"ada.lovelace@example.com"},
					Phones: []string{"+14158675309"},
					Name:   "Ada Lovelace",
				},
				Fields: map[string]map[string]string{"contact": {
					"first_name": "Ada", "last_name": "Lovelace", "email": "ada.lovelace@example.com",
					"phone": "+14158675309", "company": "Analytical Engines Ltd", "job_title": "CTO",
					"lead_source": "generic", "campaign": "spring-launch", "utm_source": "google",
					"utm_medium": "cpc", "utm_campaign": "spring", "utm_term": "crm sync", "utm_content": "ad-a",
				}},
				Activity: &canonical.Activity{
					ID: "form:lp-4711", Type: "form", Status: "submitted",
					Participants: []canonical.Participant{
						{Role: "from", Email: "ada.lovelace@example.com", Name: "Ada Lovelace"},
						{Role: "from", Phone: "+14158675309", Name: "Ada Lovelace"},
					},
				},
				ExternalIDs:    map[string]string{"webhook_id": "msg_1", "external_id": "lp-4711"},
				MappingVersion: "generic/1",
				PayloadHash:    canonical.PayloadHash([]byte(sampleLead)),
				Unmapped:       []string{"landing_page", "person.emails[1]", "person.nickname"},
			},
		},
		{
			name: "call activity",
			body: sampleCall,
			want: canonical.Event{
				Key:        "generic:msg_1",
				Source:     "generic",
				Kind:       canonical.KindCallStatus,
				OccurredAt: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC),
				GroupKey:   "phone:+14158675309",
				Subject:    canonical.Person{Phones: []string{"+14158675309"}, Name: "Ada Lovelace"},
				Fields: map[string]map[string]string{"contact": {
					"phone": "+14158675309", "last_activity_at": "2026-03-02T10:00:00Z",
				}},
				Activity: &canonical.Activity{
					ID: "call:dialer-991", Type: "call", Status: "completed", Direction: "outbound",
					StartAt: &start, EndAt: &end, DurationSec: 300, DealID: "D-17",
					Participants: []canonical.Participant{{Role: "callee", Phone: "+14158675309", Name: "Ada Lovelace"}},
				},
				ExternalIDs:    map[string]string{"webhook_id": "msg_1"},
				MappingVersion: "generic/1",
				PayloadHash:    canonical.PayloadHash([]byte(sampleCall)),
			},
		},
		{
			name: "email activity",
			body: sampleEmail,
			want: canonical.Event{
				Key:        "generic:msg_1",
				Source:     "generic",
				Kind:       canonical.KindEmailReceived,
				OccurredAt: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC),
				GroupKey:   "email:grace@example.org",
				Subject:    canonical.Person{Emails: []string{"grace@example.org"}},
				Fields: map[string]map[string]string{"contact": {
					"email": "grace@example.org", "last_activity_at": "2026-03-02T12:00:00Z",
				}},
				Activity: &canonical.Activity{
					ID: "email:caf=abc@mail.example.org", Type: "email", Direction: "inbound", Subject: "Hello",
					Participants: []canonical.Participant{{Role: "from", Email: "grace@example.org"}},
				},
				ExternalIDs:    map[string]string{"webhook_id": "msg_1"},
				MappingVersion: "generic/1",
				PayloadHash:    canonical.PayloadHash([]byte(sampleEmail)),
			},
		},
	}
	c := New()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.Parse(parseReq(tt.body, "msg_1", t0), connector.Secret{})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got, want := len(p.Events), 1; got != want {
				t.Fatalf("events: got %d, want %d", got, want)
			}
			if diff := cmp.Diff(tt.want, p.Events[0]); diff != "" {
				t.Errorf("event mismatch (-want +got):\n%s", diff)
			}
			if err := p.Events[0].Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseMeetingAndNoteKinds(t *testing.T) {
	tests := []struct {
		activity string
		kind     canonical.Kind
		status   string
		id       string
	}{
		{`{"id":"m1","type":"meeting"}`, canonical.KindMeetingScheduled, "scheduled", "meeting:m1"},
		{`{"id":"meeting:m1","type":"meeting","status":"Cancelled"}`, canonical.KindMeetingCanceled, "canceled", "meeting:m1"},
		{`{"id":"n1","type":"note","subject":"called back"}`, KindNote, "", "note:n1"},
		{`{"id":"e1","type":"email"}`, canonical.KindEmailEvent, "", "email:e1"},
	}
	for _, tt := range tests {
		body := `{"schema":"crmsync.generic/v1","type":"activity","occurred_at":"2026-03-02T12:00:00Z","activity":` + tt.activity + `}`
		p, err := New().Parse(parseReq(body, "msg_2", time.Now()), connector.Secret{})
		if err != nil {
			t.Fatalf("Parse(%s): %v", tt.activity, err)
		}
		ev := p.Events[0]
		if ev.Kind != tt.kind || ev.Activity.Status != tt.status || ev.Activity.ID != tt.id {
			t.Errorf("Parse(%s): got kind %q status %q id %q; want %q %q %q", tt.activity,
				ev.Kind, ev.Activity.Status, ev.Activity.ID, tt.kind, tt.status, tt.id)
		}
		if got, want := ev.GroupKey, "generic:"+tt.id; got != want {
			t.Errorf("GroupKey: got %q, want %q", got, want)
		}
	}
}

func TestParseUnusable(t *testing.T) {
	tests := []struct {
		name string
		body string
		id   string
	}{
		{"not json", `nope`, "m"},
		{"json array", `[]`, "m"},
		{"null", `null`, "m"},
		{"unknown version", `{"schema":"crmsync.generic/v2","type":"lead","occurred_at":"2026-03-02T12:00:00Z","person":{"emails":["a@b.co"]}}`, "m"},
		{"no schema", `{"type":"lead","occurred_at":"2026-03-02T12:00:00Z","person":{"emails":["a@b.co"]}}`, "m"},
		{"missing occurred_at", `{"schema":"crmsync.generic/v1","type":"lead","person":{"emails":["a@b.co"]}}`, "m"},
		{"bad occurred_at", `{"schema":"crmsync.generic/v1","type":"lead","occurred_at":"yesterday","person":{"emails":["a@b.co"]}}`, "m"},
		{"lead without identity", `{"schema":"crmsync.generic/v1","type":"lead","occurred_at":"2026-03-02T12:00:00Z","person":{"emails":["nope"]}}`, "m"},
		{"unknown type", `{"schema":"crmsync.generic/v1","type":"deal","occurred_at":"2026-03-02T12:00:00Z"}`, "m"},
		{"activity without id", `{"schema":"crmsync.generic/v1","type":"activity","occurred_at":"2026-03-02T12:00:00Z","activity":{"type":"call"}}`, "m"},
		{"activity bad type", `{"schema":"crmsync.generic/v1","type":"activity","occurred_at":"2026-03-02T12:00:00Z","activity":{"id":"x","type":"sms"}}`, "m"},
		{"activity bad start", `{"schema":"crmsync.generic/v1","type":"activity","occurred_at":"2026-03-02T12:00:00Z","activity":{"id":"x","type":"call","start_at":"noon"}}`, "m"},
		{"activity bad direction", `{"schema":"crmsync.generic/v1","type":"activity","occurred_at":"2026-03-02T12:00:00Z","activity":{"id":"x","type":"call","direction":"sideways"}}`, "m"},
		{"wrong field type", `{"schema":"crmsync.generic/v1","type":"lead","occurred_at":"2026-03-02T12:00:00Z","person":{"emails":"a@b.co"}}`, "m"},
		{"missing webhook-id", sampleLead, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New().Parse(parseReq(tt.body, tt.id, time.Now()), connector.Secret{})
			if !errors.Is(err, connector.ErrUnusable) {
				t.Fatalf("Parse: got %v, want ErrUnusable", err)
			}
		})
	}
}

func TestKeyStability(t *testing.T) {
	c := New()
	a, err := c.Parse(parseReq(sampleLead, "msg_9", time.Unix(1, 0)), connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Parse(parseReq(sampleLead, "msg_9", time.Unix(99999, 0)), connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Fatalf("retry parsed differently (-first +second):\n%s", diff)
	}
}

// The JSON example in docs/connectors/generic.md must parse, and the JSON Schema must be JSON.
func TestDocs(t *testing.T) {
	md, err := os.ReadFile("../../../docs/connectors/generic.md")
	if err != nil {
		t.Fatalf("docs/connectors/generic.md: %v", err)
	}
	blocks := strings.Split(string(md), "```json\n")
	if len(blocks) < 2 {
		t.Fatal("generic.md: no json example")
	}
	for i, blk := range blocks[1:] {
		example, _, _ := strings.Cut(blk, "```")
		if _, err := New().Parse(parseReq(example, "msg_doc", time.Now()), connector.Secret{}); err != nil {
			t.Errorf("generic.md example %d: %v", i+1, err)
		}
	}
	schema, err := os.ReadFile("../../../docs/connectors/generic.schema.json")
	if err != nil {
		t.Fatalf("schema: %v", err)
	}
	var v map[string]any
	if err := json.Unmarshal(schema, &v); err != nil {
		t.Fatalf("generic.schema.json is not JSON: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(vecID, vecTS, vecSig, []byte(vecBody))
	f.Add("", "", "", []byte{})
	f.Add("x", "-99999999999999999999", "v1, v1,,,", []byte("{"))
	f.Add(vecID, "1614265330", "v1,!!!", []byte(vecBody))
	sec := connector.Secret{Current: map[string]string{"signing_key": vecSecret}}
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		req := &connector.Request{Headers: map[string]string{
			"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig,
		}, Body: body}
		_, err := New().Verify(req, sec, vecNow)
		if err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
			t.Fatalf("Verify: error %v does not wrap ErrUnauthenticated", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{sampleLead, sampleCall, sampleEmail, vecBody, `{}`, `null`, `{"schema":"crmsync.generic/v1"}`,
		`{"schema":"crmsync.generic/v1","type":"activity","occurred_at":"2026-03-02T12:00:00Z","activity":{"id":"<>","type":"email"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := New().Parse(parseReq(string(body), "msg_f", time.Now()), connector.Secret{})
		if err != nil {
			if !errors.Is(err, connector.ErrUnusable) {
				t.Fatalf("Parse: error %v does not wrap ErrUnusable", err)
			}
			return
		}
		for _, ev := range p.Events {
			if err := ev.Validate(); err != nil {
				t.Fatalf("Parse produced an invalid event: %v", err)
			}
		}
	})
}
