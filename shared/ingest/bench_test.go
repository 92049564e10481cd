package ingest_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/tools/samples"
)

// The benchmarks measure crmsync's own work per webhook request on realistic payloads
// (events/payloads, signed with the dev secrets): AWS calls are answered by stubs, so the
// figures exclude the SDK's serialization and the network.

var benchNow = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

type stubSQS struct{}

func (stubSQS) SendMessageBatch(context.Context, *sqs.SendMessageBatchInput, ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	return &sqs.SendMessageBatchOutput{}, nil
}

type stubS3 struct{}

func (stubS3) PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	return &s3.PutObjectOutput{}, nil
}

type stubReplay struct{}

func (stubReplay) PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	return &dynamodb.PutItemOutput{}, nil
}

type staticSecret connector.Secret

func (s staticSecret) Get(context.Context, string) (connector.Secret, error) {
	return connector.Secret(s), nil
}

// signedSample is a connector's sample delivery signed at benchNow.
func signedSample(b *testing.B, name string) (events.APIGatewayV2HTTPRequest, connector.Secret) {
	b.Helper()
	secs, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		b.Fatal(err)
	}
	p := samples.Payloads[name]
	body, err := os.ReadFile(filepath.Join("../../events/payloads", p.File))
	if err != nil {
		b.Fatal(err)
	}
	ev, err := samples.WebhookEvent(name, body, p.ContentType, "https://hooks.example.com", secs[name], benchNow)
	if err != nil {
		b.Fatal(err)
	}
	return ev, secs[name]
}

// handler is the webhook function's handler for a connector as wiring/webhook.Build builds it, with its
// JSON logs and EMF metrics written (to io.Discard) as in Lambda.
func handler(b *testing.B, name string, sec connector.Secret) *ingest.Handler {
	b.Helper()
	conn, err := registry.New(name)
	if err != nil {
		b.Fatal(err)
	}
	now := func() time.Time { return benchNow }
	return ingest.New(ingest.Config{SecretID: "s", QueueURL: "q", Bucket: "b", ReplayTable: "r"}, conn, ingest.Deps{
		Secrets: staticSecret(sec), SQS: stubSQS{}, S3: stubS3{}, Replay: stubReplay{}, Now: now,
		Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: emf.New(io.Discard, now),
	})
}

// BenchmarkWebhook is one webhook request through the handler: body and content-type checks,
// verification, parsing, canonical keys, message build (SendMessageBatch input) and the
// handler's logs and metrics.
func BenchmarkWebhook(b *testing.B) {
	for _, name := range registry.Names() {
		b.Run(name, func(b *testing.B) {
			ev, sec := signedSample(b, name)
			h := handler(b, name, sec)
			ctx := context.Background()
			if resp, _ := h.Handle(ctx, ev); resp.StatusCode/100 != 2 {
				b.Fatalf("status %d: %s", resp.StatusCode, resp.Body)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_, _ = h.Handle(ctx, ev)
			}
		})
	}
}

// BenchmarkWebhookLambda is the same request as Lambda delivers it: the API Gateway event's
// JSON decoded and the response encoded by aws-lambda-go around the handler.
func BenchmarkWebhookLambda(b *testing.B) {
	for _, name := range []string{"twilio", "typeform", "mailgun"} {
		b.Run(name, func(b *testing.B) {
			ev, sec := signedSample(b, name)
			payload, err := json.Marshal(ev)
			if err != nil {
				b.Fatal(err)
			}
			lh := lambda.NewHandler(handler(b, name, sec).Handle)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := lh.Invoke(ctx, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConnector is a connector's own share: verify, parse, validate, and each event's
// message body and SQS ids.
func BenchmarkConnector(b *testing.B) {
	for _, name := range registry.Names() {
		b.Run(name, func(b *testing.B) {
			ev, sec := signedSample(b, name)
			conn, err := registry.New(name)
			if err != nil {
				b.Fatal(err)
			}
			body := []byte(ev.Body)
			req := &connector.Request{Method: "POST", Path: ev.RawPath, Headers: ev.Headers, RawQuery: ev.RawQueryString,
				Body: body, PublicURL: "https://hooks.example.com" + ev.RawPath, ReceivedAt: benchNow}
			if ev.RawQueryString != "" {
				req.PublicURL += "?" + ev.RawQueryString
			}
			if _, err := conn.Verify(req, sec, benchNow); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := conn.Verify(req, sec, benchNow); err != nil {
					b.Fatal(err)
				}
				p, err := conn.Parse(req, sec)
				if err != nil {
					b.Fatal(err)
				}
				for i := range p.Events {
					p.Events[i].ReceivedAt = benchNow
					if err := p.Events[i].Validate(); err != nil {
						b.Fatal(err)
					}
					if _, err := p.Events[i].Marshal(); err != nil {
						b.Fatal(err)
					}
					_, _ = p.Events[i].DedupID(), p.Events[i].GroupID()
				}
			}
		})
	}
}
