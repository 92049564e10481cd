package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/tools/samples"
)

// Every connector's sample, posted over HTTP, lands on the FIFO queue as exactly the canonical
// events its connector derives from it, with the FIFO ids derived from key and group key.
func TestIngestEveryConnectorSample(t *testing.T) {
	s := startStack(t, false)
	for _, name := range registry.Names() {
		t.Run(name, func(t *testing.T) {
			ev := s.sample(name)
			want, err := samples.ParseEvent(ev, name, s.secrets[name], time.Now())
			if err != nil {
				t.Fatalf("sample does not parse: %v", err)
			}
			status, body := s.post(ev)
			if status != 200 && status != 202 {
				t.Fatalf("POST /webhooks/%s = %d %s, want 2xx", name, status, body)
			}
			got := s.drain()
			if diff := cmp.Diff(keysOf(want), keysOf(got)); diff != "" {
				t.Fatalf("queued keys (-want +got):\n%s", diff)
			}
			for i := range got {
				w := want[i]
				g := got[i]
				if g.Kind != w.Kind || g.GroupKey != w.GroupKey || g.PayloadHash != w.PayloadHash || g.Source != name || g.MappingVersion == "" {
					t.Errorf("queued event %s = kind %s group %s hash %s; want kind %s group %s hash %s", g.Key, g.Kind, g.GroupKey, g.PayloadHash, w.Kind, w.GroupKey, w.PayloadHash)
				}
				if g.ReceivedAt.IsZero() {
					t.Errorf("queued event %s has no received_at", g.Key)
				}
			}
		})
	}
}

// The same delivery posted three times is queued once: SQS deduplicates on sha256(key).
func TestIngestDuplicateDeliveriesQueueOnce(t *testing.T) {
	s := startStack(t, false)
	for _, name := range []string{"twilio", "typeform", "generic"} {
		ev := s.sample(name)
		for i := 0; i < 3; i++ {
			if status, body := s.post(ev); status != 200 {
				t.Fatalf("%s delivery %d: %d %s", name, i+1, status, body)
			}
		}
	}
	got := s.drain()
	if len(got) != 3 {
		t.Errorf("3 connectors × 3 identical deliveries queued %d messages (%v), want 3", len(got), keysOf(got))
	}
}

// A Graph delivery with three notifications yields three messages.
func TestIngestGraphBatch(t *testing.T) {
	s := startStack(t, false)
	state := s.secrets["msgraph"].Get("client_state")
	var items []string
	for i := 1; i <= 3; i++ {
		items = append(items, fmt.Sprintf(`{"subscriptionId":"sub-1","changeType":"created","clientState":%q,`+
			`"resource":"users/sam.rivera@example.net/messages/M%d","tenantId":"t1",`+
			`"resourceData":{"@odata.type":"#Microsoft.Graph.Message","@odata.etag":"W/\"E%d\"","id":"M%d"}}`, state, i, i, i))
	}
	ev := s.signed("msgraph", []byte(`{"value":[`+strings.Join(items, ",")+`]}`), "application/json")
	if status, body := s.post(ev); status != 202 {
		t.Fatalf("Graph delivery = %d %s, want 202", status, body)
	}
	if got := s.drain(); len(got) != 3 {
		t.Errorf("Graph delivery with 3 notifications queued %d messages, want 3", len(got))
	}
}

// A Meta delivery with 25 changes yields 25 messages (split into SQS batches of 10).
func TestIngestMetaBatch(t *testing.T) {
	s := startStack(t, false)
	var changes []string
	for i := 0; i < 25; i++ {
		changes = append(changes, fmt.Sprintf(`{"field":"leadgen","value":{"leadgen_id":"9000000000%02d","page_id":"104857600012345",`+
			`"form_id":"771122334455667","created_time":%d}}`, i, 1764400000+i))
	}
	body := `{"object":"page","entry":[{"id":"104857600012345","time":1764400100,"changes":[` + strings.Join(changes, ",") + `]}]}`
	if status, resp := s.post(s.signed("meta-leads", []byte(body), "application/json")); status != 200 {
		t.Fatalf("Meta delivery = %d %s, want 200", status, resp)
	}
	if got := s.drain(); len(got) != 25 {
		t.Errorf("Meta delivery with 25 changes queued %d messages, want 25", len(got))
	}
}

// Unauthenticated deliveries get 401 and store nothing; authentic but unusable ones are
// quarantined (one object per delivery, however often it is retried) and acknowledged with 202.
func TestIngestRefusalsAndQuarantine(t *testing.T) {
	s := startStack(t, false)
	good := s.sample("typeform")
	tampered := good
	tampered.Body = strings.Replace(good.Body, "ada@example.com", "eve@example.com", 1)
	unsigned := good
	unsigned.Headers = map[string]string{"content-type": "application/json"}
	for _, c := range []struct {
		name string
		ev   events.APIGatewayV2HTTPRequest
	}{{"tampered", tampered}, {"unsigned", unsigned}} {
		status, body := s.post(c.ev)
		if status != 401 || !strings.Contains(body, "unauthenticated") {
			t.Errorf("%s delivery = %d %s, want 401 unauthenticated", c.name, status, body)
		}
	}
	junk := s.signed("typeform", []byte(`{"event_id":"x","event_type":"form_response","form_response":"not an object"}`), "application/json")
	for i := 0; i < 2; i++ {
		status, body := s.post(junk)
		if status != 202 || !strings.Contains(body, "quarantined") {
			t.Fatalf("authentic unusable delivery = %d %s, want 202 quarantined", status, body)
		}
	}
	if got := s.drain(); len(got) != 0 {
		t.Errorf("refused and quarantined deliveries queued %d messages, want none", len(got))
	}
	q := s.quarantined()
	if len(q) != 1 || !strings.HasPrefix(q[0], "quarantine/typeform/") {
		t.Errorf("quarantine holds %v, want one object under quarantine/typeform/", q)
	}
}

// When SQS refuses the send, the vendor gets a 5xx (so it retries), never a 2xx.
func TestIngestQueueFailureIs5xx(t *testing.T) {
	s := startStack(t, false)
	if _, err := sqs.NewFromConfig(s.AWS).DeleteQueue(context.Background(), &sqs.DeleteQueueInput{
		QueueUrl: aws.String(s.Stack.Physical["IngestQueue"].Ref)}); err != nil {
		t.Fatal(err)
	}
	status, body := s.post(s.sample("twilio"))
	if status < 500 {
		t.Fatalf("delivery with the queue gone = %d %s, want 5xx", status, body)
	}
	var e map[string]string
	if err := json.Unmarshal([]byte(body), &e); err != nil || e["error"] != "unavailable" {
		t.Errorf("error body %q: want {\"error\":\"unavailable\"} with no internal detail", body)
	}
}

// breakQueue deletes the ingest queue (so every send fails) and returns a function that recreates
// it with the same name and attributes (moto keeps the same URL).
func (s *testStack) breakQueue() (restore func()) {
	s.t.Helper()
	ctx := context.Background()
	client := sqs.NewFromConfig(s.AWS)
	url := s.Stack.Physical["IngestQueue"].Ref
	attrs, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll}})
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := client.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}); err != nil {
		s.t.Fatal(err)
	}
	return func() {
		keep := map[string]string{}
		for _, k := range []string{"FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
			"VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy"} {
			if v, ok := attrs.Attributes[k]; ok {
				keep[k] = v
			}
		}
		name := url[strings.LastIndex(url, "/")+1:]
		out, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: keep})
		if err != nil {
			s.t.Fatal(err)
		}
		if got := aws.ToString(out.QueueUrl); got != url {
			s.t.Fatalf("recreated queue at %s, want %s", got, url)
		}
	}
}

// Mailgun's replay protection must not refuse the vendor's own retry: a delivery answered 503
// because SQS refused it is accepted when Mailgun re-sends the same signed body (before the fix
// the first attempt had already claimed the token, so the retry got 401 and the event was lost).
// A different body under the same signature is still a replay.
func TestIngestMailgunRetryAfter503IsAccepted(t *testing.T) {
	s := startStack(t, false)
	ev := s.sample("mailgun")
	restore := s.breakQueue()
	if status, body := s.post(ev); status != 503 {
		t.Fatalf("delivery with SQS refusing = %d %s, want 503", status, body)
	}
	restore()
	if status, body := s.post(ev); status != 200 {
		t.Fatalf("Mailgun's retry of the same signed delivery = %d %s, want 200", status, body)
	}
	if got := s.drain(); len(got) != 1 {
		t.Fatalf("queued %d events after the retry, want 1", len(got))
	}
	forged := ev
	forged.Body = strings.Replace(ev.Body, `"delivered"`, `"complained"`, 1)
	if forged.Body == ev.Body {
		t.Fatal("sample has no delivered event to alter")
	}
	if status, body := s.post(forged); status != 401 {
		t.Errorf("another body under the same signature = %d %s, want 401 (a replayed token)", status, body)
	}
	if got := s.drain(); len(got) != 0 {
		t.Errorf("the replay queued %d events, want none", len(got))
	}
}

// A 900 KB authentic generic lead is bigger than one SQS message can be (256 KiB): it is refused
// with 413 before anything is stored, never answered 5xx (which the vendor would retry forever).
func TestIngestOversizedEventIs413(t *testing.T) {
	s := startStack(t, false)
	body := fmt.Sprintf(`{"schema":"crmsync.generic/v1","type":"lead","occurred_at":"2025-03-11T14:55:03Z",`+
		`"external_id":"big-1","person":{"emails":["big@example.com"],"job_title":%q}}`, strings.Repeat("x", 900_000))
	for i := 0; i < 2; i++ {
		status, resp := s.post(s.signed("generic", []byte(body), "application/json"))
		if status != 413 {
			t.Fatalf("900 KB lead (attempt %d) = %d %s, want 413", i+1, status, resp)
		}
		var e map[string]string
		if err := json.Unmarshal([]byte(resp), &e); err != nil || e["error"] != "payload_too_large" {
			t.Errorf("error body %q: want {\"error\":\"payload_too_large\",...}", resp)
		}
	}
	if got := s.drain(); len(got) != 0 {
		t.Errorf("queued %d events, want none", len(got))
	}
	if q := s.quarantined(); len(q) != 0 {
		t.Errorf("stored %v, want nothing", q)
	}
}
