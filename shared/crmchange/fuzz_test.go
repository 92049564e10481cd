package crmchange

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/policy"
)

// Any body posted to /crm/changes is refused with 4xx (and nothing enqueued) or becomes one valid
// crm.change event; never a panic or a 5xx.
func FuzzHandle(f *testing.F) {
	pol, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"change_id":"chg-1","contact":{"email":"ada@example.com"},"actor":{"email":"a@example.com","role":"revops"},"fields":{"phone":"+14155550199"},"lock":["phone"]}`), "application/json")
	f.Add([]byte(`{"change_id":"chg-1","contact":{"id":"c-1","email":"x@y"}}`), "application/json")
	f.Add([]byte(`{"change_id":"\u0000"}`), "application/json; charset=utf-8")
	f.Add([]byte(`{}`), "text/plain")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		q := &fakeSQS{}
		h := New(Config{QueueURL: "q", Policy: pol}, Deps{SQS: q, Now: func() time.Time { return now }})
		ev := events.APIGatewayV2HTTPRequest{Body: string(body), Headers: map[string]string{"content-type": contentType}}
		ev.RequestContext.HTTP.Method = "POST"
		resp, err := h.Handle(context.Background(), ev)
		if err != nil {
			t.Fatalf("Handle: %v", err)
		}
		switch {
		case resp.StatusCode == 202:
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			if len(q.in) > 0 {
				t.Fatalf("answered %d, yet enqueued", resp.StatusCode)
			}
		default:
			t.Fatalf("status %d %s", resp.StatusCode, resp.Body)
		}
	})
}
