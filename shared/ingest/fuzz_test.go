package ingest_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/tools/samples"
)

// fuzzSQS counts the messages the handler sends.
type fuzzSQS struct{ sent atomic.Int64 }

func (f *fuzzSQS) SendMessageBatch(_ context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	f.sent.Add(int64(len(in.Entries)))
	return &sqs.SendMessageBatchOutput{}, nil
}

// The whole webhook request path of every connector, on any request: it answers one of the
// statuses the design allows, and enqueues nothing unless it answers 2xx.
func FuzzHandle(f *testing.F) {
	secs, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		f.Fatal(err)
	}
	names := registry.Names()
	now := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	for i, name := range names {
		p := samples.Payloads[name]
		body, err := os.ReadFile(filepath.Join("../../events/payloads", p.File))
		if err != nil {
			f.Fatal(err)
		}
		ev, err := samples.WebhookEvent(name, body, p.ContentType, "https://hooks.example.com", secs[name], now)
		if err != nil {
			f.Fatal(err)
		}
		sig := ""
		for _, h := range []string{"x-twilio-signature", "calendly-webhook-signature", "typeform-signature", "x-hub-signature-256", "webhook-signature"} {
			if v := ev.Headers[h]; v != "" {
				sig = v
			}
		}
		f.Add(uint8(i), "POST", ev.Headers["content-type"], ev.RawQueryString, sig, ev.Headers["webhook-id"], ev.Headers["webhook-timestamp"], []byte(ev.Body), false)
	}
	f.Add(uint8(0), "GET", "", "hub.mode=subscribe&hub.verify_token=x&hub.challenge=1", "", "", "", []byte{}, false)
	f.Add(uint8(1), "POST", "application/json", "validationToken=abc", "", "", "", []byte("{"), true)
	allowed := map[int]bool{200: true, 202: true, 400: true, 401: true, 403: true, 405: true, 413: true, 415: true}
	f.Fuzz(func(t *testing.T, which uint8, method, contentType, rawQuery, sig, id, ts string, body []byte, b64 bool) {
		name := names[int(which)%len(names)]
		conn, _ := registry.New(name)
		q := &fuzzSQS{}
		h := ingest.New(ingest.Config{SecretID: "s", QueueURL: "q", Bucket: "b", ReplayTable: "r", MaxBodyBytes: 64 << 10}, conn, ingest.Deps{
			Secrets: staticSecret(secs[name]), SQS: q, S3: stubS3{}, Replay: stubReplay{}, Now: func() time.Time { return now },
			Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: emf.New(io.Discard, func() time.Time { return now }),
		})
		ev := events.APIGatewayV2HTTPRequest{RawPath: "/webhooks/" + name, RawQueryString: rawQuery, Body: string(body), IsBase64Encoded: b64,
			Headers: map[string]string{"content-type": contentType, "x-twilio-signature": sig, "calendly-webhook-signature": sig,
				"typeform-signature": sig, "x-hub-signature-256": sig, "webhook-signature": sig, "webhook-id": id, "webhook-timestamp": ts,
				"host": "hooks.example.com", "x-forwarded-proto": "https"}}
		ev.RequestContext.HTTP.Method = method
		ev.RequestContext.DomainName = "hooks.example.com"
		resp, err := h.Handle(context.Background(), ev)
		if err != nil {
			t.Fatalf("Handle error: %v", err)
		}
		if !allowed[resp.StatusCode] {
			t.Fatalf("status %d %s is not one the webhook may answer", resp.StatusCode, resp.Body)
		}
		if resp.StatusCode/100 != 2 && q.sent.Load() > 0 {
			t.Fatalf("answered %d yet enqueued %d message(s)", resp.StatusCode, q.sent.Load())
		}
	})
}
