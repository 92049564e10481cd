package metaleads

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

const (
	appSecret  = "meta-app-secret-current"
	prevSecret = "meta-app-secret-previous"
)

const sampleDelivery = `{"object":"page","entry":[` +
	`{"id":"153125381133","time":1740000000,"changes":[` +
	`{"field":"leadgen","value":{"leadgen_id":"444444444444","page_id":"153125381133","form_id":"555555","adgroup_id":"666666","ad_id":"777777","created_time":1740000000}},` +
	`{"field":"leadgen","value":{"leadgen_id":888888888888,"page_id":153125381133,"form_id":"555555","created_time":"1740000060","is_organic":true}}]},` +
	`{"id":"153125381133","time":1740000100,"changes":[{"field":"feed","value":{"item":"status"}}]}]}`

func signed(body string, secret string) *connector.Request {
	req := &connector.Request{
		Method:  "POST",
		Path:    "/webhooks/meta-leads",
		Headers: map[string]string{"content-type": "application/json"},
		Body:    []byte(body),
	}
	sec := connector.Secret{Current: map[string]string{"app_secret": secret}}
	if err := New().Sign(req, sec, time.Time{}); err != nil {
		panic(err)
	}
	return req
}

func TestVerify(t *testing.T) {
	cur := connector.Secret{Current: map[string]string{"app_secret": appSecret}}
	rotated := connector.Secret{
		Current:  map[string]string{"app_secret": "brand-new"},
		Previous: map[string]string{"app_secret": appSecret},
	}
	tests := []struct {
		name   string
		req    func() *connector.Request
		sec    connector.Secret
		wantOK bool
	}{
		{"valid", func() *connector.Request { return signed(sampleDelivery, appSecret) }, cur, true},
		{"upper-case hex", func() *connector.Request {
			r := signed(sampleDelivery, appSecret)
			r.Headers["x-hub-signature-256"] = "sha256=" + strings.ToUpper(strings.TrimPrefix(r.Headers["x-hub-signature-256"], "sha256="))
			return r
		}, cur, true},
		{"previous secret after rotation", func() *connector.Request { return signed(sampleDelivery, appSecret) }, rotated, true},
		{"tampered body", func() *connector.Request {
			r := signed(sampleDelivery, appSecret)
			r.Body = []byte(strings.Replace(sampleDelivery, "444444444444", "444444444445", 1))
			return r
		}, cur, false},
		{"wrong secret", func() *connector.Request { return signed(sampleDelivery, prevSecret) }, cur, false},
		{"no secret configured", func() *connector.Request { return signed(sampleDelivery, appSecret) }, connector.Secret{}, false},
		{"missing header", func() *connector.Request {
			r := signed(sampleDelivery, appSecret)
			delete(r.Headers, "x-hub-signature-256")
			return r
		}, cur, false},
		{"legacy sha1 only", func() *connector.Request {
			r := signed(sampleDelivery, appSecret)
			delete(r.Headers, "x-hub-signature-256")
			r.Headers["x-hub-signature-256"] = r.Headers["x-hub-signature"]
			return r
		}, cur, false},
		{"not hex", func() *connector.Request {
			r := signed(sampleDelivery, appSecret)
			r.Headers["x-hub-signature-256"] = "sha256=zz"
			return r
		}, cur, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New().Verify(tt.req(), tt.sec, time.Now())
			if tt.wantOK && err != nil {
				t.Fatalf("Verify: got %v, want nil", err)
			}
			if !tt.wantOK {
				if !errors.Is(err, connector.ErrUnauthenticated) {
					t.Fatalf("Verify: got %v, want ErrUnauthenticated", err)
				}
				if strings.Contains(err.Error(), appSecret) {
					t.Fatalf("error leaks the secret: %v", err)
				}
			}
		})
	}
}

// A known HMAC: hex(HMAC-SHA256("It's a Secret to Everybody", "Hello, World!")), the example
// GitHub documents for the same X-Hub-Signature-256 scheme.
func TestVerifyKnownVector(t *testing.T) {
	req := &connector.Request{
		Headers: map[string]string{"x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"},
		Body:    []byte("Hello, World!"),
	}
	sec := connector.Secret{Current: map[string]string{"app_secret": "It's a Secret to Everybody"}}
	if _, err := New().Verify(req, sec, time.Now()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestHandshake(t *testing.T) {
	sec := connector.Secret{
		Current:  map[string]string{"verify_token": "tok-now"},
		Previous: map[string]string{"verify_token": "tok-old"},
	}
	tests := []struct {
		name       string
		method     string
		rawQuery   string
		wantOK     bool
		wantStatus int
		wantBody   string
	}{
		{"subscribe", "GET", "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=tok-now", true, 200, "1158201444"},
		{"previous token", "GET", "hub.mode=subscribe&hub.challenge=42&hub.verify_token=tok-old", true, 200, "42"},
		{"wrong token", "GET", "hub.mode=subscribe&hub.challenge=42&hub.verify_token=nope", true, 403, ""},
		{"no token", "GET", "hub.mode=subscribe&hub.challenge=42", true, 403, ""},
		{"wrong mode", "GET", "hub.mode=unsubscribe&hub.challenge=42&hub.verify_token=tok-now", true, 403, ""},
		{"plain GET", "GET", "", false, 0, ""},
		{"POST delivery", "POST", "hub.mode=subscribe&hub.verify_token=tok-now", false, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &connector.Request{Method: tt.method, RawQuery: tt.rawQuery}
			resp, ok := New().Handshake(req, sec)
			if ok != tt.wantOK {
				t.Fatalf("ok: got %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			if resp.Status != tt.wantStatus {
				t.Errorf("status: got %d, want %d", resp.Status, tt.wantStatus)
			}
			if tt.wantStatus == 200 && (resp.Body != tt.wantBody || resp.ContentType != "text/plain") {
				t.Errorf("answer: got %q (%s), want %q (text/plain)", resp.Body, resp.ContentType, tt.wantBody)
			}
		})
	}
	// Query, when filled in by the caller, is used as is.
	q, _ := url.ParseQuery("hub.mode=subscribe&hub.challenge=7&hub.verify_token=tok-now")
	if resp, ok := New().Handshake(&connector.Request{Method: "GET", Query: q}, sec); !ok || resp.Body != "7" {
		t.Errorf("Handshake with Query: got %+v, %v", resp, ok)
	}
}

func TestParse(t *testing.T) {
	p, err := New().Parse(signed(sampleDelivery, appSecret), connector.Secret{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	change1 := `{"field":"leadgen","value":{"leadgen_id":"444444444444","page_id":"153125381133","form_id":"555555","adgroup_id":"666666","ad_id":"777777","created_time":1740000000}}`
	change2 := `{"field":"leadgen","value":{"leadgen_id":888888888888,"page_id":153125381133,"form_id":"555555","created_time":"1740000060","is_organic":true}}`
	want := &connector.Parsed{
		Events: []canonical.Event{
			{
				Key: "meta-leads:444444444444", Source: "meta-leads", Kind: canonical.KindNotification,
				OccurredAt: time.Unix(1740000000, 0).UTC(), GroupKey: "meta-leads:444444444444",
				ExternalIDs: map[string]string{
					"leadgen_id": "444444444444", "page_id": "153125381133", "form_id": "555555",
					"adgroup_id": "666666", "ad_id": "777777",
				},
				MappingVersion: "meta-leads/1", PayloadHash: canonical.PayloadHash([]byte(change1)),
				Hydrate: &canonical.HydrateRef{Object: "lead", Resource: "444444444444"},
			},
			{
				Key: "meta-leads:888888888888", Source: "meta-leads", Kind: canonical.KindNotification,
				OccurredAt: time.Unix(1740000060, 0).UTC(), GroupKey: "meta-leads:888888888888",
				ExternalIDs: map[string]string{
					"leadgen_id": "888888888888", "page_id": "153125381133", "form_id": "555555",
				},
				MappingVersion: "meta-leads/1", PayloadHash: canonical.PayloadHash([]byte(change2)),
				Hydrate:  &canonical.HydrateRef{Object: "lead", Resource: "888888888888"},
				Unmapped: []string{"entry.changes.value.is_organic"},
			},
		},
		Notes: []string{`ignored change field: "feed"`},
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Fatalf("Parse mismatch (-want +got):\n%s", diff)
	}
	for _, ev := range p.Events {
		if err := ev.Validate(); err != nil {
			t.Errorf("Validate: %v", err)
		}
	}
}

func TestParseTimeFallbacks(t *testing.T) {
	recv := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		body string
		want time.Time
	}{
		{`{"object":"page","entry":[{"id":"1","time":1740000000,"changes":[{"field":"leadgen","value":{"leadgen_id":"9"}}]}]}`, time.Unix(1740000000, 0).UTC()},
		{`{"object":"page","entry":[{"id":"1","changes":[{"field":"leadgen","value":{"leadgen_id":"9"}}]}]}`, recv},
	}
	for _, tt := range tests {
		req := &connector.Request{Body: []byte(tt.body), ReceivedAt: recv}
		p, err := New().Parse(req, connector.Secret{})
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if got := p.Events[0].OccurredAt; !got.Equal(tt.want) {
			t.Errorf("OccurredAt: got %v, want %v", got, tt.want)
		}
		if got, want := p.Events[0].ExternalIDs["page_id"], "1"; got != want {
			t.Errorf("page_id: got %q, want %q", got, want)
		}
	}
}

func TestParseUnusable(t *testing.T) {
	for _, body := range []string{
		``, `nope`, `[]`, `{"object":"page"}`, `{"object":"page","entry":[]}`, `{"object":"page","entry":{}}`,
		`{"object":"page","entry":[{"changes":[{"field":"feed","value":{}}]}]}`,
	} {
		_, err := New().Parse(&connector.Request{Body: []byte(body)}, connector.Secret{})
		if !errors.Is(err, connector.ErrUnusable) {
			t.Errorf("Parse(%q): got %v, want ErrUnusable", body, err)
		}
	}
}

// Each malformed change is rejected alone, with its reason, as a delivery of its own that parses
// to the same rejection.
func TestParseRejectsChangesAlone(t *testing.T) {
	for _, c := range []struct{ entry, reason string }{
		{`{"id":"1","time":1740000000,"changes":[{"field":"leadgen","value":{"page_id":"1"}}]}`, "entry[0].changes[0]: no leadgen_id"},
		{`{"id":"1","time":1740000000,"changes":[{"field":"leadgen","value":"x"}]}`, "entry[0].changes[0]: value malformed"},
		{`{"id":"1","time":1740000000,"changes":[{"field":"leadgen","value":{"leadgen_id":{}}}]}`, "entry[0].changes[0]: value malformed"},
		{`{"id":"1","time":1740000000,"changes":[{"field":"leadgen","value":{"leadgen_id":"1","created_time":"soon"}}]}`, "entry[0].changes[0]: value malformed"},
		{`{"id":"1","time":"noon","changes":[{"field":"leadgen","value":{"leadgen_id":"1"}}]}`, "entry[0].changes[0]: entry id or time malformed"},
		{`{"id":"1","time":1740000000,"changes":[7]}`, "entry[0].changes[0]: malformed"},
		{`{"id":"1","changes":"x"}`, "entry[0] malformed"},
	} {
		body := `{"object":"page","entry":[` + c.entry + `]}`
		p, err := New().Parse(&connector.Request{Body: []byte(body)}, connector.Secret{})
		if err != nil {
			t.Errorf("Parse(%s): %v, want a per-change rejection", body, err)
			continue
		}
		if len(p.Events) != 0 || len(p.Rejected) != 1 || p.Rejected[0].Reason != c.reason || p.Rejected[0].Index != 0 {
			t.Errorf("Parse(%s) = %d events, rejections %+v; want one rejection %q", body, len(p.Events), p.Rejected, c.reason)
			continue
		}
		again, err := New().Parse(&connector.Request{Body: p.Rejected[0].Raw}, connector.Secret{})
		if err != nil || len(again.Rejected) != 1 || again.Rejected[0].Reason != c.reason {
			t.Errorf("rejection raw %s does not parse to the same rejection: %+v, %v", p.Rejected[0].Raw, again, err)
		}
	}
}

// A production-shaped batch: two entries (Meta batches entries and changes), one valid leadgen
// change, one leadgen change without leadgen_id, and a change of another field. One event, one
// rejection indexed by its position across entries, stored as a delivery of its own.
func TestParseMixedBatch(t *testing.T) {
	good := `{"field":"leadgen","value":{"ad_id":"238500011122233","form_id":"771122334455667","leadgen_id":"918273645501234","created_time":1741703398,"page_id":"104857600012345","adgroup_id":"238500011122233"}}`
	bad := `{"field":"leadgen","value":{"form_id":"771122334455667","created_time":1741703399,"page_id":"104857600012345"}}`
	body := `{"object":"page","entry":[` +
		`{"id":"104857600012345","time":1741703401,"changes":[` + good + `]},` +
		`{"id":"104857600012345","time":1741703402,"changes":[{"field":"feed","value":{"item":"status"}},` + bad + `]}]}`
	p, err := New().Parse(signed(body, appSecret), connector.Secret{})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(p.Events) != 1 || p.Events[0].Key != "meta-leads:918273645501234" || p.Events[0].PayloadHash != canonical.PayloadHash([]byte(good)) {
		t.Fatalf("events = %+v, want the valid lead alone", p.Events)
	}
	want := []connector.Rejection{{Index: 2, Reason: "entry[1].changes[1]: no leadgen_id",
		Raw: []byte(`{"object":"page","entry":[{"id":"104857600012345","time":1741703402,"changes":[` + bad + `]}]}`)}}
	if diff := cmp.Diff(want, p.Rejected); diff != "" {
		t.Fatalf("rejections (-want +got):\n%s", diff)
	}
	if len(p.Notes) != 1 || p.Notes[0] != `ignored change field: "feed"` {
		t.Errorf("notes = %v", p.Notes)
	}
}

func TestKeyStability(t *testing.T) {
	a := signed(sampleDelivery, appSecret)
	a.ReceivedAt = time.Unix(100, 0)
	b := signed(sampleDelivery, appSecret)
	b.ReceivedAt = time.Unix(900000, 0)
	pa, err := New().Parse(a, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := New().Parse(b, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pa, pb); diff != "" {
		t.Fatalf("retry parsed differently (-first +second):\n%s", diff)
	}
}

const sampleLead = `{
  "id": "444444444444",
  "created_time": "2026-03-02T10:15:00+0000",
  "ad_id": "777777",
  "form_id": "555555",
  "campaign_name": "Spring launch",
  "field_data": [
    {"name": "full_name", "values": ["Ada Lovelace"]},
    {"name": "email", "values": ["Ada@Example.COM"]},
    {"name": "phone_number", "values": ["+14158675309"]},
    {"name": "company_name", "values": ["Analytical Engines"]},
    {"name": "job_title", "values": ["CTO"]},
    {"name": "what_is_your_budget?", "values": ["10k"]},
    {"name": "empty_one", "values": []}
  ]
}`

func thinEvent(t *testing.T) canonical.Event {
	t.Helper()
	p, err := New().Parse(signed(sampleDelivery, appSecret), connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Events[0]
}

func TestHydrate(t *testing.T) {
	var gotPath, gotToken, gotFields string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotToken, gotFields = r.URL.Path, r.URL.Query().Get("access_token"), r.URL.Query().Get("fields")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(sampleLead))
	}))
	defer srv.Close()

	ev := thinEvent(t)
	sec := connector.Secret{Current: map[string]string{"access_token": "page-token"}}
	if err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL + "/v21.0", Client: srv.Client()}); err != nil {
		t.Fatalf("Hydrate: %v", err)
	}
	if gotPath != "/v21.0/444444444444" || gotToken != "page-token" || gotFields != "id,created_time,field_data,form_id" {
		t.Errorf("request: got path %q token %q fields %q; want only the fields leads_retrieval reads", gotPath, gotToken, gotFields)
	}
	want := canonical.Event{
		Key: "meta-leads:444444444444", Source: "meta-leads", Kind: canonical.KindLeadSubmitted,
		OccurredAt: time.Date(2026, 3, 2, 10, 15, 0, 0, time.UTC),
		GroupKey:   "email:ada@example.com",
		Subject:    canonical.Person{Emails: []string{"ada@example.com"}, Phones: []string{"+14158675309"}, Name: "Ada Lovelace"},
		Fields: map[string]map[string]string{"contact": {
			"email": "ada@example.com", "phone": "+14158675309", "company": "Analytical Engines",
			"job_title": "CTO", "lead_source": "meta-leads",
		}},
		Activity: &canonical.Activity{
			ID: "form:444444444444", Type: "form", Status: "submitted",
			Participants: []canonical.Participant{
				{Role: "from", Email: "ada@example.com", Name: "Ada Lovelace"},
				{Role: "from", Phone: "+14158675309", Name: "Ada Lovelace"},
			},
			Attrs: map[string]string{"form_id": "555555", "ad_id": "777777"},
		},
		ExternalIDs: map[string]string{
			"leadgen_id": "444444444444", "page_id": "153125381133", "form_id": "555555",
			"adgroup_id": "666666", "ad_id": "777777",
		},
		MappingVersion: "meta-leads/1",
		PayloadHash:    ev.PayloadHash,
		Unmapped:       []string{"field_data[what_is_your_budget?]"},
	}
	if diff := cmp.Diff(want, ev); diff != "" {
		t.Fatalf("hydrated event mismatch (-want +got):\n%s", diff)
	}
	if err := ev.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// Ad and campaign fields need ads_management: they are requested, and mapped, only when the
// secret's ad_fields is "true".
func TestHydrateAdFieldsOnlyWhenConfigured(t *testing.T) {
	var gotFields string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotFields = r.URL.Query().Get("fields")
		_, _ = w.Write([]byte(strings.Replace(sampleLead, `"campaign_name": "Spring launch",`,
			`"campaign_name": "Spring launch", "campaign_id": "120200000000001", "adset_id": "120200000000002", "ad_name": "Carousel A",`, 1)))
	}))
	defer srv.Close()
	api := connector.API{BaseURL: srv.URL, Client: srv.Client()}

	ev := thinEvent(t)
	if err := New().Hydrate(context.Background(), &ev, connector.Secret{Current: map[string]string{"access_token": "t"}}, api); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(gotFields, "campaign") || strings.Contains(gotFields, "ad_") {
		t.Errorf("fields %q ask for ad fields without ad_fields", gotFields)
	}
	if _, ok := ev.Fields["contact"]["campaign"]; ok || ev.ExternalIDs["campaign_id"] != "" {
		t.Errorf("ad fields mapped without ad_fields: %v %v", ev.Fields, ev.ExternalIDs)
	}

	ev = thinEvent(t)
	if err := New().Hydrate(context.Background(), &ev, connector.Secret{Current: map[string]string{"access_token": "t", "ad_fields": "true"}}, api); err != nil {
		t.Fatal(err)
	}
	if gotFields != "id,created_time,field_data,form_id,ad_id,ad_name,adset_id,campaign_id,campaign_name" {
		t.Errorf("fields = %q", gotFields)
	}
	if ev.Fields["contact"]["campaign"] != "Spring launch" || ev.ExternalIDs["campaign_id"] != "120200000000001" ||
		ev.ExternalIDs["adset_id"] != "120200000000002" || ev.Activity.Attrs["ad_name"] != "Carousel A" {
		t.Errorf("ad fields not mapped: %v %v %v", ev.Fields, ev.ExternalIDs, ev.Activity.Attrs)
	}
}

func TestHydratePhoneOnlyAndSplitNames(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"id":"444444444444","created_time":"2026-03-02T10:15:00+0000","field_data":[
			{"name":"first_name","values":["Grace"]},{"name":"last_name","values":["Hopper"]},
			{"name":"email","values":["not an email"]},{"name":"phone_number","values":["(415) 867-5309"]}]}`))
	}))
	defer srv.Close()
	ev := thinEvent(t)
	sec := connector.Secret{Current: map[string]string{"access_token": "t"}}
	if err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()}); err != nil {
		t.Fatalf("Hydrate: %v", err)
	}
	if got, want := ev.GroupKey, "phone:+14158675309"; got != want {
		t.Errorf("GroupKey: got %q, want %q", got, want)
	}
	if got, want := ev.Subject.Name, "Grace Hopper"; got != want {
		t.Errorf("Name: got %q, want %q", got, want)
	}
	if got, want := ev.Unmapped, []string{"field_data[email]"}; !cmp.Equal(got, want) {
		t.Errorf("Unmapped: got %v, want %v", got, want)
	}
}

func TestHydrateErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"404", 404, `{}`, connector.ErrNotFound},
		{"graph 100/33", 400, `{"error":{"code":100,"error_subcode":33}}`, connector.ErrNotFound},
		{"429", 429, `{}`, connector.ErrTransient},
		{"500", 500, `oops`, connector.ErrTransient},
		{"503", 503, ``, connector.ErrTransient},
		{"graph throttled", 400, `{"error":{"code":17}}`, connector.ErrTransient},
		{"app rate limit", 403, `{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","is_transient":true,"code":4,"fbtrace_id":"A1"}}`, connector.ErrTransient},
		{"page rate limit", 400, `{"error":{"message":"(#32) Page request limit reached","type":"OAuthException","code":32,"fbtrace_id":"A2"}}`, connector.ErrTransient},
		{"hourly limit", 400, `{"error":{"message":"(#613) Calls to this api have exceeded the rate limit.","type":"OAuthException","code":613,"fbtrace_id":"A3"}}`, connector.ErrTransient},
		{"service temporarily unavailable", 500, `{"error":{"message":"An unexpected error has occurred. Please retry your request later.","type":"OAuthException","is_transient":true,"code":2,"fbtrace_id":"A4"}}`, connector.ErrTransient},
		{"expired token", 400, `{"error":{"message":"Error validating access token: Session has expired on Sunday, 02-Mar-25 10:00:00 PST.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"A5"}}`, connector.ErrPermanent},
		{"permission", 403, `{"error":{"message":"(#10) Application does not have permission for this action","type":"OAuthException","code":10,"fbtrace_id":"A6"}}`, connector.ErrPermanent},
		{"leads_retrieval missing", 403, `{"error":{"message":"(#200) Requires leads_retrieval permission to manage the object","type":"OAuthException","code":200,"fbtrace_id":"A7"}}`, connector.ErrPermanent},
		{"invalid parameter", 400, `{"error":{"message":"(#100) Tried accessing nonexisting field (ad_name) on node type (LeadgenLead)","type":"OAuthException","code":100,"fbtrace_id":"A8"}}`, connector.ErrPermanent},
		{"deleted lead", 400, `{"error":{"message":"Unsupported get request. Object with ID '444444444444' does not exist, cannot be loaded due to missing permissions, or does not support this operation.","type":"GraphMethodException","code":100,"error_subcode":33,"fbtrace_id":"A9"}}`, connector.ErrNotFound},
		{"bad json", 200, `{`, connector.ErrUnusable},
		{"bad created_time", 200, `{"created_time":"tuesday"}`, connector.ErrUnusable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			ev := thinEvent(t)
			sec := connector.Secret{Current: map[string]string{"access_token": "t"}}
			err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Hydrate: got %v, want %v", err, tt.want)
			}
			if ev.Hydrate == nil {
				t.Error("a failed hydrate cleared the hydrate reference")
			}
		})
	}

	t.Run("401 is permanent, not transient, and names the code", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"error":{"message":"Invalid OAuth access token - Cannot parse access token","type":"OAuthException","code":190,"fbtrace_id":"B1"}}`))
		}))
		defer srv.Close()
		ev := thinEvent(t)
		err := New().Hydrate(context.Background(), &ev, connector.Secret{Current: map[string]string{"access_token": "t"}}, connector.API{BaseURL: srv.URL, Client: srv.Client()})
		if !errors.Is(err, connector.ErrPermanent) || errors.Is(err, connector.ErrTransient) || errors.Is(err, connector.ErrNotFound) {
			t.Fatalf("Hydrate: got %v, want ErrPermanent only", err)
		}
		if !strings.Contains(err.Error(), "190") || !strings.Contains(err.Error(), "Cannot parse access token") {
			t.Errorf("error %q does not carry the code and message", err)
		}
	})

	t.Run("401 without a Graph error body is permanent", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(401) }))
		defer srv.Close()
		ev := thinEvent(t)
		err := New().Hydrate(context.Background(), &ev, connector.Secret{Current: map[string]string{"access_token": "t"}}, connector.API{BaseURL: srv.URL, Client: srv.Client()})
		if !errors.Is(err, connector.ErrPermanent) {
			t.Fatalf("Hydrate: got %v, want ErrPermanent", err)
		}
	})

	t.Run("network error is transient and hides the token", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		base := srv.URL
		srv.Close()
		var calls atomic.Int32
		client := doerFunc(func(r *http.Request) (*http.Response, error) {
			calls.Add(1)
			return http.DefaultClient.Do(r)
		})
		ev := thinEvent(t)
		sec := connector.Secret{Current: map[string]string{"access_token": "super-secret-token"}}
		err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: base, Client: client})
		if !errors.Is(err, connector.ErrTransient) {
			t.Fatalf("Hydrate: got %v, want ErrTransient", err)
		}
		if strings.Contains(err.Error(), "super-secret-token") {
			t.Fatalf("error leaks the access token: %v", err)
		}
		if calls.Load() != 1 {
			t.Errorf("calls: got %d, want 1", calls.Load())
		}
	})

	t.Run("not a thin lead event", func(t *testing.T) {
		ev := thinEvent(t)
		ev.Hydrate = nil
		err := New().Hydrate(context.Background(), &ev, connector.Secret{}, connector.API{})
		if !errors.Is(err, connector.ErrUnusable) {
			t.Fatalf("Hydrate: got %v, want ErrUnusable", err)
		}
		ev = thinEvent(t)
		ev.Hydrate.Resource = "../me"
		if err := New().Hydrate(context.Background(), &ev, connector.Secret{Current: map[string]string{"access_token": "t"}}, connector.API{}); !errors.Is(err, connector.ErrUnusable) {
			t.Fatalf("Hydrate(../me): got %v, want ErrUnusable", err)
		}
	})

	t.Run("no access token", func(t *testing.T) {
		ev := thinEvent(t)
		if err := New().Hydrate(context.Background(), &ev, connector.Secret{}, connector.API{}); !errors.Is(err, connector.ErrPermanent) {
			t.Fatalf("Hydrate without access_token: got %v, want ErrPermanent", err)
		}
	})
}

type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

func FuzzVerify(f *testing.F) {
	r := signed(sampleDelivery, appSecret)
	f.Add(r.Headers["x-hub-signature-256"], []byte(sampleDelivery))
	f.Add("", []byte{})
	f.Add("sha256=", []byte("x"))
	f.Add("sha1=abcd", []byte("x"))
	f.Add("=====", []byte("{"))
	sec := connector.Secret{Current: map[string]string{"app_secret": appSecret}}
	f.Fuzz(func(t *testing.T, sig string, body []byte) {
		req := &connector.Request{Headers: map[string]string{"x-hub-signature-256": sig}, Body: body}
		if _, err := New().Verify(req, sec, time.Now()); err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
			t.Fatalf("Verify: %v does not wrap ErrUnauthenticated", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{sampleDelivery, `{}`, `null`, `{"entry":[{"changes":[null]}]}`,
		`{"entry":[{"time":"99999999999999999999","changes":[{"field":"leadgen","value":{"leadgen_id":1e400}}]}]}`,
		`{"entry":[{"changes":[{"field":"leadgen","value":{"leadgen_id":"1","created_time":-5}}]}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := New().Parse(&connector.Request{Body: body, ReceivedAt: time.Unix(1, 0)}, connector.Secret{})
		if err != nil {
			if !errors.Is(err, connector.ErrUnusable) {
				t.Fatalf("Parse: %v does not wrap ErrUnusable", err)
			}
			return
		}
		for _, ev := range p.Events {
			if err := ev.Validate(); err != nil {
				t.Fatalf("invalid event: %v", err)
			}
		}
	})
}
