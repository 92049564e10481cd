package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

const repoTemplate = "../../template.yaml"

var t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

// tables provisions a unique stack's tables from template.yaml on moto.
type tables struct {
	ddb    *dynamodb.Client
	ledger string
	crm    string
	pol    *policy.Policy
}

func provision(t *testing.T) *tables {
	t.Helper()
	return provisionOn(t, moto.ForTest(t))
}

// provisionOn provisions the template's tables on the AWS endpoint given.
func provisionOn(t *testing.T, endpoint string) *tables {
	t.Helper()
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, endpoint)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("w%d-%s", time.Now().UnixNano()%1e9, strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 30 {
		name = name[:30]
	}
	tmpl, err := samtemplate.Load(repoTemplate, samtemplate.Options{StackName: name, AccountID: localcloud.AccountID})
	if err != nil {
		t.Fatal(err)
	}
	st, err := localcloud.Provision(ctx, cfg, tmpl, localcloud.ProvisionOptions{StackName: name})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	pol, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	return &tables{ddb: dynamodb.NewFromConfig(cfg), ledger: st.Physical["LedgerTable"].Ref, crm: st.Physical["CrmTable"].Ref, pol: pol}
}

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) {
	c.ns.Add(int64(d))
}

// counting wraps the real client and counts calls by operation.
type counting struct {
	DynamoAPI
	mu     sync.Mutex
	calls  map[string]int
	lastTx int // items in the last TransactWriteItems
}

func newCounting(api DynamoAPI) *counting { return &counting{DynamoAPI: api, calls: map[string]int{}} }

func (c *counting) inc(op string) {
	c.mu.Lock()
	c.calls[op]++
	c.mu.Unlock()
}

// writes returns how many write calls were made.
func (c *counting) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls["PutItem"] + c.calls["UpdateItem"] + c.calls["TransactWriteItems"]
}

func (c *counting) reset() {
	c.mu.Lock()
	c.calls = map[string]int{}
	c.mu.Unlock()
}

func (c *counting) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	c.inc("GetItem")
	return c.DynamoAPI.GetItem(ctx, in, o...)
}

func (c *counting) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.inc("PutItem")
	return c.DynamoAPI.PutItem(ctx, in, o...)
}

func (c *counting) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.inc("UpdateItem")
	return c.DynamoAPI.UpdateItem(ctx, in, o...)
}

func (c *counting) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	c.inc("Query")
	return c.DynamoAPI.Query(ctx, in, o...)
}

func (c *counting) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	c.inc("TransactWriteItems")
	c.mu.Lock()
	c.lastTx = len(in.TransactItems)
	c.mu.Unlock()
	return c.DynamoAPI.TransactWriteItems(ctx, in, o...)
}

// crashAfterCommit lets TransactWriteItems commit and then reports a failure, once: the
// response was lost (the function died before answering the batch).
type crashAfterCommit struct {
	DynamoAPI
	armed atomic.Bool
}

func (c *crashAfterCommit) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	out, err := c.DynamoAPI.TransactWriteItems(ctx, in, o...)
	if err == nil && c.armed.CompareAndSwap(true, false) {
		return nil, errors.New("injected crash after commit")
	}
	return out, err
}

// gate makes racing workers read before either writes: each worker's first TransactWriteItems
// waits until every worker has reached its own, then they write one at a time.
type gate struct {
	DynamoAPI
	g     *race
	first atomic.Bool
}

type race struct {
	wg sync.WaitGroup
	mu sync.Mutex
}

func newRace(n int) *race { r := &race{}; r.wg.Add(n); return r }

func (g *gate) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	if g.first.CompareAndSwap(false, true) {
		g.g.wg.Done()
		g.g.wg.Wait()
	}
	g.g.mu.Lock()
	defer g.g.mu.Unlock()
	return g.DynamoAPI.TransactWriteItems(ctx, in, o...)
}

func newWorker(t *testing.T, tb *tables, api DynamoAPI, c *clock, mod ...func(*Config)) *Worker {
	t.Helper()
	cfg := Config{LedgerTable: tb.ledger, CRMTable: tb.crm, Policy: tb.pol, Clock: c.Now,
		Sleep: func(context.Context, time.Duration) error { return nil }}
	for _, m := range mod {
		m(&cfg)
	}
	w, err := New(cfg, api)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// lead is a typeform lead for one person.
func lead(key, email string, at time.Time, contact map[string]string) *canonical.Event {
	return &canonical.Event{
		Key: key, Source: "typeform", Kind: canonical.KindLeadSubmitted, OccurredAt: at, ReceivedAt: at,
		GroupKey: "email:" + email, Subject: canonical.Person{Emails: []string{email}},
		Fields:         map[string]map[string]string{"contact": contact},
		Activity:       &canonical.Activity{ID: "form:" + key, Type: "form", Status: "submitted", Participants: []canonical.Participant{{Role: "from", Email: email}}},
		MappingVersion: "typeform/1", PayloadHash: canonical.HashHex("payload:" + key),
	}
}

// callback is one Twilio status callback of call CA1 from phone.
func callback(seq int, status, phone string, dur int) *canonical.Event {
	at := t0.Add(time.Duration(seq) * 10 * time.Second)
	fields := map[string]string{"phone": phone, "last_activity_at": at.Format(time.RFC3339), "last_call_status": status}
	return &canonical.Event{
		Key: fmt.Sprintf("twilio:call:CA1:%d", seq), Source: "twilio", Kind: canonical.KindCallStatus, OccurredAt: at,
		GroupKey: "phone:" + phone, Subject: canonical.Person{Phones: []string{phone}},
		Fields: map[string]map[string]string{"contact": fields},
		Activity: &canonical.Activity{ID: "call:CA1", Type: "call", Status: status, DurationSec: dur, Direction: "inbound",
			Participants: []canonical.Participant{{Role: "caller", Phone: phone}}},
		ExternalIDs: map[string]string{"call_sid": "CA1"}, MappingVersion: "twilio/1",
		PayloadHash: canonical.HashHex(fmt.Sprintf("cb%d%s", seq, status)),
	}
}

// message wraps an event as an SQS FIFO message of its group.
func message(t *testing.T, id string, ev *canonical.Event) events.SQSMessage {
	t.Helper()
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return events.SQSMessage{MessageId: id, Body: string(b), Attributes: map[string]string{"MessageGroupId": ev.GroupID()}}
}

func mustApply(t *testing.T, w *Worker, ev *canonical.Event) Result {
	t.Helper()
	res, err := w.Apply(context.Background(), ev)
	if err != nil {
		t.Fatalf("apply %s: %v", ev.Key, err)
	}
	return res
}

func getContact(t *testing.T, w *Worker, q ContactQuery) *ContactView {
	t.Helper()
	v, err := w.GetContact(context.Background(), q)
	if err != nil {
		t.Fatalf("get contact %+v: %v", q, err)
	}
	return v
}
