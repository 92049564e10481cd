package mailgun

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

const sampleEventData = `{
    "id": "CPgfbmQMTCKtHW6uIWtuVe",
    "timestamp": 1700000000.123456,
    "log-level": "info",
    "event": "delivered",
    "recipient": "Jane.Doe@Example.com",
    "recipient-domain": "example.com",
    "tags": ["demo"],
    "user-variables": {"deal_id": "D42"},
    "envelope": {"sender": "rep@corp.example", "transport": "smtp"},
    "delivery-status": {"code": 250, "message": "OK", "attempt-no": 1},
    "message": {"headers": {"message-id": "<20231114.ABC@Corp.Example>", "from": "Rep One <rep@corp.example>", "to": "jane.doe@example.com", "subject": "Your demo"}, "size": 1234},
    "flags": {"is-test-mode": false}
  }`

func body(ts, token, sig string) string {
	return `{"signature": {"timestamp": "` + ts + `", "token": "` + token + `", "signature": "` + sig + `"}, "event-data": ` + sampleEventData + `}`
}

func sec(cur, prev string) connector.Secret {
	s := connector.Secret{Current: map[string]string{SecretSigningKey: cur}}
	if prev != "" {
		s.Previous = map[string]string{SecretSigningKey: prev}
	}
	return s
}

func signed(t *testing.T, key string, at time.Time) *connector.Request {
	t.Helper()
	r := &connector.Request{Headers: map[string]string{"content-type": "application/json"}, Body: []byte(`{"event-data": ` + sampleEventData + `}`)}
	if err := New().Sign(r, sec(key, ""), at); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestKnownValue(t *testing.T) {
	// printf '1700000000abc' | openssl dgst -sha256 -hmac key
	r := &connector.Request{Body: []byte(body("1700000000", "abc", "bd2f1af294b8152534265a2dada145799d31c54cb9bab55bf4ea75be1770a0e3"))}
	got, err := New().Verify(r, sec("key", ""), time.Unix(1700000000, 0))
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	want := connector.Verified{Nonce: "mailgun:abc", NonceExpires: time.Unix(1700000000, 0).Add(5*time.Minute + time.Hour)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Verify() (-want +got):\n%s", diff)
	}
	// A numeric timestamp is accepted too.
	r.Body = []byte(strings.Replace(string(r.Body), `"1700000000"`, `1700000000`, 1))
	if _, err := New().Verify(r, sec("key", ""), time.Unix(1700000000, 0)); err != nil {
		t.Errorf("Verify(numeric timestamp) = %v", err)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tamperedSig := signed(t, "cur", now)
	tamperedSig.Body = []byte(strings.Replace(string(tamperedSig.Body), `"token":"`, `"token":"x`, 1))
	noSig := &connector.Request{Body: []byte(`{"event-data": ` + sampleEventData + `}`)}
	notJSON := &connector.Request{Body: []byte(`nope`)}

	tests := []struct {
		name      string
		req       *connector.Request
		sec       connector.Secret
		wantErr   bool
		wantNonce bool
	}{
		{"valid current", signed(t, "cur", now), sec("cur", "old"), false, true},
		{"valid previous after rotation", signed(t, "old", now), sec("cur", "old"), false, true},
		{"4m59s old", signed(t, "cur", now.Add(-299*time.Second)), sec("cur", ""), false, true},
		{"wrong secret", signed(t, "other", now), sec("cur", "old"), true, false},
		{"tampered token", tamperedSig, sec("cur", ""), true, false},
		{"missing signature", noSig, sec("cur", ""), true, false},
		{"not JSON", notJSON, sec("cur", ""), true, false},
		{"expired", signed(t, "cur", now.Add(-301*time.Second)), sec("cur", ""), true, false},
		{"future", signed(t, "cur", now.Add(301*time.Second)), sec("cur", ""), true, false},
		{"no key configured", signed(t, "cur", now), connector.Secret{}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := New().Verify(tt.req, tt.sec, now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Verify() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
				t.Errorf("Verify() = %v, want ErrUnauthenticated", err)
			}
			if tt.wantNonce {
				var b struct{ Signature signature }
				_ = json.Unmarshal(tt.req.Body, &b)
				if got.Nonce != "mailgun:"+b.Signature.Token || got.NonceExpires.IsZero() {
					t.Errorf("Verify() nonce = %q until %v, want mailgun:%s", got.Nonce, got.NonceExpires, b.Signature.Token)
				}
			}
		})
	}
}

func TestSignKeepsTokenAndEventData(t *testing.T) {
	r := &connector.Request{Body: []byte(body("1", "tok123", "x"))}
	if err := New().Sign(r, sec("key", ""), time.Unix(1700000000, 0)); err != nil {
		t.Fatal(err)
	}
	got, err := New().Verify(r, sec("key", ""), time.Unix(1700000000, 0))
	if err != nil || got.Nonce != "mailgun:tok123" {
		t.Errorf("Verify(signed) = %+v, %v; want nonce mailgun:tok123", got, err)
	}
	p, err := New().Parse(r, connector.Secret{})
	if err != nil || p.Events[0].Key != "mailgun:CPgfbmQMTCKtHW6uIWtuVe" {
		t.Errorf("Parse(signed) = %v", err)
	}
}

func TestParse(t *testing.T) {
	occurred := time.Date(2023, 11, 14, 22, 13, 20, 123456000, time.UTC)
	clicked := `{"event-data":{"id":"EV2","timestamp":1700000000.5,"event":"clicked","recipient":"jane.doe@example.com","url":"https://corp.example/pricing",
	  "geolocation":{"country":"US"},"message":{"headers":{"message-id":"abc@corp.example"}}}}`
	tests := []struct {
		name string
		body string
		want canonical.Event
	}{
		{
			name: "delivered",
			body: body("1700000000", "t", "s"),
			want: canonical.Event{
				Key: "mailgun:CPgfbmQMTCKtHW6uIWtuVe", Source: "mailgun", Kind: canonical.KindEmailEvent,
				OccurredAt: occurred, GroupKey: "email:jane.doe@example.com",
				Subject: canonical.Person{Emails: []string{"jane.doe@example.com"}},
				Actor:   &canonical.Actor{Email: "rep@corp.example", Role: "sender", Type: "user"},
				Activity: &canonical.Activity{
					ID: "email:20231114.abc@corp.example", Type: "email", Status: "delivered", Direction: "outbound",
					Subject: "Your demo",
					Participants: []canonical.Participant{
						{Role: "from", Email: "rep@corp.example"}, {Role: "to", Email: "jane.doe@example.com"},
					},
					Attrs: map[string]string{"mailgun_event_id": "CPgfbmQMTCKtHW6uIWtuVe", "delivery_status_code": "250",
						"recipient_status.jane.doe@example.com": "delivered"},
				},
				ExternalIDs:    map[string]string{"event_id": "CPgfbmQMTCKtHW6uIWtuVe", "message_id": "20231114.abc@corp.example"},
				MappingVersion: "mailgun/2",
				PayloadHash:    canonical.PayloadHash([]byte(sampleEventData)),
				Unmapped:       []string{"event-data.user-variables"},
			},
		},
		{
			name: "clicked",
			body: clicked,
			want: canonical.Event{
				Key: "mailgun:EV2", Source: "mailgun", Kind: canonical.KindEmailEvent,
				OccurredAt: time.Date(2023, 11, 14, 22, 13, 20, 500000000, time.UTC), GroupKey: "email:jane.doe@example.com",
				Subject: canonical.Person{Emails: []string{"jane.doe@example.com"}},
				Fields:  map[string]map[string]string{"contact": {"last_activity_at": "2023-11-14T22:13:20Z"}},
				Activity: &canonical.Activity{
					ID: "email:abc@corp.example", Type: "email", Status: "clicked", Direction: "outbound",
					Participants: []canonical.Participant{{Role: "to", Email: "jane.doe@example.com"}},
					Attrs: map[string]string{"mailgun_event_id": "EV2", "url": "https://corp.example/pricing",
						"recipient_status.jane.doe@example.com": "clicked"},
				},
				ExternalIDs:    map[string]string{"event_id": "EV2", "message_id": "abc@corp.example"},
				MappingVersion: "mailgun/2",
				PayloadHash: canonical.PayloadHash([]byte(`{"id":"EV2","timestamp":1700000000.5,"event":"clicked","recipient":"jane.doe@example.com","url":"https://corp.example/pricing",
	  "geolocation":{"country":"US"},"message":{"headers":{"message-id":"abc@corp.example"}}}`)),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := New().Parse(&connector.Request{Body: []byte(tt.body), ReceivedAt: time.Unix(1700000100, 0)}, connector.Secret{})
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
		{"not JSON", "{"},
		{"no event-data", `{"signature":{}}`},
		{"no id", `{"event-data":{"event":"opened","timestamp":1,"message":{"headers":{"message-id":"m"}}}}`},
		{"no event", `{"event-data":{"id":"E","timestamp":1,"message":{"headers":{"message-id":"m"}}}}`},
		{"no message-id", `{"event-data":{"id":"E","event":"opened","timestamp":1}}`},
		{"bad timestamp type", `{"event-data":{"id":"E","event":"opened","timestamp":"soon","message":{"headers":{"message-id":"m"}}}}`},
		{"no time", `{"event-data":{"id":"E","event":"opened","message":{"headers":{"message-id":"m"}}}}`},
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
	// A retry carries the same event-data; its signature object may differ.
	a, err := New().Parse(&connector.Request{Body: []byte(body("1700000000", "t1", "s1")), ReceivedAt: time.Unix(1, 0)}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New().Parse(&connector.Request{Body: []byte(body("1700000600", "t2", "s2")), ReceivedAt: time.Unix(99999, 0)}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("retry differs (-first +second):\n%s", diff)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(body("1700000000", "abc", "bd2f1af294b8152534265a2dada145799d31c54cb9bab55bf4ea75be1770a0e3")))
	f.Add([]byte(`{"signature":{"timestamp":-1,"token":"a","signature":"zz"}}`))
	f.Add([]byte(`{"signature":{"timestamp":"99999999999999999999","token":"a","signature":"00"}}`))
	f.Add([]byte(`{"signature":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := New().Verify(&connector.Request{Body: b}, sec("key", "old"), time.Unix(1700000000, 0)); err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
			t.Errorf("Verify() = %v", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(body("1", "t", "s")))
	f.Add([]byte(`{"event-data":{"id":"E","event":"failed","timestamp":1e300,"delivery-status":{"code":"x"},"message":{"headers":{"message-id":"<>"}}}}`))
	f.Add([]byte(`{"event-data":{"id":"E","event":"opened","timestamp":-5,"message":{"headers":null}}}`))
	f.Add([]byte(`{"event-data":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := New().Parse(&connector.Request{Body: b, ReceivedAt: time.Unix(1700000000, 0)}, connector.Secret{})
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
