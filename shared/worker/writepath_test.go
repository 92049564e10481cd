package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/smithy-go"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/store"
)

// countMetric sums the values of the EMF metric name whose dimensions include dims, once per
// record (a record is published under several dimension sets).
func countMetric(buf *bytes.Buffer, name string, dims map[string]string) float64 {
	var sum float64
	for _, line := range bytes.Split(buf.Bytes(), []byte("\n")) {
		for _, d := range emf.Parse(line) {
			match := d.Name == name
			for k, v := range dims {
				match = match && d.Dimensions[k] == v
			}
			if match {
				sum += d.Value
				break
			}
		}
	}
	return sum
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writers of one batch.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) snapshot() *bytes.Buffer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.NewBuffer(slices.Clone(b.buf.Bytes()))
}

// txErrors records the errors of the real client's TransactWriteItems calls.
type txErrors struct {
	DynamoAPI
	mu   sync.Mutex
	errs []error
}

func (r *txErrors) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	out, err := r.DynamoAPI.TransactWriteItems(ctx, in, o...)
	if err != nil {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
	}
	return out, err
}

// bigCallback is callback seq of one call whose update carries a large attribute (a transcript),
// so the call's activity item grows by about twice size per event. The text is random (seeded
// by seq), so packing the stored documents cannot shrink it much below size.
func bigCallback(seq int, phone string, size int) *canonical.Event {
	ev := callback(seq, "in-progress", phone, 0)
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ."
	rng := rand.New(rand.NewPCG(uint64(seq), 7))
	text := make([]byte, size)
	for i := range text {
		text[i] = alphabet[rng.IntN(len(alphabet))]
	}
	ev.Activity.Attrs = map[string]string{"transcript": string(text)}
	return ev
}

// An event whose transaction exceeds DynamoDB's 400 KB item limit (moto answers
// ValidationException) is recorded REJECTED with the reason and acknowledged; the next event of
// the same group is applied in the same batch instead of following it to the DLQ.
// Before the fix: "batch item failures = [m3 m4], want none (an oversized event must not be retried)".
func TestOversizedTransactionRejectedNotRetried(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	rec := &txErrors{DynamoAPI: tb.ddb}
	var metrics lockedBuffer
	w := newWorker(t, tb, rec, c, func(cfg *Config) { cfg.Metrics = &metrics })
	phone := "+14155550166"
	// Each update carries 160 kB of random text (packed to about 3/4): the call's activity keeps
	// it in its history and its merged attributes, so the third update makes the item about
	// 480 kB stored.
	e1, e2, e3 := bigCallback(1, phone, 160_000), bigCallback(2, phone, 160_000), bigCallback(3, phone, 160_000)
	e4 := callback(4, "completed", phone, 42) // small: only the oversized event is refused
	batch := events.SQSEvent{Records: []events.SQSMessage{
		message(t, "m1", e1), message(t, "m2", e2), message(t, "m3", e3), message(t, "m4", e4)}}
	resp, err := w.Handle(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, f := range resp.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	if len(failed) != 0 {
		t.Fatalf("batch item failures = %v, want none (an oversized event must not be retried)", failed)
	}
	// moto enforces the item size limit with a ValidationException, as DynamoDB does.
	var sawValidation bool
	for _, err := range rec.errs {
		var apiErr smithy.APIError
		sawValidation = sawValidation || (errors.As(err, &apiErr) && apiErr.ErrorCode() == "ValidationException")
	}
	if !sawValidation {
		t.Fatalf("no ValidationException from moto; transaction errors: %v", rec.errs)
	}
	led, err := w.getLedger(context.Background(), e3.Key)
	if err != nil || led == nil {
		t.Fatalf("ledger of the oversized event: %+v, %v", led, err)
	}
	if led.Outcome != store.Rejected || !strings.Contains(led.Reason, "ValidationException") {
		t.Fatalf("oversized event ledger outcome %q reason %q, want REJECTED naming ValidationException", led.Outcome, led.Reason)
	}
	if !led.HasEvent() {
		t.Error("the rejected event's body was not kept: crmsync replay could not re-run it")
	}
	if got := countMetric(metrics.snapshot(), "Processed", map[string]string{"Outcome": store.Rejected}); got != 1 {
		t.Errorf("REJECTED metric = %v, want 1", got)
	}
	if got := countMetric(metrics.snapshot(), "Processed", map[string]string{"Outcome": "RETRY"}); got != 0 {
		t.Errorf("RETRY metric = %v, want 0", got)
	}
	for _, ev := range []*canonical.Event{e1, e2, e4} {
		led, err := w.getLedger(context.Background(), ev.Key)
		if err != nil || led == nil || led.Outcome != store.Applied {
			t.Fatalf("%s ledger = %+v, %v; want APPLIED", ev.Key, led, err)
		}
	}
	v := getContact(t, w, ContactQuery{Phone: phone})
	if got := v.Contact.Fields["last_call_status"].Value; got != "completed" {
		t.Errorf("last_call_status = %q, want the event after the oversized one applied", got)
	}
}

// concurrentLedgerWrite applies another delivery of the same key (through a separate worker)
// just before the first conditional ledger PutItem goes out: the reject's write then loses.
type concurrentLedgerWrite struct {
	DynamoAPI
	other func()
	once  sync.Once
}

func (c *concurrentLedgerWrite) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.once.Do(c.other)
	return c.DynamoAPI.PutItem(ctx, in, o...)
}

// reject reports REJECTED only when its conditional ledger write succeeded: when another
// delivery of the key was applied meanwhile, the result says duplicate and no REJECTED metric
// is emitted.
// Before the fix: "result = {... Outcome:REJECTED Reason:permanent failure: no hydrator ...}, want a duplicate: the ledger holds APPLIED".
func TestRejectReportsOnlyWhatItWrote(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	var metrics lockedBuffer
	thin := notification("meta-leads:r1", "rita@acme.com", "lead-1") // no hydrator configured: permanent
	full := lead("meta-leads:r1", "rita@acme.com", t0, map[string]string{"first_name": "Rita"})
	full.Source, full.PayloadHash = "meta-leads", thin.PayloadHash // the same delivery, hydrated elsewhere
	other := newWorker(t, tb, tb.ddb, c)
	api := &concurrentLedgerWrite{DynamoAPI: tb.ddb, other: func() { mustApply(t, other, full) }}
	w := newWorker(t, tb, api, c, func(cfg *Config) { cfg.Metrics = &metrics })
	res, err := w.Apply(context.Background(), thin)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if res.Outcome == store.Rejected || !res.Duplicate {
		t.Fatalf("result = %+v, want a duplicate: the ledger holds APPLIED", res)
	}
	if got := countMetric(metrics.snapshot(), "Processed", map[string]string{"Outcome": store.Rejected}); got != 0 {
		t.Errorf("REJECTED metric emitted %v times for a rejection that was not written", got)
	}
	led, _ := w.getLedger(context.Background(), thin.Key)
	if led == nil || led.Outcome != store.Applied {
		t.Fatalf("ledger = %+v, want the concurrent APPLIED kept", led)
	}
}

// slowTransactions delays every TransactWriteItems (a context-aware wait), so a batch takes
// longer than its deadline allows.
type slowTransactions struct {
	DynamoAPI
	delay time.Duration
}

func (s *slowTransactions) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	if err := sleepCtx(ctx, s.delay); err != nil {
		return nil, err
	}
	return s.DynamoAPI.TransactWriteItems(ctx, in, o...)
}

// A batch of 10 messages (two FIFO groups) whose deadline allows only some: the handler stops
// starting messages when less than the margin remains, returns before the deadline (the batch
// never times out), defers the rest in group order without a RETRY, and re-deliveries apply
// every event exactly once.
// Before the fix: "round 1: Handle returned 1ms after the deadline: Lambda would time out and fail the whole batch".
func TestDeadlineDefersUnstartedMessages(t *testing.T) {
	t.Setenv("WORKER_DEADLINE_MARGIN_MS", "1500")
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	var metrics lockedBuffer
	w := newWorker(t, tb, &slowTransactions{DynamoAPI: tb.ddb, delay: 600 * time.Millisecond}, c,
		func(cfg *Config) { cfg.Metrics = &metrics })
	var pending []events.SQSMessage
	var evs []*canonical.Event
	for i := range 5 {
		for _, g := range []string{"dg", "dh"} {
			ev := lead(fmt.Sprintf("typeform:%s%d", g, i), g+"@acme.com", t0.Add(time.Duration(i)*time.Minute),
				map[string]string{"last_name": fmt.Sprintf("N%d", i)})
			evs = append(evs, ev)
			pending = append(pending, message(t, ev.Key, ev))
		}
	}
	receives := map[string]int{}
	var deferredTotal float64
	for round := 1; len(pending) > 0; round++ {
		if round > 8 {
			t.Fatalf("still %d messages pending after %d rounds", len(pending), round-1)
		}
		for _, m := range pending {
			receives[m.MessageId]++
		}
		deadline := time.Now().Add(1500*time.Millisecond + 1200*time.Millisecond) // margin + room for about two messages
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		resp, err := w.Handle(ctx, events.SQSEvent{Records: pending})
		returned := time.Now()
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if returned.After(deadline) {
			t.Fatalf("round %d: Handle returned %v after the deadline: Lambda would time out and fail the whole batch",
				round, returned.Sub(deadline).Round(time.Millisecond))
		}
		failed := map[string]bool{}
		for _, f := range resp.BatchItemFailures {
			failed[f.ItemIdentifier] = true
		}
		if len(failed) == len(pending) {
			t.Fatalf("round %d made no progress: all %d messages deferred", round, len(pending))
		}
		// Deferral keeps FIFO order: within a group, once one message is deferred, all later are.
		deferredGroup := map[string]bool{}
		var next []events.SQSMessage
		for _, m := range pending {
			group := m.Attributes[groupAttr]
			if deferredGroup[group] && !failed[m.MessageId] {
				t.Fatalf("round %d: %s done although an earlier message of its group was deferred", round, m.MessageId)
			}
			if failed[m.MessageId] {
				deferredGroup[group] = true
				next = append(next, m)
			}
		}
		snap := metrics.snapshot()
		if got := countMetric(snap, "Processed", map[string]string{"Outcome": "RETRY"}); got != 0 {
			t.Fatalf("round %d: %v messages failed as transient errors, want them deferred, not failed", round, got)
		}
		deferredTotal = countMetric(snap, "Deferred", nil)
		pending = next
	}
	if deferredTotal == 0 {
		t.Error("no Deferred metric emitted although the first batch could not finish")
	}
	for id, n := range receives {
		if n >= 5 { // maxReceiveCount: one more failed receive would move it to the DLQ
			t.Errorf("%s received %d times", id, n)
		}
	}
	for _, ev := range evs {
		led, err := w.getLedger(context.Background(), ev.Key)
		if err != nil || led == nil || led.Outcome != store.Applied || led.Attempts != 1 {
			t.Fatalf("%s ledger = %+v, %v; want APPLIED at the first attempt", ev.Key, led, err)
		}
	}
	for _, g := range []string{"dg", "dh"} {
		v := getContact(t, w, ContactQuery{Email: g + "@acme.com"})
		if len(v.Timeline) != 5 {
			t.Errorf("%s: %d activities, want each event applied once", g, len(v.Timeline))
		}
	}
}

// A no-op — a late re-send of a CRM edit older than the field's value, carrying that value —
// writes its ledger item alone, with one conditional PutItem: a transaction of one item would
// cost twice the write units for the same atomicity. A redelivery of it is then a duplicate.
func TestNoopWritesItsLedgerItemWithOnePut(t *testing.T) {
	tb := provision(t)
	counted := newCounting(tb.ddb)
	w := newWorker(t, tb, counted, newClock(t0.Add(2*time.Hour)))
	edit := func(key string, at time.Time) *canonical.Event {
		return &canonical.Event{Key: key, Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: at,
			GroupKey: "email:dan@acme.com", Subject: canonical.Person{Emails: []string{"dan@acme.com"}},
			Actor:  &canonical.Actor{Email: "alice@example.com", Role: "revops"},
			Fields: map[string]map[string]string{"contact": {"job_title": "CTO"}}, PayloadHash: canonical.HashHex(key)}
	}
	mustApply(t, w, edit("crm:chg-1", t0.Add(time.Hour)))
	counted.reset()
	res := mustApply(t, w, edit("crm:chg-0", t0.Add(59*time.Minute)))
	if res.Outcome != store.Noop {
		t.Fatalf("older edit of the same value: %+v, want NOOP", res)
	}
	if tx, puts := counted.calls["TransactWriteItems"], counted.calls["PutItem"]; tx != 0 || puts != 1 {
		t.Errorf("the no-op wrote with %d transactions and %d PutItem, want 0 and 1", tx, puts)
	}
	if again := mustApply(t, w, edit("crm:chg-0", t0.Add(59*time.Minute))); !again.Duplicate {
		t.Errorf("redelivery of the no-op: %+v, want a duplicate", again)
	}
}
