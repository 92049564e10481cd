package costmodel_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"

	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/tools/costmodel"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samples"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

// The per-event AWS budgets of the design's reference events, counted exactly on the local stack
// (moto) by the same middleware `make bench` uses: every request by service and API, and the
// DynamoDB write units computed from the items written. They are exact on purpose: a change that
// adds a request or grows an item past a KB boundary fails here. If the change is intended,
// update the budget below and re-run `make bench` (docs/benchmarks.md). Timings are never
// asserted.

// budget is one event's exact usage.
type budget struct {
	requests map[string]int // "Service Operation" -> calls
	// transactItems is the items of the event's one TransactWriteItems (0: none).
	transactItems int
	// writeUnits is the tables' write units, indexWriteUnits the index propagation's.
	writeUnits, indexWriteUnits float64
	// readUnits is the tables' read units.
	readUnits float64
}

var (
	// A Twilio status callback (completed) of a known call of a known contact: one transaction
	// of the ledger, the profile, the activity and one audit item holding the event's decisions
	// on the contact (the activity's log is written only for entries the bounded activity
	// evicts). Every item is under 1 KB (the ledger's event, the activity's document, the
	// profile's fields and the audit's decisions are stored packed), so each costs the
	// transactional minimum of 2 units; the indexes add the ledger's two entries, the profile's
	// ByAccount entry and the activity's (no index follows a profile's change time: the jobs find
	// the window's contacts through the ledger). Reads, three requests: the ledger, the
	// phone's identity claim, then the profile and the activity in one BatchGetItem. The
	// account's deals are not listed (the call's deal was decided when the call was first stored
	// with the account), and the account's own record is not read (the event proposes no account
	// field).
	callStatusUpdate = budget{
		requests: map[string]int{
			"SQS SendMessageBatch": 1, "SQS ReceiveMessage": 1, "SQS DeleteMessageBatch": 1,
			"DynamoDB GetItem": 2, "DynamoDB BatchGetItem": 1, "DynamoDB TransactWriteItems": 1,
		},
		transactItems: 4, writeUnits: 8, indexWriteUnits: 4, readUnits: 4,
	}
	// The same event again after SQS's deduplication window: one ledger read, no write.
	duplicate = budget{
		requests: map[string]int{
			"SQS SendMessageBatch": 1, "SQS ReceiveMessage": 1, "SQS DeleteMessageBatch": 1, "DynamoDB GetItem": 1,
		},
		readUnits: 1,
	}
)

// check reports each way u is over or under want, and whether it is within budget.
func check(t *testing.T, name string, u costmodel.Usage, want budget) bool {
	t.Helper()
	got := map[string]int{}
	for _, op := range u.Ops() {
		got[op.String()] = u.Calls[op]
	}
	var diffs []string
	for k := range merge(got, want.requests) {
		if got[k] != want.requests[k] {
			diffs = append(diffs, fmt.Sprintf("%s: %d requests, budget %d", k, got[k], want.requests[k]))
		}
	}
	d := u.DynamoDB
	if d.TransactItems != want.transactItems {
		diffs = append(diffs, fmt.Sprintf("transaction items: %d, budget %d", d.TransactItems, want.transactItems))
	}
	if d.Write != want.writeUnits || d.IndexWrite != want.indexWriteUnits {
		diffs = append(diffs, fmt.Sprintf("write units: %g table + %g index, budget %g + %g", d.Write, d.IndexWrite, want.writeUnits, want.indexWriteUnits))
	}
	if d.Read != want.readUnits {
		diffs = append(diffs, fmt.Sprintf("read units: %g, budget %g", d.Read, want.readUnits))
	}
	if d.Estimated != 0 {
		diffs = append(diffs, fmt.Sprintf("%d operations could not be priced exactly", d.Estimated))
	}
	if len(diffs) > 0 {
		t.Errorf("%s is over or under its per-event AWS budget (if intended, update the budget in tools/costmodel/budget_test.go and re-run make bench):\n  %s",
			name, strings.Join(diffs, "\n  "))
	}
	return len(diffs) == 0
}

func merge(a, b map[string]int) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// Budgets hold for the reference events: a duplicate costs no write and one read; an applied
// call-status update is one transaction with the write units above.
func TestPerEventBudgets(t *testing.T) {
	ctx := context.Background()
	counter := costmodel.NewCounter()
	name := fmt.Sprintf("bud%d", time.Now().UnixNano()%1e9)
	d, err := localcloud.Start(ctx, localcloud.Config{
		TemplatePath: "../../template.yaml", Endpoint: moto.ForTest(t), HTTPAddr: "127.0.0.1:0",
		DevSecretsPath: "../../config/dev-secrets.json", FixturesDir: "../../events/vendor", StackName: name,
		Factory: fnbuild.Factory,
		Out:     io.Discard, NoSchedules: true, NoEventSources: true,
		AWSOptions: []func(*middleware.Stack) error{counter.Option},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	secrets, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.Addr
	fn := d.Stack.Functions["WorkerFunction"]
	q := d.Stack.Physical["IngestQueue"]
	esm := &localcloud.EventSourceMapping{SQS: sqs.NewFromConfig(d.AWS), Invoker: d.Runtime, Function: "WorkerFunction",
		QueueURL: q.Ref, QueueARN: q.Attrs["Arn"], Region: d.AWS.Region, BatchSize: fn.SQS[0].BatchSize,
		ReportFail: fn.SQS[0].ReportBatchItemFailed, Log: d.Log}

	deliver := func(connector, body string) events.APIGatewayV2HTTPRequest {
		t.Helper()
		p := samples.Payloads[connector]
		ev, err := samples.WebhookEvent(connector, []byte(body), p.ContentType, base, secrets[connector], time.Now())
		if err != nil {
			t.Fatal(err)
		}
		post(t, base, ev)
		settle(t, esm)
		return ev
	}
	read := func(f string) string {
		b, err := os.ReadFile("../../events/payloads/" + f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	twilio := read("twilio.form")
	stage := func(status, seq, at string) string {
		return strings.NewReplacer("CallStatus=completed", "CallStatus="+status, "SequenceNumber=3", "SequenceNumber="+seq,
			"16%3A05%3A12", at).Replace(twilio)
	}

	// The contact (a Typeform lead) and the call (its ringing callback) exist first.
	deliver("typeform", read("typeform.json"))
	deliver("twilio", stage("ringing", "1", "16%3A00%3A00"))

	before := counter.Snapshot()
	counter.StartTrace()
	completed := deliver("twilio", stage("completed", "3", "16%3A05%3A12"))
	writes := counter.StopTrace()
	if !check(t, "an applied call-status update", counter.Snapshot().Sub(before), callStatusUpdate) {
		for _, w := range writes {
			t.Logf("  wrote %s %s/%s: %d bytes, %g units + %g index (transactional %v, check %v)",
				w.Table, w.PK, w.SK, w.Bytes, w.Units, w.IndexUnits, w.Transactional, w.Check)
		}
	}

	// The same delivery once SQS's deduplication window is over: SQS takes it again.
	evs, err := samples.ParseEvent(completed, "twilio", secrets["twilio"], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before = counter.Snapshot()
	if err := ingest.Enqueue(ctx, freshDedup{sqs.NewFromConfig(d.AWS)}, q.Ref, evs); err != nil {
		t.Fatal(err)
	}
	settle(t, esm)
	check(t, "a duplicate", counter.Snapshot().Sub(before), duplicate)
}

// freshDedup gives each message a deduplication id SQS has not seen (as after its window).
type freshDedup struct{ *sqs.Client }

func (f freshDedup) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, o ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	for i := range in.Entries {
		in.Entries[i].MessageDeduplicationId = aws.String(aws.ToString(in.Entries[i].MessageDeduplicationId)[:60] + "-late")
	}
	return f.Client.SendMessageBatch(ctx, in, o...)
}

func post(t *testing.T, base string, ev events.APIGatewayV2HTTPRequest) {
	t.Helper()
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = b
	}
	u := base + ev.RawPath
	if ev.RawQueryString != "" {
		u += "?" + ev.RawQueryString
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range ev.Headers {
		if k != "host" && k != "content-length" && !strings.HasPrefix(k, "x-forwarded-") {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s: HTTP %d %s", ev.RawPath, resp.StatusCode, b)
	}
}

// settle polls one batch and settles it, as the event source mapping does.
func settle(t *testing.T, esm *localcloud.EventSourceMapping) {
	t.Helper()
	res, err := esm.PollOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Received != 1 || res.Failed != 0 {
		t.Fatalf("poll: %+v, want one message settled", res)
	}
}
