package msgraph

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

const (
	state     = "cs-current-7f3a"
	prevState = "cs-previous-19bd"
)

var sec = connector.Secret{Current: map[string]string{"client_state": state, "access_token": "graph-token"}}

const itemMsg = `{"subscriptionId":"sub-1","subscriptionExpirationDateTime":"2026-03-05T10:00:00.0000000Z","changeType":"created","resource":"Users/5f1c/Messages/AAMkAG=","tenantId":"tenant-9","clientState":"cs-current-7f3a","resourceData":{"@odata.type":"#Microsoft.Graph.Message","@odata.id":"Users/5f1c/Messages/AAMkAG=","@odata.etag":"W/\"CQAAABYAAA\"","id":"AAMkAG="}}`
const itemEvt = `{"id":"notif-42","subscriptionId":"sub-2","changeType":"updated","resource":"Users/rep@acme.com/Events/AAMkEV=","tenantId":"tenant-9","clientState":"cs-previous-19bd","resourceData":{"@odata.type":"#Microsoft.Graph.Event","@odata.etag":"W/\"DwAAABYAAA\"","id":"AAMkEV="},"encryptedContent":{"data":"x"}}`
const itemForeign = `{"subscriptionId":"sub-x","changeType":"created","resource":"Users/evil/Messages/1","clientState":"guess","resourceData":{}}`
const itemLifecycle = `{"subscriptionId":"sub-1","subscriptionExpirationDateTime":"2026-03-05T10:00:00Z","tenantId":"tenant-9","clientState":"cs-current-7f3a","lifecycleEvent":"reauthorizationRequired"}`

var sampleBody = `{"value":[` + itemMsg + `,` + itemEvt + `,` + itemForeign + `,` + itemLifecycle + `]}`

func req(body string) *connector.Request {
	return &connector.Request{Method: "POST", Path: "/webhooks/msgraph", Body: []byte(body), ReceivedAt: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
}

func TestHandshake(t *testing.T) {
	tests := []struct {
		name     string
		r        *connector.Request
		wantOK   bool
		wantBody string
	}{
		{"validation token decoded", &connector.Request{Method: "POST", RawQuery: "validationToken=Validation%3a+Testing+client+application"}, true, "Validation: Testing client application"},
		{"validation via Query", &connector.Request{Method: "POST", Query: url.Values{"validationToken": {"abc"}}}, true, "abc"},
		{"delivery", &connector.Request{Method: "POST", RawQuery: ""}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, ok := New().Handshake(tt.r, connector.Secret{})
			if ok != tt.wantOK {
				t.Fatalf("ok: got %v, want %v", ok, tt.wantOK)
			}
			if ok && (resp.Status != 200 || resp.ContentType != "text/plain" || resp.Body != tt.wantBody) {
				t.Fatalf("answer: got %+v, want 200 text/plain %q", resp, tt.wantBody)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	rotated := connector.Secret{Current: map[string]string{"client_state": "new"}, Previous: map[string]string{"client_state": state}}
	tests := []struct {
		name string
		body string
		sec  connector.Secret
		ok   bool
	}{
		{"valid", `{"value":[` + itemMsg + `]}`, sec, true},
		{"one of several matches", sampleBody, sec, true},
		{"previous state after rotation", `{"value":[` + itemMsg + `]}`, rotated, true},
		{"tampered clientState", `{"value":[` + strings.Replace(itemMsg, state, state+"x", 1) + `]}`, sec, false},
		{"wrong secret", `{"value":[` + itemMsg + `]}`, connector.Secret{Current: map[string]string{"client_state": "other"}}, false},
		{"no secret", `{"value":[` + itemMsg + `]}`, connector.Secret{}, false},
		{"missing clientState", `{"value":[` + itemForeign[:strings.Index(itemForeign, `"clientState"`)] + `"resourceData":{}}]}`, sec, false},
		{"empty clientState vs empty secret", `{"value":[{"clientState":""}]}`, connector.Secret{Current: map[string]string{"client_state": ""}}, false},
		{"not json", `nope`, sec, false},
		{"empty collection", `{"value":[]}`, sec, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New().Verify(req(tt.body), tt.sec, time.Now())
			if tt.ok && err != nil {
				t.Fatalf("Verify: got %v, want nil", err)
			}
			if !tt.ok {
				if !errors.Is(err, connector.ErrUnauthenticated) {
					t.Fatalf("Verify: got %v, want ErrUnauthenticated", err)
				}
				if strings.Contains(err.Error(), state) {
					t.Fatalf("error leaks the clientState: %v", err)
				}
			}
		})
	}
}

func TestSign(t *testing.T) {
	r := req(`{"value":[{"subscriptionId":"s","changeType":"created","resource":"users/u/messages/m"}]}`)
	if err := New().Sign(r, sec, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := New().Verify(r, sec, time.Now()); err != nil {
		t.Fatalf("Verify(signed): %v", err)
	}
	if err := New().Sign(req(`{}`), connector.Secret{}, time.Now()); err == nil {
		t.Fatal("Sign without client_state: got nil")
	}
}

func TestParse(t *testing.T) {
	both := connector.Secret{Current: map[string]string{"client_state": state}, Previous: map[string]string{"client_state": prevState}}
	p, err := New().Parse(req(sampleBody), both)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	recv := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	want := &connector.Parsed{
		Events: []canonical.Event{
			{
				Key:        `msgraph:sub-1:created:Users/5f1c/Messages/AAMkAG=:W/"CQAAABYAAA"`,
				Source:     "msgraph",
				Kind:       canonical.KindNotification,
				OccurredAt: recv,
				GroupKey:   "msgraph:Users/5f1c/Messages/AAMkAG=",
				ExternalIDs: map[string]string{
					"subscription_id": "sub-1", "tenant_id": "tenant-9", "resource_id": "AAMkAG=",
				},
				MappingVersion: "msgraph/1",
				PayloadHash:    canonical.PayloadHash([]byte(itemMsg)),
				Hydrate:        &canonical.HydrateRef{Object: "message", Resource: "Users/5f1c/Messages/AAMkAG=", Change: "created"},
			},
			{
				Key:        "msgraph:notif-42",
				Source:     "msgraph",
				Kind:       canonical.KindNotification,
				OccurredAt: recv,
				GroupKey:   "msgraph:Users/rep@acme.com/Events/AAMkEV=",
				ExternalIDs: map[string]string{
					"subscription_id": "sub-2", "tenant_id": "tenant-9", "resource_id": "AAMkEV=",
				},
				MappingVersion: "msgraph/1",
				PayloadHash:    canonical.PayloadHash([]byte(itemEvt)),
				Hydrate:        &canonical.HydrateRef{Object: "event", Resource: "Users/rep@acme.com/Events/AAMkEV=", Change: "updated"},
				Unmapped:       []string{"value[].encryptedContent"},
			},
			{
				Key:            "msgraph:lifecycle:sub-1:reauthorizationRequired:2026-03-02T10:00:00Z",
				Source:         "msgraph",
				Kind:           canonical.KindNotification,
				OccurredAt:     recv,
				GroupKey:       "msgraph:lifecycle:sub-1",
				ExternalIDs:    map[string]string{"subscription_id": "sub-1", "tenant_id": "tenant-9"},
				MappingVersion: "msgraph/1",
				PayloadHash:    canonical.PayloadHash([]byte(itemLifecycle)),
				Hydrate:        &canonical.HydrateRef{Object: LifecycleObject, Resource: "subscriptions/sub-1", Change: "reauthorizationRequired"},
			},
		},
		Ack:   &connector.Response{Status: 202},
		Notes: []string{"dropped 1 notification(s) without a matching clientState"},
		Lifecycle: []connector.Lifecycle{{Index: 3, Event: "reauthorizationRequired", SubscriptionID: "sub-1", TenantID: "tenant-9",
			Raw: []byte(itemLifecycle)}},
		Dropped: 1,
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

func TestParseObjectByPath(t *testing.T) {
	body := `{"value":[{"subscriptionId":"s","changeType":"created","resource":"users/u/events/e1","clientState":"` + state + `"},` +
		`{"subscriptionId":"s","changeType":"created","resource":"Users('u')/Messages('m1')","clientState":"` + state + `"}]}`
	p, err := New().Parse(req(body), sec)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := []string{p.Events[0].Hydrate.Object, p.Events[1].Hydrate.Object}, []string{"event", "message"}; !cmp.Equal(got, want) {
		t.Fatalf("objects: got %v, want %v", got, want)
	}
}

func TestParseUnusable(t *testing.T) {
	for _, body := range []string{`nope`, `[]`, `{"value":{}}`} {
		if _, err := New().Parse(req(body), sec); !errors.Is(err, connector.ErrUnusable) {
			t.Errorf("Parse(%s): got %v, want ErrUnusable", body, err)
		}
	}
}

// Each authentic but unusable notification is rejected alone, with its reason, as a collection
// of its own that parses to the same rejection; the delivery itself is not unusable.
func TestParseRejectsItemsAlone(t *testing.T) {
	for _, c := range []struct{ item, reason string }{
		{`{"changeType":"created","resource":"users/u/messages/m","clientState":"` + state + `"}`, "lacks subscriptionId"},
		{`{"subscriptionId":"s","resource":"users/u/messages/m","clientState":"` + state + `"}`, "lacks subscriptionId"},
		{`{"subscriptionId":"s","changeType":"created","clientState":"` + state + `"}`, "lacks subscriptionId"},
		{`{"subscriptionId":"s","changeType":"created","resource":"users/u/contacts/c","clientState":"` + state + `"}`, "neither a message nor an event"},
		{`{"subscriptionId":"s","changeType":"moved","resource":"users/u/messages/m","clientState":"` + state + `"}`, `unsupported changeType "moved"`},
		{`{"subscriptionId":"s","changeType":["created"],"resource":"users/u/messages/m","clientState":"` + state + `"}`, "malformed"},
		{`{"subscriptionId":"s","clientState":"` + state + `","lifecycleEvent":"renamed"}`, `unknown lifecycleEvent "renamed"`},
		{`{"clientState":"` + state + `","lifecycleEvent":"missed"}`, "lifecycle notification lacks subscriptionId"},
	} {
		p, err := New().Parse(req(`{"value":[`+c.item+`]}`), sec)
		if err != nil {
			t.Errorf("Parse(%s): %v, want a per-item rejection", c.item, err)
			continue
		}
		if len(p.Events) != 0 || len(p.Rejected) != 1 || !strings.Contains(p.Rejected[0].Reason, c.reason) ||
			!strings.HasPrefix(p.Rejected[0].Reason, "value[0]: ") || string(p.Rejected[0].Raw) != `{"value":[`+c.item+`]}` {
			t.Errorf("Parse(%s) = %d events, rejections %+v; want one rejection %q", c.item, len(p.Events), p.Rejected, c.reason)
		}
	}
}

// A production-shaped batch: a message notification, a contact notification (a resource the
// connector does not map) and one with a change type Graph does not send for mail, from two
// subscriptions and tenants, plus a lifecycle notification and an item of another app's
// subscription. The message's event, two rejections indexed by position, the lifecycle item
// both listed in Lifecycle and queued as its lifecycle event (for the subscription manager), the
// foreign item dropped.
func TestParseMixedBatch(t *testing.T) {
	contact := `{"subscriptionId":"sub-3","subscriptionExpirationDateTime":"2026-03-05T10:00:00Z","changeType":"created",` +
		`"resource":"Users/9a1e2c44-0b7d-4f3e-9d61-3c5b2a7f8e10/Contacts/AAMkCT=","tenantId":"tenant-7","clientState":"` + state + `",` +
		`"resourceData":{"@odata.type":"#Microsoft.Graph.Contact","@odata.id":"Users/9a1e2c44-0b7d-4f3e-9d61-3c5b2a7f8e10/Contacts/AAMkCT=","@odata.etag":"W/\"EQAAAB\"","id":"AAMkCT="}}`
	unknown := strings.Replace(itemMsg, `"changeType":"created"`, `"changeType":"moved"`, 1)
	missed := `{"subscriptionId":"sub-1","subscriptionExpirationDateTime":"2026-03-05T10:00:00Z","tenantId":"tenant-9","clientState":"` + state + `","lifecycleEvent":"missed"}`
	body := `{"value":[` + itemMsg + `,` + contact + `,` + unknown + `,` + itemForeign + `,` + missed + `]}`
	p, err := New().Parse(req(body), sec)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(p.Events) != 2 || p.Events[0].Hydrate.Object != "message" || p.Events[0].PayloadHash != canonical.PayloadHash([]byte(itemMsg)) {
		t.Fatalf("events = %+v, want the message notification and the lifecycle event", p.Events)
	}
	if lc := p.Events[1]; lc.Hydrate.Object != LifecycleObject || lc.Hydrate.Change != "missed" || lc.GroupKey != LifecycleGroupKey("sub-1") ||
		lc.PayloadHash != canonical.PayloadHash([]byte(missed)) {
		t.Errorf("lifecycle event = %+v, want missed of sub-1", lc)
	}
	var idx []int
	for _, r := range p.Rejected {
		idx = append(idx, r.Index)
	}
	if !cmp.Equal(idx, []int{1, 2}) {
		t.Fatalf("rejected indexes = %v, want [1 2]", idx)
	}
	if !strings.Contains(p.Rejected[0].Reason, "neither a message nor an event") || !strings.Contains(p.Rejected[1].Reason, "unsupported changeType") {
		t.Errorf("reasons = %q, %q", p.Rejected[0].Reason, p.Rejected[1].Reason)
	}
	for _, r := range p.Rejected {
		if strings.Contains(r.Reason, "9a1e2c44") || strings.Contains(r.Reason, "Users/") {
			t.Errorf("reason %q names the resource", r.Reason)
		}
	}
	if string(p.Rejected[0].Raw) != `{"value":[`+contact+`]}` {
		t.Errorf("rejection raw = %s", p.Rejected[0].Raw)
	}
	if len(p.Lifecycle) != 1 || p.Lifecycle[0].Event != "missed" || p.Lifecycle[0].Index != 4 || p.Lifecycle[0].SubscriptionID != "sub-1" {
		t.Errorf("lifecycle = %+v", p.Lifecycle)
	}
	if p.Dropped != 1 || p.Ack == nil || p.Ack.Status != 202 {
		t.Errorf("dropped %d, ack %+v", p.Dropped, p.Ack)
	}
}

func TestKeyStability(t *testing.T) {
	a := req(sampleBody)
	b := req(sampleBody)
	b.ReceivedAt = a.ReceivedAt.Add(3 * time.Hour)
	pa, err := New().Parse(a, sec)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := New().Parse(b, sec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pa.Events {
		x, y := pa.Events[i], pb.Events[i]
		if x.Hydrate.Object == LifecycleObject {
			// A lifecycle item has no id and two distinct `missed` can be the same bytes: its
			// key holds the receipt time, so each receipt is recorded (acting on it is idempotent).
			if x.Key == y.Key || x.PayloadHash != y.PayloadHash || x.GroupKey != y.GroupKey {
				t.Errorf("lifecycle event %d: keys %q vs %q (want distinct), hash or group differ", i, x.Key, y.Key)
			}
			continue
		}
		if x.Key != y.Key || x.PayloadHash != y.PayloadHash || x.GroupKey != y.GroupKey {
			t.Errorf("event %d: retry keys differ: %q/%q/%q vs %q/%q/%q", i, x.Key, x.PayloadHash, x.GroupKey, y.Key, y.PayloadHash, y.GroupKey)
		}
	}
}

// A lifecycle item with an id (Graph may send one) is keyed by it, so a re-sent delivery is a
// duplicate.
func TestLifecycleKeyByID(t *testing.T) {
	item := `{"id":"lc-7","subscriptionId":"sub-1","clientState":"` + state + `","lifecycleEvent":"subscriptionRemoved"}`
	p, err := New().Parse(req(`{"value":[`+item+`]}`), sec)
	if err != nil || len(p.Events) != 1 {
		t.Fatalf("Parse: %v, %d events", err, len(p.Events))
	}
	if got, want := p.Events[0].Key, "msgraph:lifecycle:sub-1:subscriptionRemoved:lc-7"; got != want {
		t.Errorf("key = %q, want %q", got, want)
	}
}

// A lifecycle event is never fetched: Hydrate skips it (the worker records it NOOP with the
// reason, the ledger entry the subscription manager reads) without calling Graph.
func TestHydrateLifecycleSkips(t *testing.T) {
	p, err := New().Parse(req(`{"value":[`+itemLifecycle+`]}`), sec)
	if err != nil || len(p.Events) != 1 {
		t.Fatalf("Parse: %v, %d events", err, len(p.Events))
	}
	ev := p.Events[0]
	err = New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: "http://127.0.0.1:1", Client: http.DefaultClient})
	if !errors.Is(err, connector.ErrSkipped) || !strings.Contains(err.Error(), `lifecycle "reauthorizationRequired" of "sub-1"`) {
		t.Fatalf("Hydrate = %v, want a skip naming the event and subscription", err)
	}
	if ev.Kind != canonical.KindNotification || ev.Hydrate == nil {
		t.Errorf("Hydrate changed the lifecycle event: %+v", ev)
	}
}

// graph answers the item's GET with body (and status), and GET /users/{id} with the user
// document of users (404 when absent), recording the item request and counting user lookups.
type graph struct {
	t       *testing.T
	status  int
	body    string
	users   map[string]string
	lookups int
	path    string
	auth    string
	sel     string
	prefer  string
}

func (g *graph) server() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := strings.Index(r.URL.Path, "/users/"); i >= 0 && !strings.Contains(r.URL.Path[i+len("/users/"):], "/") {
			g.lookups++
			if got := r.URL.Query().Get("$select"); got != "mail,userPrincipalName" {
				g.t.Errorf("user lookup $select = %q", got)
			}
			u, ok := g.users[r.URL.Path[i+len("/users/"):]]
			if !ok {
				w.WriteHeader(404)
				_, _ = w.Write([]byte(`{"error":{"code":"Request_ResourceNotFound","message":"Resource does not exist."}}`))
				return
			}
			_, _ = w.Write([]byte(u))
			return
		}
		g.path, g.auth, g.sel, g.prefer = r.URL.Path, r.Header.Get("Authorization"), r.URL.Query().Get("$select"), r.Header.Get("Prefer")
		if g.status != 0 {
			w.WriteHeader(g.status)
		}
		_, _ = w.Write([]byte(g.body))
	}))
}

// user5f1c is the owner of mailbox Users/5f1c, as GET /users/{id}?$select=mail,userPrincipalName
// answers.
const user5f1c = `{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(mail,userPrincipalName)/$entity",` +
	`"mail":"Rep@acme.com","userPrincipalName":"rep@acme.onmicrosoft.com"}`

func thin(t *testing.T, item string) canonical.Event {
	t.Helper()
	both := connector.Secret{Current: map[string]string{"client_state": state}, Previous: map[string]string{"client_state": prevState}}
	p, err := New().Parse(req(`{"value":[`+item+`]}`), both)
	if err != nil || len(p.Events) != 1 {
		t.Fatalf("Parse: %v (%d events)", err, len(p.Events))
	}
	return p.Events[0]
}

const receivedMessage = `{
  "internetMessageId": "<CAF3x=Y@mail.Example.org>",
  "subject": "Pricing question",
  "from": {"emailAddress": {"name": "Grace Hopper", "address": "Grace@Example.org"}},
  "toRecipients": [{"emailAddress": {"name": "Rep", "address": "rep@acme.com"}}],
  "ccRecipients": [{"emailAddress": {"name": "Bob", "address": "bob@other.io"}}, {"emailAddress": {"address": "nonsense"}}],
  "sentDateTime": "2026-03-02T09:59:00Z",
  "receivedDateTime": "2026-03-02T09:59:30Z",
  "conversationId": "conv-1"
}`

func TestHydrateReceivedMessage(t *testing.T) {
	g := &graph{t: t, body: receivedMessage, users: map[string]string{"5f1c": user5f1c}}
	srv := g.server()
	defer srv.Close()
	ev := thin(t, itemMsg)
	c := New(WithInternalDomains("ACME.com"))
	if err := c.Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL + "/v1.0", Client: srv.Client()}); err != nil {
		t.Fatalf("Hydrate: %v", err)
	}
	if g.path != "/v1.0/users/5f1c/messages/AAMkAG=" || g.auth != "Bearer graph-token" || !strings.Contains(g.sel, "internetMessageId") {
		t.Errorf("request: got path %q auth %q select %q", g.path, g.auth, g.sel)
	}
	want := canonical.Event{
		Key:        ev.Key,
		Source:     "msgraph",
		Kind:       canonical.KindEmailReceived,
		OccurredAt: time.Date(2026, 3, 2, 9, 59, 30, 0, time.UTC),
		GroupKey:   "email:grace@example.org",
		Subject:    canonical.Person{Emails: []string{"grace@example.org", "bob@other.io"}, Name: "Grace Hopper"},
		Actor:      &canonical.Actor{ID: "5f1c", Email: "rep@acme.com", Type: "user"},
		Fields: map[string]map[string]string{"contact": {
			"email": "grace@example.org", "last_activity_at": "2026-03-02T09:59:30Z",
		}},
		Activity: &canonical.Activity{
			ID: "email:caf3x=y@mail.example.org", Type: "email", Direction: "inbound", Subject: "Pricing question",
			Participants: []canonical.Participant{
				{Role: "from", Email: "grace@example.org", Name: "Grace Hopper"},
				{Role: "to", Email: "rep@acme.com", Name: "Rep"},
				{Role: "cc", Email: "bob@other.io", Name: "Bob"},
			},
			Attrs: map[string]string{"conversation_id": "conv-1", "mailbox": "rep@acme.com"},
		},
		ExternalIDs:    ev.ExternalIDs,
		MappingVersion: "msgraph/1",
		PayloadHash:    ev.PayloadHash,
	}
	if diff := cmp.Diff(want, ev); diff != "" {
		t.Fatalf("hydrated mismatch (-want +got):\n%s", diff)
	}
	if err := ev.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestHydrateSentMessage(t *testing.T) {
	g := &graph{t: t, body: `{"internetMessageId":"<out-1@acme.com>","subject":"Re: Pricing",
		"from":{"emailAddress":{"name":"Rep","address":"rep@acme.com"}},
		"toRecipients":[{"emailAddress":{"name":"Grace Hopper","address":"grace@example.org"}}],
		"sentDateTime":"2026-03-02T11:00:00Z","receivedDateTime":"2026-03-02T11:00:01Z"}`}
	srv := g.server()
	defer srv.Close()
	// The mailbox is named by address in the resource: no internal domains needed.
	ev := thin(t, `{"subscriptionId":"s","changeType":"created","resource":"users/rep@acme.com/messages/m1","clientState":"`+state+`"}`)
	if err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()}); err != nil {
		t.Fatalf("Hydrate: %v", err)
	}
	if ev.Kind != canonical.KindEmailSent || ev.Activity.Direction != "outbound" {
		t.Errorf("kind/direction: got %q/%q, want email.sent/outbound", ev.Kind, ev.Activity.Direction)
	}
	if got, want := ev.GroupKey, "email:grace@example.org"; got != want {
		t.Errorf("GroupKey: got %q, want %q", got, want)
	}
	if got, want := ev.OccurredAt, time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("OccurredAt: got %v, want %v", got, want)
	}
	if ev.Actor == nil || ev.Actor.Email != "rep@acme.com" {
		t.Errorf("Actor: got %+v, want rep@acme.com", ev.Actor)
	}
	if ev.Hydrate != nil {
		t.Error("Hydrate not cleared")
	}
}

func TestHydrateEvent(t *testing.T) {
	body := `{
	  "iCalUId": "040000008200E00074C5B7101A82E008000000001",
	  "subject": "Demo",
	  "isCancelled": %s,
	  "organizer": {"emailAddress": {"name": "Rep", "address": "rep@acme.com"}},
	  "attendees": [
	    {"type": "required", "emailAddress": {"name": "Ada Lovelace", "address": "ada@example.com"}},
	    {"type": "optional", "emailAddress": {"name": "Rep", "address": "rep@acme.com"}}
	  ],
	  "start": {"dateTime": "2026-03-10T15:00:00.0000000", "timeZone": "UTC"},
	  "end": {"dateTime": "2026-03-10T15:30:00.0000000", "timeZone": "UTC"},
	  "lastModifiedDateTime": "2026-03-02T10:01:02.1234567Z"
	}`
	tests := []struct {
		cancelled string
		kind      canonical.Kind
		status    string
	}{
		{"false", canonical.KindMeetingScheduled, "scheduled"},
		{"true", canonical.KindMeetingCanceled, "canceled"},
	}
	for _, tt := range tests {
		g := &graph{t: t, body: strings.Replace(body, "%s", tt.cancelled, 1)}
		srv := g.server()
		ev := thin(t, itemEvt)
		err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()})
		srv.Close()
		if err != nil {
			t.Fatalf("Hydrate: %v", err)
		}
		if g.prefer != `outlook.timezone="UTC", IdType="ImmutableId"` || !strings.Contains(g.sel, "iCalUId") {
			t.Errorf("request: prefer %q select %q", g.prefer, g.sel)
		}
		start := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
		end := start.Add(30 * time.Minute)
		want := canonical.Event{
			Key: "msgraph:notif-42", Source: "msgraph", Kind: tt.kind,
			OccurredAt: time.Date(2026, 3, 2, 10, 1, 2, 123456700, time.UTC),
			GroupKey:   "email:ada@example.com",
			Subject:    canonical.Person{Emails: []string{"ada@example.com"}, Name: "Ada Lovelace"},
			Actor:      &canonical.Actor{Email: "rep@acme.com", Name: "Rep", Type: "user"},
			Fields: map[string]map[string]string{"contact": {
				"email": "ada@example.com", "last_activity_at": "2026-03-02T10:01:02Z",
			}},
			Activity: &canonical.Activity{
				ID: "meeting:040000008200E00074C5B7101A82E008000000001", Type: "meeting", Status: tt.status,
				Subject: "Demo", StartAt: &start, EndAt: &end,
				Participants: []canonical.Participant{
					{Role: "organizer", Email: "rep@acme.com", Name: "Rep"},
					{Role: "attendee", Email: "ada@example.com", Name: "Ada Lovelace"},
					{Role: "attendee", Email: "rep@acme.com", Name: "Rep"},
				},
				Attrs: map[string]string{"mailbox": "rep@acme.com"},
			},
			ExternalIDs: ev.ExternalIDs, MappingVersion: "msgraph/1", PayloadHash: ev.PayloadHash,
			Unmapped: []string{"value[].encryptedContent"},
		}
		if diff := cmp.Diff(want, ev); diff != "" {
			t.Errorf("isCancelled=%s: hydrated mismatch (-want +got):\n%s", tt.cancelled, diff)
		}
	}
}

func TestHydrateErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"404", 404, `{"error":{"code":"ErrorItemNotFound"}}`, connector.ErrNotFound},
		{"429", 429, ``, connector.ErrTransient},
		{"500", 500, ``, connector.ErrTransient},
		{"504", 504, ``, connector.ErrTransient},
		{"bad json", 200, `{`, connector.ErrUnusable},
		{"bad time", 200, `{"receivedDateTime":"noon"}`, connector.ErrUnusable},
		{"401 token rejected", 401, `{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid."}}`, connector.ErrPermanent},
		{"403 permission missing", 403, `{"error":{"code":"ErrorAccessDenied","message":"Access is denied. Check credentials and try again."}}`, connector.ErrPermanent},
		{"400 bad request", 400, `{"error":{"code":"ErrorInvalidIdMalformed","message":"Id is malformed."}}`, connector.ErrPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &graph{t: t, status: tt.status, body: tt.body, users: map[string]string{"5f1c": user5f1c}}
			srv := g.server()
			defer srv.Close()
			ev := thin(t, itemMsg)
			err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Hydrate: got %v, want %v", err, tt.want)
			}
			if ev.Hydrate == nil {
				t.Error("failed hydrate cleared the reference")
			}
		})
	}
	t.Run("401 is permanent, not transient", func(t *testing.T) {
		g := &graph{t: t, status: 401}
		srv := g.server()
		defer srv.Close()
		ev := thin(t, itemMsg)
		err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()})
		if !errors.Is(err, connector.ErrPermanent) || errors.Is(err, connector.ErrTransient) || errors.Is(err, connector.ErrNotFound) {
			t.Fatalf("Hydrate: got %v, want ErrPermanent only", err)
		}
		if strings.Contains(err.Error(), "graph-token") {
			t.Fatalf("error leaks the token: %v", err)
		}
	})
	t.Run("unknown mailbox owner is not found", func(t *testing.T) {
		g := &graph{t: t, body: receivedMessage}
		srv := g.server()
		defer srv.Close()
		ev := thin(t, itemMsg)
		err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()})
		if !errors.Is(err, connector.ErrNotFound) {
			t.Fatalf("Hydrate: got %v, want ErrNotFound", err)
		}
	})
	t.Run("network error", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL
		srv.Close()
		ev := thin(t, itemMsg)
		err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: base, Client: http.DefaultClient})
		if !errors.Is(err, connector.ErrTransient) {
			t.Fatalf("Hydrate: got %v, want ErrTransient", err)
		}
	})
	t.Run("deleted message is skipped without a call", func(t *testing.T) {
		ev := thin(t, strings.Replace(itemMsg, `"created"`, `"deleted"`, 1))
		err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: "http://127.0.0.1:1", Client: http.DefaultClient})
		if !errors.Is(err, connector.ErrSkipped) || !errors.Is(err, connector.ErrNotFound) {
			t.Fatalf("Hydrate: got %v, want ErrSkipped (and ErrNotFound)", err)
		}
	})
	t.Run("deleted event no longer readable", func(t *testing.T) {
		g := &graph{t: t, status: 404, body: `{"error":{"code":"ErrorItemNotFound","message":"The specified object was not found in the store."}}`}
		srv := g.server()
		defer srv.Close()
		ev := thin(t, strings.Replace(itemEvt, `"updated"`, `"deleted"`, 1))
		err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()})
		if !errors.Is(err, connector.ErrNotFound) || errors.Is(err, connector.ErrSkipped) {
			t.Fatalf("Hydrate: got %v, want ErrNotFound", err)
		}
	})
	t.Run("resource escaping the base", func(t *testing.T) {
		for _, res := range []string{"https://evil.example/x/messages/1", "//evil.example/messages/1", "users/u/../../messages/1", "users/u/messages/1?$expand=x"} {
			ev := canonical.Event{Key: "k", Hydrate: &canonical.HydrateRef{Object: "message", Resource: res, Change: "created"}}
			err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: "https://graph.microsoft.com/v1.0", Client: doerFunc(func(*http.Request) (*http.Response, error) {
				t.Fatalf("resource %q reached the network", res)
				return nil, nil
			})})
			if !errors.Is(err, connector.ErrUnusable) {
				t.Errorf("Hydrate(%q): got %v, want ErrUnusable", res, err)
			}
		}
	})
	t.Run("not thin", func(t *testing.T) {
		if err := New().Hydrate(context.Background(), &canonical.Event{}, sec, connector.API{}); !errors.Is(err, connector.ErrUnusable) {
			t.Fatalf("Hydrate: got %v, want ErrUnusable", err)
		}
	})
	t.Run("no token", func(t *testing.T) {
		ev := thin(t, itemMsg)
		if err := New().Hydrate(context.Background(), &ev, connector.Secret{}, connector.API{}); !errors.Is(err, connector.ErrPermanent) {
			t.Fatalf("Hydrate without access_token: got %v, want ErrPermanent", err)
		}
	})
}

type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

func FuzzVerify(f *testing.F) {
	for _, s := range []string{sampleBody, `{}`, `null`, `{"value":null}`, `{"value":[null,1,"x"]}`, `{"value":[{"clientState":null}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := New().Verify(req(string(body)), sec, time.Now()); err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
			t.Fatalf("Verify: %v does not wrap ErrUnauthenticated", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{sampleBody, `{}`, `null`, `{"value":[{"clientState":"` + state + `","lifecycleEvent":"missed"}]}`,
		`{"value":[{"clientState":"` + state + `","subscriptionId":"s","changeType":"x","resource":"/messages/"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := New().Parse(req(string(body)), sec)
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
