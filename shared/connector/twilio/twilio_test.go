package twilio

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

const vectorURL = "https://mycompany.com/myapp.php?foo=1&bar=2"

func vectorParams1() url.Values {
	return url.Values{
		"CallSid": {"CA1234567890ABCDE"}, "Caller": {"+12349013030"}, "Digits": {"1234"},
		"From": {"+12349013030"}, "To": {"+18005551212"},
	}
}

func vectorParams2() url.Values {
	return url.Values{
		"Digits": {"1234"}, "CallSid": {"CA1234567890ABCDE"}, "To": {"+18005551212"},
		"Caller": {"+14158675309"}, "From": {"+14158675309"},
	}
}

func vectorParams3() url.Values {
	p := vectorParams2()
	p.Set("ReasonConferenceEnded", "test")
	p.Set("Reason", "Participant")
	return p
}

func secret(cur, prev string) connector.Secret {
	s := connector.Secret{Current: map[string]string{SecretAuthToken: cur}}
	if prev != "" {
		s.Previous = map[string]string{SecretAuthToken: prev}
	}
	return s
}

func formReq(u string, p url.Values, sig string) *connector.Request {
	h := map[string]string{"content-type": "application/x-www-form-urlencoded"}
	if sig != "" {
		h[headerSignature] = sig
	}
	return &connector.Request{Method: "POST", Path: "/webhooks/twilio", Headers: h, Body: []byte(p.Encode()), PublicURL: u}
}

func TestPublishedVectors(t *testing.T) {
	c := New()
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name string
		url  string
		p    url.Values
		sig  string
	}{
		{"docs example", vectorURL, vectorParams1(), "0/KCTR6DLpKmkAf8muzZqo1nDgQ="},
		{"second set", vectorURL, vectorParams2(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="},
		{"prefix names https", vectorURL, vectorParams3(), "vOEb5UThFn24KEfnOFLQY2AE5FY="},
		{"prefix names http", strings.Replace(vectorURL, "https", "http", 1), vectorParams3(), "n2xBNyzSW7rfYStDtOFiFMv7qNo="},
		{"explicit :443", "https://mycompany.com:443/myapp.php?foo=1&bar=2", vectorParams1(), "0/KCTR6DLpKmkAf8muzZqo1nDgQ="},
		{"explicit :80", "http://mycompany.com:80/myapp.php?foo=1&bar=2", vectorParams3(), "n2xBNyzSW7rfYStDtOFiFMv7qNo="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Verify(formReq(tt.url, tt.p, tt.sig), secret("12345", ""), now); err != nil {
				t.Errorf("Verify() = %v, want nil", err)
			}
			// The signer produces the same signature for the URL as given (no port toggling).
			if !strings.Contains(tt.url, ":443") && !strings.Contains(tt.url, ":80") {
				r := formReq(tt.url, tt.p, "")
				if err := c.Sign(r, secret("12345", ""), now); err != nil {
					t.Fatal(err)
				}
				if got := r.Headers[headerSignature]; got != tt.sig {
					t.Errorf("Sign() = %q, want %q", got, tt.sig)
				}
			}
		})
	}
}

func TestSortByNameNotByJoinedString(t *testing.T) {
	// "Reason"+"Participant" sorts after "ReasonConferenceEnded"+"test" as a joined string, but
	// before it by name.
	got := SortedParams(url.Values{"ReasonConferenceEnded": {"test"}, "Reason": {"Participant"}})
	if want := "ReasonParticipantReasonConferenceEndedtest"; got != want {
		t.Errorf("SortedParams() = %q, want %q", got, want)
	}
}

func TestURLVariants(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"https://a.example/x?y=1", []string{"https://a.example/x?y=1", "https://a.example:443/x?y=1"}},
		{"https://a.example:443/x", []string{"https://a.example:443/x", "https://a.example/x"}},
		{"http://a.example?q", []string{"http://a.example?q", "http://a.example:80?q"}},
		{"http://u:p@a.example:80/", []string{"http://u:p@a.example:80/", "http://u:p@a.example/"}},
		{"https://a.example:8443/x", []string{"https://a.example:8443/x"}},
		{"https://[::1]/x", []string{"https://[::1]/x", "https://[::1]:443/x"}},
		{"not a url", []string{"not a url"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, URLVariants(tt.in)); diff != "" {
			t.Errorf("URLVariants(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestVerify(t *testing.T) {
	c := New()
	now := time.Unix(1700000000, 0)
	p := statusParams()
	signed := func(tok string) *connector.Request {
		r := formReq("https://api.example.com/webhooks/twilio", p, "")
		if err := c.Sign(r, secret(tok, ""), now); err != nil {
			t.Fatal(err)
		}
		return r
	}
	tampered := signed("cur")
	tampered.Body = []byte(strings.Replace(string(tampered.Body), "completed", "failed", 1))
	otherURL := signed("cur")
	otherURL.PublicURL += "?x=1"
	missing := signed("cur")
	delete(missing.Headers, headerSignature)
	garbage := signed("cur")
	garbage.Headers[headerSignature] = "!!!"

	tests := []struct {
		name    string
		req     *connector.Request
		sec     connector.Secret
		wantErr bool
	}{
		{"valid current", signed("cur"), secret("cur", "old"), false},
		{"valid previous after rotation", signed("old"), secret("cur", "old"), false},
		{"wrong secret", signed("nope"), secret("cur", "old"), true},
		{"tampered body", tampered, secret("cur", ""), true},
		{"other URL", otherURL, secret("cur", ""), true},
		{"missing header", missing, secret("cur", ""), true},
		{"malformed header", garbage, secret("cur", ""), true},
		{"no secret configured", signed("cur"), connector.Secret{}, true},
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
			if err != nil && strings.Contains(err.Error(), tt.req.Headers[headerSignature]) && tt.req.Headers[headerSignature] != "" {
				t.Errorf("error %q echoes the signature", err)
			}
		})
	}
}

func TestVerifyJSONBodySHA256(t *testing.T) {
	c := New()
	now := time.Unix(1700000000, 0)
	body := `{"property": "value", "boolean": true}`
	// Twilio's own library test vector for bodySHA256.
	u := vectorURL + "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
	req := &connector.Request{
		Headers:   map[string]string{"content-type": "application/json", headerSignature: "a9nBmqA0ju/hNViExpshrM61xv4="},
		Body:      []byte(body),
		PublicURL: u,
	}
	if _, err := c.Verify(req, secret("12345", ""), now); err != nil {
		t.Errorf("Verify(vector) = %v, want nil", err)
	}
	port := *req
	port.PublicURL = strings.Replace(u, "mycompany.com", "mycompany.com:443", 1)
	if _, err := c.Verify(&port, secret("12345", ""), now); err != nil {
		t.Errorf("Verify(vector with :443) = %v, want nil", err)
	}
	tampered := *req
	tampered.Body = []byte(`{"property": "other", "boolean": true}`)
	if _, err := c.Verify(&tampered, secret("12345", ""), now); !errors.Is(err, connector.ErrUnauthenticated) {
		t.Errorf("Verify(tampered) = %v, want ErrUnauthenticated", err)
	}

	// The signer appends bodySHA256 and signs the URL alone.
	r := &connector.Request{Headers: map[string]string{"content-type": "application/json"}, Body: []byte(body), PublicURL: vectorURL, RawQuery: "foo=1&bar=2"}
	if err := c.Sign(r, secret("12345", ""), now); err != nil {
		t.Fatal(err)
	}
	if r.PublicURL != u || r.Headers[headerSignature] != "a9nBmqA0ju/hNViExpshrM61xv4=" || r.Query.Get("bodySHA256") == "" {
		t.Errorf("Sign(json) = %q %q, want %q a9nBmqA0ju/hNViExpshrM61xv4=", r.PublicURL, r.Headers[headerSignature], u)
	}
}

func statusParams() url.Values {
	return url.Values{
		"AccountSid":     {"AC0123456789abcdef0123456789abcdef"},
		"ApiVersion":     {"2010-04-01"},
		"CallSid":        {"CA11111111111111111111111111111111"},
		"CallStatus":     {"completed"},
		"CallDuration":   {"42"},
		"Direction":      {"outbound-api"},
		"From":           {"+14155550100"},
		"To":             {"(415) 555-0199"},
		"Caller":         {"+14155550100"},
		"Called":         {"+14155550199"},
		"SequenceNumber": {"3"},
		"CallbackSource": {"call-progress-events"},
		"Timestamp":      {"Tue, 14 Nov 2023 22:13:20 +0000"},
		"RecordingUrl":   {"https://api.twilio.com/rec/RE1"},
		"ToCity":         {"SAN FRANCISCO"},
	}
}

func TestParse(t *testing.T) {
	c := New()
	recv := time.Date(2023, 11, 14, 22, 13, 25, 0, time.UTC)
	occurred := time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)

	inbound := statusParams()
	inbound.Set("Direction", "inbound")
	inbound.Del("SequenceNumber")
	inbound.Del("Timestamp")
	inbound.Set("CallStatus", "ringing")
	inbound.Set("CallerName", "Jane Doe")

	tests := []struct {
		name string
		p    url.Values
		want canonical.Event
	}{
		{
			name: "outbound completed with sequence number",
			p:    statusParams(),
			want: canonical.Event{
				Key: "twilio:call:CA11111111111111111111111111111111:3", Source: "twilio",
				Kind: canonical.KindCallStatus, OccurredAt: occurred, GroupKey: "phone:+14155550199",
				Subject: canonical.Person{Phones: []string{"+14155550199"}},
				Actor:   &canonical.Actor{ID: "twilio:AC0123456789abcdef0123456789abcdef", Type: "vendor"},
				Fields: map[string]map[string]string{"contact": {
					"phone": "+14155550199", "last_call_status": "completed", "last_activity_at": "2023-11-14T22:13:20Z",
				}},
				Activity: &canonical.Activity{
					ID: "call:CA11111111111111111111111111111111", Type: "call", Status: "completed",
					Direction: "outbound", DurationSec: 42,
					Participants: []canonical.Participant{{Role: "caller", Phone: "+14155550100"}, {Role: "callee", Phone: "+14155550199"}},
					Attrs: map[string]string{"twilio_direction": "outbound-api", "callback_source": "call-progress-events", "sequence_number": "3",
						"leg_status.CA11111111111111111111111111111111": "completed"},
				},
				ExternalIDs:    map[string]string{"call_sid": "CA11111111111111111111111111111111", "account_sid": "AC0123456789abcdef0123456789abcdef"},
				MappingVersion: "twilio/1",
				Unmapped:       []string{"RecordingUrl"},
			},
		},
		{
			name: "inbound ringing without sequence number or timestamp",
			p:    inbound,
			want: canonical.Event{
				Key: "twilio:call:CA11111111111111111111111111111111:ringing", Source: "twilio",
				Kind: canonical.KindCallStatus, OccurredAt: recv, GroupKey: "phone:+14155550100",
				Subject: canonical.Person{Phones: []string{"+14155550100"}, Name: "Jane Doe"},
				Actor:   &canonical.Actor{ID: "twilio:AC0123456789abcdef0123456789abcdef", Type: "vendor"},
				Fields: map[string]map[string]string{"contact": {
					"phone": "+14155550100", "last_call_status": "ringing", "last_activity_at": "2023-11-14T22:13:25Z",
				}},
				Activity: &canonical.Activity{
					ID: "call:CA11111111111111111111111111111111", Type: "call", Status: "ringing",
					Direction: "inbound", DurationSec: 42,
					Participants: []canonical.Participant{{Role: "caller", Phone: "+14155550100"}, {Role: "callee", Phone: "+14155550199"}},
					Attrs: map[string]string{"twilio_direction": "inbound", "callback_source": "call-progress-events",
						"leg_status.CA11111111111111111111111111111111": "ringing"},
				},
				ExternalIDs:    map[string]string{"call_sid": "CA11111111111111111111111111111111", "account_sid": "AC0123456789abcdef0123456789abcdef"},
				MappingVersion: "twilio/1",
				Unmapped:       []string{"RecordingUrl"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := formReq("https://x/webhooks/twilio", tt.p, "")
			req.ReceivedAt = recv
			got, err := c.Parse(req, connector.Secret{})
			if err != nil {
				t.Fatalf("Parse() = %v", err)
			}
			if len(got.Events) != 1 {
				t.Fatalf("got %d events, want 1", len(got.Events))
			}
			ev := got.Events[0]
			if err := ev.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
			tt.want.PayloadHash = canonical.PayloadHash([]byte(tt.p.Encode()))
			if diff := cmp.Diff(tt.want, ev); diff != "" {
				t.Errorf("Parse() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseJSON(t *testing.T) {
	body := `{"CallSid":"CA1","CallStatus":"busy","Direction":"inbound","From":"+14155550100","To":"+14155550199","CallDuration":0,"Extra":{"a":1},"Timestamp":"Tue, 14 Nov 2023 22:13:20 +0000"}`
	req := &connector.Request{Headers: map[string]string{"content-type": "application/json"}, Body: []byte(body)}
	got, err := New().Parse(req, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	ev := got.Events[0]
	if ev.Key != "twilio:call:CA1:busy" || ev.GroupKey != "phone:+14155550100" || ev.PayloadHash != canonical.PayloadHash([]byte(body)) {
		t.Errorf("got key %q group %q hash %q", ev.Key, ev.GroupKey, ev.PayloadHash)
	}
	if diff := cmp.Diff([]string{"Extra"}, ev.Unmapped); diff != "" {
		t.Errorf("Unmapped (-want +got):\n%s", diff)
	}
}

func TestParseUnusable(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"no CallSid", "CallStatus=completed"},
		{"no status or sequence", "CallSid=CA1"},
		{"bad escape", "CallSid=%zz"},
		{"json array", "[1,2]"},
		{"no time at all", "CallSid=CA1&CallStatus=completed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &connector.Request{Body: []byte(tt.body)} // zero ReceivedAt
			if _, err := New().Parse(req, connector.Secret{}); !errors.Is(err, connector.ErrUnusable) {
				t.Errorf("Parse() = %v, want ErrUnusable", err)
			}
		})
	}
}

func TestKeyStability(t *testing.T) {
	c := New()
	p := statusParams()
	p.Del("Timestamp")
	a := formReq("https://x", p, "")
	a.ReceivedAt = time.Unix(1700000000, 0)
	// A retry: same parameters in another order, later receipt.
	b := &connector.Request{Body: []byte("To=%28415%29+555-0199&" + strings.Replace(p.Encode(), "&To=%28415%29+555-0199", "", 1)), ReceivedAt: time.Unix(1700000100, 0)}
	pa, err := c.Parse(a, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := c.Parse(b, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	ea, eb := pa.Events[0], pb.Events[0]
	if ea.Key != eb.Key || ea.GroupKey != eb.GroupKey || ea.PayloadHash != eb.PayloadHash {
		t.Errorf("retry differs: %q/%q/%q vs %q/%q/%q", ea.Key, ea.GroupKey, ea.PayloadHash, eb.Key, eb.GroupKey, eb.PayloadHash)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(vectorParams1().Encode()), vectorURL, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
	f.Add([]byte(`{"a":1}`), vectorURL+"&bodySHA256=00", "AAAA")
	f.Add([]byte("%zz"), "https://[::1", "")
	f.Add([]byte{}, "", "=")
	f.Fuzz(func(t *testing.T, body []byte, u, sig string) {
		req := &connector.Request{Headers: map[string]string{headerSignature: sig}, Body: body, PublicURL: u}
		_, err := New().Verify(req, secret("12345", "old"), time.Unix(0, 0))
		if err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
			t.Errorf("Verify() = %v, want nil or ErrUnauthenticated", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(statusParams().Encode()), "application/x-www-form-urlencoded")
	f.Add([]byte(`{"CallSid":"CA1","CallStatus":"busy","X":[1]}`), "application/json")
	f.Add([]byte("CallSid=CA1&SequenceNumber=0&Timestamp=garbage&CallDuration=-5"), "")
	f.Add([]byte("{"), "application/json")
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		req := &connector.Request{Headers: map[string]string{"content-type": ct}, Body: body, ReceivedAt: time.Unix(1700000000, 0)}
		got, err := New().Parse(req, connector.Secret{})
		if err != nil {
			if !errors.Is(err, connector.ErrUnusable) {
				t.Errorf("Parse() = %v, want ErrUnusable", err)
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
