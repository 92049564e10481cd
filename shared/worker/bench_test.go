package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/tools/ddbexpr"
	"github.com/crmsync/crmsync/tools/samples"
)

// memDB is the worker benchmarks' DynamoDB: an in-memory implementation of DynamoAPI with the
// condition checks the worker relies on (conditional puts, version checks, transactions that
// cancel as a whole, key-condition queries on the indexes). It is a benchmark fixture so the
// figures measure the worker's own CPU and allocations per event; it claims nothing about
// correctness, which the tests establish against moto.
type memDB struct {
	mu     sync.Mutex
	tables map[string]*memTable
}

type memTable struct {
	hash, rng string
	items     map[string]ddbexpr.Item
	// by indexes items on the attributes queries pin (pk and each index's hash key).
	by map[string]map[string]map[string]bool
}

// memIndexed are the attributes the worker's queries select on (table and index hash keys).
var memIndexed = []string{"pk", "sk", "group_key", "source", "account_id", "deal_id", "unassoc"}

func newMemDB(ledger, crm string) *memDB {
	mk := func(hash, rng string) *memTable {
		t := &memTable{hash: hash, rng: rng, items: map[string]ddbexpr.Item{}, by: map[string]map[string]map[string]bool{}}
		for _, a := range memIndexed {
			t.by[a] = map[string]map[string]bool{}
		}
		return t
	}
	return &memDB{tables: map[string]*memTable{ledger: mk("pk", ""), crm: mk("pk", "sk")}}
}

func (t *memTable) key(it ddbexpr.Item) string { return ddbexpr.KeyString(it, t.hash, t.rng) }

func (t *memTable) put(it ddbexpr.Item) {
	k := t.key(it)
	t.unindex(k)
	t.items[k] = it
	for a, m := range t.by {
		if v, ok := it[a].(*types.AttributeValueMemberS); ok {
			if m[v.Value] == nil {
				m[v.Value] = map[string]bool{}
			}
			m[v.Value][k] = true
		}
	}
}

func (t *memTable) unindex(k string) {
	old, ok := t.items[k]
	if !ok {
		return
	}
	for a, m := range t.by {
		if v, ok := old[a].(*types.AttributeValueMemberS); ok {
			delete(m[v.Value], k)
		}
	}
}

func (d *memDB) table(name *string) (*memTable, error) {
	t := d.tables[aws.ToString(name)]
	if t == nil {
		return nil, &types.ResourceNotFoundException{Message: aws.String("no table " + aws.ToString(name))}
	}
	return t, nil
}

func (d *memDB) GetItem(_ context.Context, in *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, err := d.table(in.TableName)
	if err != nil {
		return nil, err
	}
	return &dynamodb.GetItemOutput{Item: t.items[t.key(in.Key)]}, nil
}

func check(cond *string, cur ddbexpr.Item, names map[string]string, vals map[string]types.AttributeValue) (bool, error) {
	if cond == nil {
		return true, nil
	}
	return ddbexpr.Eval(*cond, cur, ddbexpr.Env{Names: names, Values: vals})
}

func (d *memDB) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, err := d.table(in.TableName)
	if err != nil {
		return nil, err
	}
	ok, err := check(in.ConditionExpression, t.items[t.key(in.Item)], in.ExpressionAttributeNames, in.ExpressionAttributeValues)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &types.ConditionalCheckFailedException{Message: aws.String("The conditional request failed")}
	}
	t.put(in.Item)
	return &dynamodb.PutItemOutput{}, nil
}

func (d *memDB) UpdateItem(_ context.Context, in *dynamodb.UpdateItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, err := d.table(in.TableName)
	if err != nil {
		return nil, err
	}
	cur := t.items[t.key(in.Key)]
	ok, err := check(in.ConditionExpression, cur, in.ExpressionAttributeNames, in.ExpressionAttributeValues)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &types.ConditionalCheckFailedException{Message: aws.String("The conditional request failed")}
	}
	nw, err := ddbexpr.Update(aws.ToString(in.UpdateExpression), cur, in.Key, ddbexpr.Env{Names: in.ExpressionAttributeNames, Values: in.ExpressionAttributeValues})
	if err != nil {
		return nil, err
	}
	t.put(nw)
	return &dynamodb.UpdateItemOutput{}, nil
}

func (d *memDB) Query(_ context.Context, in *dynamodb.QueryInput, _ ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, err := d.table(in.TableName)
	if err != nil {
		return nil, err
	}
	env := ddbexpr.Env{Names: in.ExpressionAttributeNames, Values: in.ExpressionAttributeValues}
	eq, err := ddbexpr.Equalities(aws.ToString(in.KeyConditionExpression), env)
	if err != nil {
		return nil, err
	}
	// Start from the smallest set an equality selects, as DynamoDB reads only the key range.
	var cands map[string]bool
	found := false
	for a, v := range eq {
		if s, ok := v.(*types.AttributeValueMemberS); ok && t.by[a] != nil {
			if c := t.by[a][s.Value]; !found || len(c) < len(cands) {
				cands, found = c, true
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("memDB: query without an equality on an indexed attribute: %s", aws.ToString(in.KeyConditionExpression))
	}
	out := &dynamodb.QueryOutput{}
	for k := range cands {
		it := t.items[k]
		ok, err := ddbexpr.Eval(aws.ToString(in.KeyConditionExpression), it, env)
		if err != nil || !ok {
			if err != nil {
				return nil, err
			}
			continue
		}
		out.ScannedCount++
		if ok, err = check(in.FilterExpression, it, in.ExpressionAttributeNames, in.ExpressionAttributeValues); err != nil {
			return nil, err
		} else if ok {
			out.Items = append(out.Items, it)
			out.Count++
		}
	}
	return out, nil
}

func (d *memDB) TransactWriteItems(_ context.Context, in *dynamodb.TransactWriteItemsInput, _ ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	type op struct {
		t   *memTable
		put ddbexpr.Item // the item after (nil: nothing written)
		del string       // the key to delete
	}
	ops := make([]op, 0, len(in.TransactItems))
	reasons := make([]types.CancellationReason, len(in.TransactItems))
	failed := false
	for i, ti := range in.TransactItems {
		reasons[i].Code = aws.String("None")
		var (
			table *string
			key   ddbexpr.Item
			cond  *string
			names map[string]string
			vals  map[string]types.AttributeValue
			put   ddbexpr.Item
		)
		switch {
		case ti.Put != nil:
			table, key, cond, names, vals, put = ti.Put.TableName, ti.Put.Item, ti.Put.ConditionExpression, ti.Put.ExpressionAttributeNames, ti.Put.ExpressionAttributeValues, ti.Put.Item
		case ti.ConditionCheck != nil:
			c := ti.ConditionCheck
			table, key, cond, names, vals = c.TableName, c.Key, c.ConditionExpression, c.ExpressionAttributeNames, c.ExpressionAttributeValues
		case ti.Update != nil:
			u := ti.Update
			table, key, cond, names, vals = u.TableName, u.Key, u.ConditionExpression, u.ExpressionAttributeNames, u.ExpressionAttributeValues
		case ti.Delete != nil:
			x := ti.Delete
			table, key, cond, names, vals = x.TableName, x.Key, x.ConditionExpression, x.ExpressionAttributeNames, x.ExpressionAttributeValues
		default:
			return nil, fmt.Errorf("memDB: unsupported transaction item %d", i)
		}
		t, err := d.table(table)
		if err != nil {
			return nil, err
		}
		cur := t.items[t.key(key)]
		ok, err := check(cond, cur, names, vals)
		if err != nil {
			return nil, err
		}
		if !ok {
			reasons[i].Code = aws.String("ConditionalCheckFailed")
			failed = true
		}
		o := op{t: t, put: put}
		switch {
		case ti.Update != nil:
			if o.put, err = ddbexpr.Update(aws.ToString(ti.Update.UpdateExpression), cur, key, ddbexpr.Env{Names: names, Values: vals}); err != nil {
				return nil, err
			}
		case ti.Delete != nil:
			o.del = t.key(key)
		}
		ops = append(ops, o)
	}
	if failed {
		return nil, &types.TransactionCanceledException{Message: aws.String("Transaction cancelled"), CancellationReasons: reasons}
	}
	for _, o := range ops {
		switch {
		case o.put != nil:
			o.t.put(o.put)
		case o.del != "":
			o.t.unindex(o.del)
			delete(o.t.items, o.del)
		}
	}
	return &dynamodb.TransactWriteItemsOutput{}, nil
}

// ---------------------------------------------------------------------------- events

var benchT0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

// benchEvents parses connector sample bodies (events/payloads), with replacements, into
// canonical events exactly as the webhook function does.
func benchEvent(b *testing.B, name string, pairs ...string) *canonical.Event {
	b.Helper()
	secs, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		b.Fatal(err)
	}
	p := samples.Payloads[name]
	raw, err := os.ReadFile("../../events/payloads/" + p.File)
	if err != nil {
		b.Fatal(err)
	}
	body := strings.NewReplacer(pairs...).Replace(string(raw))
	ev, err := samples.WebhookEvent(name, []byte(body), p.ContentType, "https://hooks.example.com", secs[name], benchT0)
	if err != nil {
		b.Fatal(err)
	}
	evs, err := samples.ParseEvent(ev, name, secs[name], benchT0)
	if err != nil || len(evs) != 1 {
		b.Fatalf("%s: %v (%d events)", name, err, len(evs))
	}
	return &evs[0]
}

// callStatus is a Twilio status callback of call n for the sample caller.
func callStatus(b *testing.B, n int, status, seq, at string) *canonical.Event {
	return benchEvent(b, "twilio", "CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7", fmt.Sprintf("CA5e1f0a2b3c4d5e6f70%014d", n),
		"CallStatus=completed", "CallStatus="+status, "SequenceNumber=3", "SequenceNumber="+seq, "16%3A05%3A12", at)
}

func benchWorker(b *testing.B) (*Worker, *memDB) {
	b.Helper()
	pol, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		b.Fatal(err)
	}
	db := newMemDB("ledger", "crm")
	w, err := New(Config{LedgerTable: "ledger", CRMTable: "crm", Policy: pol, Clock: func() time.Time { return benchT0 },
		Log: nil, Metrics: io.Discard}, db)
	if err != nil {
		b.Fatal(err)
	}
	return w, db
}

func mustApplied(b *testing.B, w *Worker, ev *canonical.Event, want string) {
	b.Helper()
	e := *ev
	res, err := w.Apply(context.Background(), &e)
	if err != nil || res.Outcome != want {
		b.Fatalf("%s: %+v, %v (want %s)", ev.Key, res, err, want)
	}
}

// BenchmarkApply is the worker's per-event path (ledger read, identity, association, policy,
// timeline merge, transaction build and the EMF and log output) against the in-memory store.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	b.Run("call-status-update", func(b *testing.B) {
		// The design's reference event: a status update of a known call of a known contact.
		w, _ := benchWorker(b)
		mustApplied(b, w, benchEvent(b, "typeform"), "APPLIED")
		evs := make([]*canonical.Event, b.N)
		for i := range evs {
			mustApplied(b, w, callStatus(b, i, "ringing", "1", "16%3A00%3A00"), "APPLIED")
			evs[i] = callStatus(b, i, "completed", "3", "16%3A05%3A12")
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if res, err := w.Apply(ctx, evs[i]); err != nil || res.Outcome != "APPLIED" {
				b.Fatalf("%+v %v", res, err)
			}
		}
	})
	b.Run("duplicate", func(b *testing.B) {
		w, _ := benchWorker(b)
		ev := callStatus(b, 1, "completed", "3", "16%3A05%3A12")
		mustApplied(b, w, ev, "APPLIED")
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			e := *ev
			if res, err := w.Apply(ctx, &e); err != nil || !res.Duplicate {
				b.Fatalf("%+v %v", res, err)
			}
		}
	})
	b.Run("new-lead", func(b *testing.B) {
		// A lead creating its contact, identity claims and account.
		w, _ := benchWorker(b)
		evs := make([]*canonical.Event, b.N)
		for i := range evs {
			evs[i] = benchEvent(b, "typeform", "01JP2F4QGQ8JV0N7T6QX4D7M0S", fmt.Sprintf("01JP2F4QGQ8JV0N7T6Q%07d", i),
				"a3a12ec67a1365927098a606107fac15", fmt.Sprintf("%032x", i+1), "ada@example.com", fmt.Sprintf("ada%d@c%d.example.com", i, i/4),
				"+14155550123", fmt.Sprintf("+1415555%04d", i%10000))
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if res, err := w.Apply(ctx, evs[i]); err != nil || res.Outcome != "APPLIED" {
				b.Fatalf("%+v %v", res, err)
			}
		}
	})
}

// BenchmarkHandleBatch is a full SQS batch of ten call-status updates of ten known calls, as the
// event source mapping delivers it (message bodies decoded, groups run concurrently).
func BenchmarkHandleBatch(b *testing.B) {
	w, _ := benchWorker(b)
	mustApplied(b, w, benchEvent(b, "typeform"), "APPLIED")
	batches := make([]events.SQSEvent, b.N)
	for i := range batches {
		for j := 0; j < 10; j++ {
			n := i*10 + j
			mustApplied(b, w, callStatus(b, n, "ringing", "1", "16%3A00%3A00"), "APPLIED")
			ev := callStatus(b, n, "completed", "3", "16%3A05%3A12")
			body, err := json.Marshal(ev)
			if err != nil {
				b.Fatal(err)
			}
			batches[i].Records = append(batches[i].Records, events.SQSMessage{MessageId: fmt.Sprint(n), Body: string(body),
				Attributes: map[string]string{"MessageGroupId": ev.GroupID()}})
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, _ := w.Handle(ctx, batches[i])
		if len(resp.BatchItemFailures) > 0 {
			b.Fatalf("failures: %+v", resp.BatchItemFailures)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*10), "ns/event")
}
