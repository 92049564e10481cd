package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/metaleads"
	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/tools/moto"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

// local is a FIFO queue and a quarantine bucket on moto for one test.
type local struct {
	t      *testing.T
	sqs    *sqs.Client
	s3     *s3.Client
	queue  string
	bucket string
}

func newLocal(t *testing.T) *local {
	t.Helper()
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	l := &local{t: t, sqs: sqs.NewFromConfig(cfg), s3: s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })}
	name := fmt.Sprintf("items%d", time.Now().UnixNano()%1e12)
	q, err := l.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + ".fifo"),
		Attributes: map[string]string{"FifoQueue": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	l.queue = aws.ToString(q.QueueUrl)
	l.bucket = name
	if _, err := l.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *local) handler(conn connector.Connector, sec connector.Secret) *ingest.Handler {
	return ingest.New(ingest.Config{SecretID: "s", QueueURL: l.queue, Bucket: l.bucket}, conn,
		ingest.Deps{Secrets: staticSecret(sec), SQS: l.sqs, S3: l.s3})
}

// queued receives and deletes every message on the queue.
func (l *local) queued() []canonical.Event {
	l.t.Helper()
	var out []canonical.Event
	for {
		r, err := l.sqs.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(l.queue), MaxNumberOfMessages: 10})
		if err != nil {
			l.t.Fatal(err)
		}
		if len(r.Messages) == 0 {
			return out
		}
		for _, m := range r.Messages {
			ev, err := canonical.Unmarshal([]byte(aws.ToString(m.Body)))
			if err != nil {
				l.t.Fatal(err)
			}
			out = append(out, *ev)
			if _, err := l.sqs.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(l.queue), ReceiptHandle: m.ReceiptHandle}); err != nil {
				l.t.Fatal(err)
			}
		}
	}
}

// quarantined returns every stored object, by key.
func (l *local) quarantined() map[string]ingest.Quarantined {
	l.t.Helper()
	ctx := context.Background()
	list, err := l.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(l.bucket)})
	if err != nil {
		l.t.Fatal(err)
	}
	out := map[string]ingest.Quarantined{}
	for _, o := range list.Contents {
		obj, err := l.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(l.bucket), Key: o.Key})
		if err != nil {
			l.t.Fatal(err)
		}
		b, _ := io.ReadAll(obj.Body)
		obj.Body.Close()
		var q ingest.Quarantined
		if err := json.Unmarshal(b, &q); err != nil {
			l.t.Fatalf("%s: %v", aws.ToString(o.Key), err)
		}
		out[aws.ToString(o.Key)] = q
	}
	return out
}

func post(body []byte, headers map[string]string) events.APIGatewayV2HTTPRequest {
	h := map[string]string{"content-type": "application/json", "host": "hooks.example.com"}
	for k, v := range headers {
		h[k] = v
	}
	ev := events.APIGatewayV2HTTPRequest{RawPath: "/webhooks/x", Body: string(body), Headers: h}
	ev.RequestContext.HTTP.Method = "POST"
	ev.RequestContext.DomainName = "hooks.example.com"
	return ev
}

const graphState = "cs-items-test"

// graphMixed is a Graph delivery as production sends it: a message notification, a contact
// notification (a resource crmsync does not map), a notification with a change type Graph does
// not send for mail, and a lifecycle notification.
func graphMixed() (body string, good, contact, unknown string) {
	good = `{"subscriptionId":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","subscriptionExpirationDateTime":"2026-03-14T15:00:00.0000000+00:00",` +
		`"changeType":"created","resource":"Users/3f0b6c2e-8d4a-4e71-b5c9-2a7d1e9f4b60/Messages/AAMkAGI1=","tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95",` +
		`"clientState":"` + graphState + `","resourceData":{"@odata.type":"#Microsoft.Graph.Message",` +
		`"@odata.id":"Users/3f0b6c2e-8d4a-4e71-b5c9-2a7d1e9f4b60/Messages/AAMkAGI1=","@odata.etag":"W/\"CQAAABYAAAD\"","id":"AAMkAGI1="}}`
	contact = `{"subscriptionId":"0b2d9a61-5e3c-4b8e-a2f4-6c1d7e9b3a50","subscriptionExpirationDateTime":"2026-03-14T15:00:00.0000000+00:00",` +
		`"changeType":"created","resource":"Users/3f0b6c2e-8d4a-4e71-b5c9-2a7d1e9f4b60/Contacts/AAMkAGC2=","tenantId":"5e1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b",` +
		`"clientState":"` + graphState + `","resourceData":{"@odata.type":"#Microsoft.Graph.Contact",` +
		`"@odata.id":"Users/3f0b6c2e-8d4a-4e71-b5c9-2a7d1e9f4b60/Contacts/AAMkAGC2=","@odata.etag":"W/\"EQAAABYAAAD\"","id":"AAMkAGC2="}}`
	unknown = strings.NewReplacer(`"changeType":"created"`, `"changeType":"moved"`, "AAMkAGI1=", "AAMkAGI3=").Replace(good)
	lifecycle := `{"subscriptionId":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","subscriptionExpirationDateTime":"2026-03-14T15:00:00.0000000+00:00",` +
		`"tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95","clientState":"` + graphState + `","lifecycleEvent":"reauthorizationRequired"}`
	return `{"value":[` + good + `,` + contact + `,` + unknown + `,` + lifecycle + `]}`, good, contact, unknown
}

// One unsupported or malformed notification no longer quarantines the whole Graph delivery: the
// good one is queued, each bad one is stored alone (its own bytes, its reason, the delivery it
// came from), the lifecycle one is queued for the subscription manager (once per receipt), never
// quarantined, and the answer is Graph's 202. A retry of the same
// delivery stores and queues nothing new. Before, the whole delivery was quarantined and the
// good notification never queued.
func TestGraphBatchItemByItem(t *testing.T) {
	l := newLocal(t)
	sec := connector.Secret{Current: map[string]string{"client_state": graphState}}
	h := l.handler(msgraph.New(), sec)
	body, good, contact, unknown := graphMixed()
	for attempt := 0; attempt < 2; attempt++ {
		resp, err := h.Handle(context.Background(), post([]byte(body), nil))
		if err != nil || resp.StatusCode != 202 {
			t.Fatalf("attempt %d: %d %s %v, want 202", attempt+1, resp.StatusCode, resp.Body, err)
		}
	}
	var messages, lifecycles []canonical.Event
	for _, ev := range l.queued() {
		if ev.Hydrate != nil && ev.Hydrate.Object == msgraph.LifecycleObject {
			lifecycles = append(lifecycles, ev)
		} else {
			messages = append(messages, ev)
		}
	}
	if len(messages) != 1 || messages[0].PayloadHash != canonical.PayloadHash([]byte(good)) {
		t.Fatalf("queued %d message events (%v), want the message notification once", len(messages), keysOf(messages))
	}
	if len(lifecycles) != 2 {
		t.Fatalf("queued %d lifecycle events (%v), want one per receipt (2)", len(lifecycles), keysOf(lifecycles))
	}
	q := l.quarantined()
	if len(q) != 2 {
		t.Fatalf("quarantined %d objects, want 2 (one per bad item): %v", len(q), q)
	}
	byItem := map[int]ingest.Quarantined{}
	for key, item := range q {
		if !strings.HasPrefix(key, "quarantine/msgraph/") || item.Item == nil {
			t.Fatalf("object %s = %+v, want an item under quarantine/msgraph/", key, item)
		}
		if item.Delivery != canonical.PayloadHash([]byte(body)) || item.Connector != "msgraph" {
			t.Errorf("object %s: delivery %q connector %q", key, item.Delivery, item.Connector)
		}
		byItem[*item.Item] = item
	}
	if c := byItem[1]; string(c.Body) != `{"value":[`+contact+`]}` || !strings.Contains(c.Reason, "neither a message nor an event") {
		t.Errorf("item 1 = %s (%s)", c.Body, c.Reason)
	}
	if u := byItem[2]; string(u.Body) != `{"value":[`+unknown+`]}` || !strings.Contains(u.Reason, "unsupported changeType") {
		t.Errorf("item 2 = %s (%s)", u.Body, u.Reason)
	}
}

// A bad item is stored only once whatever delivery it comes in: the key is its own bytes'.
func TestQuarantinedItemKeyIsTheItems(t *testing.T) {
	l := newLocal(t)
	h := l.handler(msgraph.New(), connector.Secret{Current: map[string]string{"client_state": graphState}})
	_, good, contact, _ := graphMixed()
	for _, body := range []string{`{"value":[` + contact + `]}`, `{"value":[` + good + `,` + contact + `]}`} {
		if resp, _ := h.Handle(context.Background(), post([]byte(body), nil)); resp.StatusCode != 202 {
			t.Fatalf("%d %s", resp.StatusCode, resp.Body)
		}
	}
	if q := l.quarantined(); len(q) != 1 {
		t.Errorf("the same contact notification in two deliveries stored %d objects, want 1", len(q))
	}
}

// Meta: one valid and one malformed leadgen change in a signed delivery. The valid lead is
// queued, the malformed change is stored alone, and the answer is 200 naming both counts.
func TestMetaBatchItemByItem(t *testing.T) {
	l := newLocal(t)
	sec := connector.Secret{Current: map[string]string{"app_secret": "meta-items-secret"}}
	conn := metaleads.New()
	h := l.handler(conn, sec)
	good := `{"field":"leadgen","value":{"ad_id":"238500011122233","form_id":"771122334455667","leadgen_id":"918273645501234","created_time":1741703398,"page_id":"104857600012345","adgroup_id":"238500011122233"}}`
	bad := `{"field":"leadgen","value":{"form_id":"771122334455667","created_time":"yesterday","leadgen_id":"918273645509999","page_id":"104857600012345"}}`
	body := `{"object":"page","entry":[{"id":"104857600012345","time":1741703401,"changes":[` + good + `,` + bad + `]}]}`
	req := &connector.Request{Body: []byte(body)}
	if err := conn.Sign(req, sec, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := h.Handle(context.Background(), post([]byte(body), req.Headers))
	if err != nil || resp.StatusCode != 200 || resp.Body != `{"status":"accepted","events":1,"quarantined":1}` {
		t.Fatalf("answer %d %s %v, want 200 with one event and one quarantined", resp.StatusCode, resp.Body, err)
	}
	if got := l.queued(); len(got) != 1 || got[0].Key != "meta-leads:918273645501234" {
		t.Fatalf("queued %v, want the valid lead", keysOf(got))
	}
	q := l.quarantined()
	if len(q) != 1 {
		t.Fatalf("quarantined %d objects, want 1", len(q))
	}
	for _, item := range q {
		want := `{"object":"page","entry":[{"id":"104857600012345","time":1741703401,"changes":[` + bad + `]}]}`
		if string(item.Body) != want || item.Item == nil || *item.Item != 1 || !strings.Contains(item.Reason, "entry[0].changes[1]") {
			t.Errorf("stored %s item %v reason %q", item.Body, item.Item, item.Reason)
		}
	}
}

// The answer is 2xx only when every good item is queued: with SQS refusing, a mixed delivery is
// 503 (the vendor re-sends; the quarantined items and any queued events dedupe by key).
func TestBatchIs5xxWhenSQSRefuses(t *testing.T) {
	l := newLocal(t)
	if _, err := l.sqs.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: aws.String(l.queue)}); err != nil {
		t.Fatal(err)
	}
	h := l.handler(msgraph.New(), connector.Secret{Current: map[string]string{"client_state": graphState}})
	body, _, _, _ := graphMixed()
	resp, err := h.Handle(context.Background(), post([]byte(body), nil))
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("SQS refusing: %d %s %v, want 503", resp.StatusCode, resp.Body, err)
	}
}

// ... and when a bad item cannot be stored, the answer is 503 too (it would be lost).
func TestBatchIs5xxWhenQuarantineFails(t *testing.T) {
	l := newLocal(t)
	h := ingest.New(ingest.Config{SecretID: "s", QueueURL: l.queue, Bucket: l.bucket + "-missing"}, msgraph.New(),
		ingest.Deps{Secrets: staticSecret(connector.Secret{Current: map[string]string{"client_state": graphState}}), SQS: l.sqs, S3: l.s3})
	body, _, _, _ := graphMixed()
	if resp, _ := h.Handle(context.Background(), post([]byte(body), nil)); resp.StatusCode != 503 {
		t.Fatalf("quarantine failing: %d %s, want 503", resp.StatusCode, resp.Body)
	}
}

// A delivery none of whose items authenticates is still refused whole (401), and one with a
// foreign item among good ones drops only that item.
func TestGraphForeignItems(t *testing.T) {
	l := newLocal(t)
	h := l.handler(msgraph.New(), connector.Secret{Current: map[string]string{"client_state": graphState}})
	_, good, _, _ := graphMixed()
	foreign := strings.Replace(strings.Replace(good, graphState, "someone-else", 1), "AAMkAGI1=", "AAMkAGI9=", -1)
	if resp, _ := h.Handle(context.Background(), post([]byte(`{"value":[`+foreign+`]}`), nil)); resp.StatusCode != 401 {
		t.Fatalf("no authentic item: %d, want 401", resp.StatusCode)
	}
	if resp, _ := h.Handle(context.Background(), post([]byte(`{"value":[`+foreign+`,`+good+`]}`), nil)); resp.StatusCode != 202 {
		t.Fatalf("one foreign item among good ones: %d, want 202", resp.StatusCode)
	}
	if got := l.queued(); len(got) != 1 {
		t.Errorf("queued %d, want the authentic item only", len(got))
	}
	if q := l.quarantined(); len(q) != 0 {
		t.Errorf("stored %d objects for an unauthenticated item, want none", len(q))
	}
}

func keysOf(evs []canonical.Event) []string {
	var ks []string
	for _, e := range evs {
		ks = append(ks, e.Key)
	}
	sort.Strings(ks)
	return ks
}
