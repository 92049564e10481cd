package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/crmsync/crmsync/shared/canonical"
)

// patientGate holds each TransactWriteItems until two are waiting, or until wait has passed,
// then lets them through one at a time: two events planned at once both read before either
// writes, as on a busy table; one planned after the other is only delayed.
type patientGate struct {
	DynamoAPI
	mu      sync.Mutex
	waiting int
	release chan struct{}
	wait    time.Duration
	calls   atomic.Int32
}

func (g *patientGate) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	g.calls.Add(1)
	g.mu.Lock()
	if g.release == nil {
		g.release = make(chan struct{})
	}
	g.waiting++
	release := g.release
	if g.waiting == 2 {
		close(release)
		g.release, g.waiting = nil, 0
	}
	g.mu.Unlock()
	select {
	case <-release:
	case <-time.After(g.wait):
		g.mu.Lock()
		if g.release == release {
			g.release, g.waiting = nil, 0
		}
		g.mu.Unlock()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.DynamoAPI.TransactWriteItems(ctx, in, o...)
}

// A call (keyed by phone) and a form (keyed by email address) about one contact, each writing
// the contact's profile, arrive in one batch in two message groups: the batch's claims name the
// same contact, so the two groups run in one lane, one after the other, and neither transaction
// is canceled by the other.
func TestGroupsAboutOneContactShareALane(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	mustApply(t, newWorker(t, tb, tb.ddb, c), &canonical.Event{Key: "crm:dan", Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: t0,
		GroupKey: "email:dan@acme.com", Subject: canonical.Person{Emails: []string{"dan@acme.com"}, Phones: []string{"+14155550142"}},
		Actor:  &canonical.Actor{Email: "alice@example.com", Role: "revops"},
		Fields: map[string]map[string]string{"contact": {"first_name": "Dan"}}, PayloadHash: "h-dan"})

	gate := &patientGate{DynamoAPI: tb.ddb, wait: 2 * time.Second}
	w := newWorker(t, tb, &batchGate{patientGate: gate, batch: tb.ddb}, c)
	form := lead("typeform:dan", "dan@acme.com", t0.Add(time.Minute), map[string]string{"utm_source": "google"})
	resp, err := w.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{
		message(t, "m-call", callback(1, "ringing", "+14155550142", 0)), message(t, "m-form", form)}})
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("batch: %+v, %v", resp, err)
	}
	if got := gate.calls.Load(); got != 2 {
		t.Errorf("the batch sent %d transactions, want 2: one was canceled by the other and re-decided", got)
	}
	v := getContact(t, w, ContactQuery{Email: "dan@acme.com"})
	if len(v.Timeline) != 2 {
		t.Errorf("dan's timeline = %d activities, want the call and the form", len(v.Timeline))
	}
}

// batchGate is patientGate with the table's BatchGetItem, as the worker's real client has.
type batchGate struct {
	*patientGate
	batch batchGetter
}

func (b *batchGate) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	return b.batch.BatchGetItem(ctx, in, o...)
}
