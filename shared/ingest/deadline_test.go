package ingest_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/tools/samples"
)

// blackhole accepts connections and never answers: an AWS endpoint that hangs.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return "http://" + ln.Addr().String()
}

// The webhook answers within its deadline: when SQS hangs, it gives up DeadlineMargin before the
// invocation's deadline and answers 503 (the vendor retries), instead of running until Lambda
// kills it (a timeout, which API Gateway turns into a 5xx only after the vendor's own timeout,
// and which Graph counts against the endpoint). Before, Handle waited on SQS past the deadline.
func TestWebhookAnswersBeforeItsDeadline(t *testing.T) {
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, blackhole(t))
	if err != nil {
		t.Fatal(err)
	}
	secs, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	p := samples.Payloads["twilio"]
	body, err := os.ReadFile(filepath.Join("../../events/payloads", p.File))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ev, err := samples.WebhookEvent("twilio", body, p.ContentType, "https://hooks.example.com", secs["twilio"], now)
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := registry.New("twilio")
	h := ingest.New(ingest.Config{QueueURL: "https://sqs/q.fifo", PublicBaseURL: "https://hooks.example.com", DeadlineMargin: 300 * time.Millisecond},
		conn, ingest.Deps{Secrets: staticSecret(secs["twilio"]), SQS: sqs.NewFromConfig(cfg), S3: stubS3{}})
	deadline := time.Now().Add(1500 * time.Millisecond)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		resp, _ := h.Handle(ctx, ev)
		done <- resp.StatusCode
	}()
	select {
	case status := <-done:
		if status != 503 {
			t.Errorf("SQS hanging: answered %d, want 503", status)
		}
		if left := time.Until(deadline); left < 100*time.Millisecond {
			t.Errorf("answered %v before the deadline, want at least the margin's worth of headroom", left)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Handle did not answer within 5 s of a 1.5 s deadline")
	}
}
