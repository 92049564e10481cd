package crmchange

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/worker"
)

var now = time.Date(2026, 11, 29, 19, 40, 0, 0, time.UTC)

func testPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func good() Request {
	return Request{ChangeID: "chg-1", Contact: Contact{Email: " Ada@Example.com "},
		Actor: Actor{Email: "alice@example.com", Role: "revops"}, Fields: map[string]string{"phone": "+1 (415) 555-0199"}, Lock: []string{"phone"}}
}

func TestEvent(t *testing.T) {
	pol := testPolicy(t)
	ev, err := Event(good(), pol, "arn:aws:iam::123456789012:user/crm", now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Key != "crm:chg-1" || ev.Source != "crm" || ev.Kind != canonical.KindCRMChange || ev.GroupKey != "email:ada@example.com" {
		t.Errorf("event = key %s source %s kind %s group %s", ev.Key, ev.Source, ev.Kind, ev.GroupKey)
	}
	if ev.Fields["contact"]["phone"] != "+14155550199" || ev.Fields["contact"+worker.LockSuffix]["phone"] != "lock" {
		t.Errorf("fields = %v", ev.Fields)
	}
	if a := ev.Actor; a == nil || a.ID != "arn:aws:iam::123456789012:user/crm" || a.Email != "alice@example.com" || a.Role != "revops" {
		t.Errorf("actor = %+v", ev.Actor)
	}
	if !ev.OccurredAt.Equal(now) || !ev.ReceivedAt.Equal(now) || len(ev.Subject.Emails) != 1 || ev.PayloadHash == "" {
		t.Errorf("event = %+v", ev)
	}

	// The hash depends on the content, not on when it was received.
	again, _ := Event(good(), pol, "arn:aws:iam::123456789012:user/crm", now.Add(time.Hour))
	if again.PayloadHash != ev.PayloadHash {
		t.Error("a retry of the same change has another payload hash")
	}
	other := good()
	other.Fields = map[string]string{"phone": "+14155550111"}
	if o, _ := Event(other, pol, "arn:aws:iam::123456789012:user/crm", now); o.PayloadHash == ev.PayloadHash {
		t.Error("another value has the same payload hash")
	}

	byID := good()
	byID.Contact = Contact{ID: "c-123"}
	byID.Lock = nil
	ev, err = Event(byID, pol, "", now)
	if err != nil || ev.GroupKey != worker.ContactGroupKey("c-123") || ev.ExternalIDs[worker.ContactIDKey] != "c-123" {
		t.Errorf("by id: %+v %v", ev, err)
	}
	byPhone := good()
	byPhone.Contact = Contact{Phone: "+1 415 555 0123"}
	byPhone.OccurredAt = "2026-11-01T10:00:00+01:00"
	ev, err = Event(byPhone, pol, "", now)
	if err != nil || ev.GroupKey != "phone:+14155550123" || !ev.OccurredAt.Equal(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("by phone: %+v %v", ev, err)
	}
}

func TestEventInvalid(t *testing.T) {
	pol := testPolicy(t)
	for _, c := range []struct {
		name string
		edit func(*Request)
		want string
	}{
		{"no change id", func(r *Request) { r.ChangeID = " " }, "change_id is required"},
		{"bad change id", func(r *Request) { r.ChangeID = "has space" }, "change_id \"has space\" is not valid"},
		{"no contact", func(r *Request) { r.Contact = Contact{} }, "contact must name exactly one"},
		{"two contacts", func(r *Request) { r.Contact.Phone = "+14155550123" }, "contact must name exactly one"},
		{"bad contact email", func(r *Request) { r.Contact.Email = "nope" }, "contact.email \"nope\" is not an email address"},
		{"bad contact phone", func(r *Request) { r.Contact = Contact{Phone: "12"} }, "contact.phone \"12\" is not a phone number"},
		{"no actor", func(r *Request) { r.Actor.Email = "" }, "actor.email is required"},
		{"no role", func(r *Request) { r.Actor.Role = "" }, "actor.role is required"},
		{"bad role", func(r *Request) { r.Actor.Role = "Rev Ops" }, "actor.role \"Rev Ops\" is not valid"},
		{"lock without override", func(r *Request) { r.Actor.Role = "sales" }, "actor.role \"sales\" may not lock or unlock fields (override roles: admin, revops)"},
		{"unknown field", func(r *Request) { r.Fields["shoe_size"] = "44" }, "fields: unknown field \"shoe_size\""},
		{"unknown lock", func(r *Request) { r.Lock = []string{"shoe_size"} }, "lock: unknown field \"shoe_size\""},
		{"lock and unlock", func(r *Request) { r.Unlock = []string{"phone"} }, "field \"phone\" is both locked and unlocked"},
		{"bad phone value", func(r *Request) { r.Fields["phone"] = "call me" }, "fields.phone \"call me\" is not a phone number"},
		{"nothing", func(r *Request) { r.Fields, r.Lock = nil, nil }, "nothing to change"},
		{"bad time", func(r *Request) { r.OccurredAt = "yesterday" }, "occurred_at \"yesterday\" is not an RFC 3339 time"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := good()
			c.edit(&r)
			_, err := Event(r, pol, "", now)
			var inv *InvalidError
			if !errors.As(err, &inv) || !strings.Contains(inv.Msg, c.want) {
				t.Errorf("error %v, want an InvalidError containing %q", err, c.want)
			}
		})
	}
}

type fakeSQS struct {
	in  []*sqs.SendMessageBatchInput
	err error
}

func (f *fakeSQS) SendMessageBatch(_ context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	f.in = append(f.in, in)
	if f.err != nil {
		return nil, f.err
	}
	return &sqs.SendMessageBatchOutput{Successful: []sqstypes.SendMessageBatchResultEntry{{Id: in.Entries[0].Id}}}, nil
}

func request(body string) events.APIGatewayV2HTTPRequest {
	ev := events.APIGatewayV2HTTPRequest{RawPath: "/crm/changes", Body: body,
		Headers: map[string]string{"content-type": "application/json", "authorization": "AWS4-HMAC-SHA256 Credential=..."}}
	ev.RequestContext.HTTP.Method = "POST"
	ev.RequestContext.Authorizer = &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{
		IAM: &events.APIGatewayV2HTTPRequestContextAuthorizerIAMDescription{UserARN: "arn:aws:iam::123456789012:user/crm"}}
	return ev
}

func TestHandle(t *testing.T) {
	body, _ := json.Marshal(good())
	q := &fakeSQS{}
	h := New(Config{QueueURL: "https://sqs/q.fifo", Policy: testPolicy(t), Principals: testPrincipals(t,
		"principals: [{arn: \"arn:aws:iam::123456789012:user/crm\", roles: [admin, revops]}]")},
		Deps{SQS: q, Now: func() time.Time { return now }})

	resp, _ := h.Handle(context.Background(), request(string(body)))
	if resp.StatusCode != 202 || !strings.Contains(resp.Body, `"key":"crm:chg-1"`) {
		t.Fatalf("good change = %d %s", resp.StatusCode, resp.Body)
	}
	if len(q.in) != 1 || aws.ToString(q.in[0].QueueUrl) != "https://sqs/q.fifo" || len(q.in[0].Entries) != 1 {
		t.Fatalf("sent %+v", q.in)
	}
	e := q.in[0].Entries[0]
	ev, err := canonical.Unmarshal([]byte(aws.ToString(e.MessageBody)))
	if err != nil || ev.Actor.ID != "arn:aws:iam::123456789012:user/crm" || aws.ToString(e.MessageDeduplicationId) != ev.DedupID() ||
		aws.ToString(e.MessageGroupId) != ev.GroupID() {
		t.Errorf("queued %+v (%v)", e, err)
	}

	for _, c := range []struct {
		name   string
		req    events.APIGatewayV2HTTPRequest
		status int
		want   string
	}{
		{"missing change id", request(`{"contact":{"email":"a@example.com"},"actor":{"email":"b@example.com","role":"revops"},"fields":{"phone":"+14155550199"}}`), 400, "change_id is required"},
		{"unknown member", request(`{"change_id":"x","bogus":1}`), 400, `unknown field \"bogus\"`},
		{"not json", request(`{`), 400, "body is not a CRM change"},
		{"trailing", request(string(body) + `{}`), 400, "trailing data"},
		{"media type", func() events.APIGatewayV2HTTPRequest {
			r := request(string(body))
			r.Headers["content-type"] = "text/plain"
			return r
		}(), 415, "unsupported_media_type"},
		{"too large", request(`{"change_id":"` + strings.Repeat("x", MaxBodyBytes) + `"}`), 413, "payload_too_large"},
	} {
		resp, _ := h.Handle(context.Background(), c.req)
		if resp.StatusCode != c.status || !strings.Contains(resp.Body, c.want) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, resp.StatusCode, resp.Body, c.status, c.want)
		}
	}
	if len(q.in) != 1 {
		t.Errorf("refused requests were enqueued: %d sends", len(q.in))
	}

	q.err = errors.New("throttled")
	resp, _ = h.Handle(context.Background(), request(string(body)))
	if resp.StatusCode != 503 || strings.Contains(resp.Body, "throttled") {
		t.Errorf("SQS failure = %d %s, want 503 without internals", resp.StatusCode, resp.Body)
	}
}
