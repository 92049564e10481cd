package localcloud

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

const repoTemplate = "../../template.yaml"

// stackName returns a unique stack name so tests sharing one moto never collide.
func stackName(t *testing.T) string {
	return fmt.Sprintf("t%d-%s", time.Now().UnixNano()%1e9, strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))[:30]
}

// mutatedTemplate writes a copy of template.yaml with each old→new replacement applied once.
func mutatedTemplate(t *testing.T, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(repoTemplate)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("template.yaml no longer contains %q: update the test", repl[i])
		}
		s = strings.Replace(s, repl[i], repl[i+1], 1)
	}
	p := filepath.Join(t.TempDir(), "template.yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func provision(t *testing.T, path string) (*Stack, aws.Config) {
	t.Helper()
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	name := stackName(t)
	tmpl, err := samtemplate.Load(path, samtemplate.Options{StackName: name, AccountID: AccountID})
	if err != nil {
		t.Fatal(err)
	}
	st, err := Provision(ctx, cfg, tmpl, ProvisionOptions{StackName: name})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	return st, cfg
}

func queueAttrs(t *testing.T, cfg aws.Config, url string) map[string]string {
	t.Helper()
	out, err := sqs.NewFromConfig(cfg).GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameAll}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Attributes
}

func TestProvisionFollowsTemplate(t *testing.T) {
	ctx := context.Background()
	st, cfg := provision(t, repoTemplate)
	tmpl := st.Template
	// Every table, queue, secret and bucket in the template exists.
	for _, typ := range []string{samtemplate.TypeTable, samtemplate.TypeQueue, samtemplate.TypeSecret, samtemplate.TypeBucket} {
		ids := tmpl.OfType(typ)
		if len(ids) == 0 {
			t.Fatalf("template declares no %s", typ)
		}
		for _, id := range ids {
			if st.Physical[id].Ref == "" {
				t.Errorf("%s (%s) was not provisioned", id, typ)
			}
		}
	}
	attrs := queueAttrs(t, cfg, st.Physical["IngestQueue"].Ref)
	for k, want := range map[string]string{"FifoQueue": "true", "DeduplicationScope": "messageGroup",
		"FifoThroughputLimit": "perMessageGroupId", "VisibilityTimeout": "180"} {
		if got := attrs[k]; got != want {
			t.Errorf("IngestQueue %s = %q, want %q", k, got, want)
		}
	}
	var redrive struct {
		Target string `json:"deadLetterTargetArn"`
		Max    any    `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(attrs["RedrivePolicy"]), &redrive); err != nil {
		t.Fatalf("RedrivePolicy %q: %v", attrs["RedrivePolicy"], err)
	}
	if redrive.Target != st.Physical["IngestDLQ"].Attrs["Arn"] {
		t.Errorf("redrive target = %q, want the DLQ %q", redrive.Target, st.Physical["IngestDLQ"].Attrs["Arn"])
	}
	// Function environments resolve to the provisioned resources.
	w := st.Functions["WorkerFunction"]
	if got, want := w.Env["LEDGER_TABLE"], st.Physical["LedgerTable"].Ref; got != want || got == "" {
		t.Errorf("worker LEDGER_TABLE = %q, want %q", got, want)
	}
	if got := w.SQS[0].Queue; got != st.Physical["IngestQueue"].Attrs["Arn"] {
		t.Errorf("worker SQS source = %q, want the ingest queue ARN", got)
	}
	desc, err := dynamodb.NewFromConfig(cfg).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(st.Physical["CrmTable"].Ref)})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(desc.Table.GlobalSecondaryIndexes); got != len(samtemplate.List(tmpl.Resources["CrmTable"].Properties["GlobalSecondaryIndexes"])) {
		t.Errorf("CrmTable has %d GSIs, template declares a different number", got)
	}
}

func TestProvisionTracksTemplateChanges(t *testing.T) {
	ctx := context.Background()
	path := mutatedTemplate(t,
		"VisibilityTimeout: 180", "VisibilityTimeout: 77",
		"      GlobalSecondaryIndexes:\n        - IndexName: ByGroup",
		"      GlobalSecondaryIndexes:\n        - IndexName: ByTestOnly\n          KeySchema:\n            - AttributeName: pk\n              KeyType: HASH\n          Projection:\n            ProjectionType: KEYS_ONLY\n        - IndexName: ByGroup",
	)
	st, cfg := provision(t, path)
	if got := queueAttrs(t, cfg, st.Physical["IngestQueue"].Ref)["VisibilityTimeout"]; got != "77" {
		t.Errorf("VisibilityTimeout after editing the template = %q, want 77", got)
	}
	desc, err := dynamodb.NewFromConfig(cfg).DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(st.Physical["LedgerTable"].Ref)})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range desc.Table.GlobalSecondaryIndexes {
		names = append(names, aws.ToString(g.IndexName))
	}
	if !strings.Contains(strings.Join(names, ","), "ByTestOnly") {
		t.Errorf("LedgerTable indexes = %v, want the added ByTestOnly", names)
	}
}

// failingInvoker fails the message whose body is failBody in every batch it sees.
type failingInvoker struct {
	mu       sync.Mutex
	failBody string
	seen     map[string]int
}

func (f *failingInvoker) Invoke(_ context.Context, _ string, payload []byte) ([]byte, error) {
	var ev events.SQSEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var resp events.SQSEventResponse
	for _, r := range ev.Records {
		f.seen[r.Body]++
		if r.Body == f.failBody {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: r.MessageId})
		}
	}
	return json.Marshal(resp)
}

func TestEventSourceMappingPartialFailureAndRedrive(t *testing.T) {
	ctx := context.Background()
	path := mutatedTemplate(t, "VisibilityTimeout: 180", "VisibilityTimeout: 2", "maxReceiveCount: 5", "maxReceiveCount: 2")
	st, cfg := provision(t, path)
	client := sqs.NewFromConfig(cfg)
	url := st.Physical["IngestQueue"].Ref
	bodies := []string{"a", "b", "poison", "c"}
	for i, b := range bodies {
		if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(b),
			MessageGroupId: aws.String(fmt.Sprintf("g%d", i)), MessageDeduplicationId: aws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	inv := &failingInvoker{failBody: "poison", seen: map[string]int{}}
	esm := &EventSourceMapping{SQS: client, Invoker: inv, Function: "WorkerFunction", QueueURL: url,
		QueueARN: st.Physical["IngestQueue"].Attrs["Arn"], Region: cfg.Region, BatchSize: 10, ReportFail: true, WaitSeconds: 0}
	deadline := time.Now().Add(30 * time.Second)
	var deleted, failed int
	for time.Now().Before(deadline) {
		res, err := esm.PollOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deleted += res.Deleted
		failed += res.Failed
		if inv.seen["poison"] >= 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if deleted != 3 {
		t.Errorf("deleted %d messages, want the 3 that succeeded", deleted)
	}
	for _, b := range []string{"a", "b", "c"} {
		if inv.seen[b] != 1 {
			t.Errorf("message %q delivered %d times, want once (only the failed one comes back)", b, inv.seen[b])
		}
	}
	if inv.seen["poison"] != 2 {
		t.Fatalf("poison delivered %d times, want 2 (maxReceiveCount)", inv.seen["poison"])
	}
	// After maxReceiveCount receives, the next receive moves it to the DLQ instead.
	time.Sleep(2500 * time.Millisecond)
	if _, err := esm.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if inv.seen["poison"] != 2 {
		t.Errorf("poison delivered a third time; want it moved to the DLQ")
	}
	dlq := st.Physical["IngestDLQ"].Ref
	var got []string
	for i := 0; i < 5 && len(got) == 0; i++ {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(dlq), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			got = append(got, aws.ToString(m.Body))
		}
	}
	if len(got) != 1 || got[0] != "poison" {
		t.Errorf("DLQ holds %v, want [poison]", got)
	}
}

func TestParseSchedule(t *testing.T) {
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC) // a Sunday
	tests := []struct {
		expr string
		want time.Time
	}{
		{"rate(5 minutes)", base.Add(5 * time.Minute)},
		{"cron(15 3 * * ? *)", time.Date(2026, 11, 30, 3, 15, 0, 0, time.UTC)},
		{"cron(30 4 ? * SUN *)", time.Date(2026, 12, 6, 4, 30, 0, 0, time.UTC)},
		{"cron(45 5 1 * ? *)", time.Date(2026, 12, 1, 5, 45, 0, 0, time.UTC)},
		{"cron(0/20 * * * ? *)", base.Add(20 * time.Minute)},
		{"cron(0 12 ? * MON-FRI *)", time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		e, err := ParseSchedule(tt.expr)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", tt.expr, err)
			continue
		}
		if got := e.Next(base); !got.Equal(tt.want) {
			t.Errorf("%s: Next = %v, want %v", tt.expr, got, tt.want)
		}
	}
	for _, bad := range []string{"rate(0 days)", "cron(* * * * * *)", "cron(61 * * * ? *)", "every day", "rate(1 fortnight)"} {
		if _, err := ParseSchedule(bad); err == nil {
			t.Errorf("ParseSchedule(%q) accepted a bad expression", bad)
		}
	}
}

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, path string
		ok            bool
		params        map[string]string
	}{
		{"/webhooks/twilio", "/webhooks/twilio", true, map[string]string{}},
		{"/webhooks/twilio", "/webhooks/twilio/x", false, nil},
		{"/crm/{id}", "/crm/42", true, map[string]string{"id": "42"}},
		{"/files/{proxy+}", "/files/a/b", true, map[string]string{"proxy": "a/b"}},
	}
	for _, tt := range tests {
		p, ok := matchPath(tt.pattern, tt.path)
		if ok != tt.ok || (ok && fmt.Sprint(p) != fmt.Sprint(tt.params)) {
			t.Errorf("matchPath(%q, %q) = %v, %v; want %v, %v", tt.pattern, tt.path, p, ok, tt.params, tt.ok)
		}
	}
}
