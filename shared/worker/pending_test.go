package worker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/store"
)

// laggingIndexes answers every global secondary index query as an index that has not caught
// up yet (empty), as real DynamoDB may for a while after a write; base-table reads are real.
// It counts the index queries it hid.
type laggingIndexes struct {
	DynamoAPI
	mu     sync.Mutex
	hidden int
}

func (l *laggingIndexes) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	if aws.ToString(in.IndexName) != "" {
		l.mu.Lock()
		l.hidden++
		l.mu.Unlock()
		return &dynamodb.QueryOutput{}, nil
	}
	return l.DynamoAPI.Query(ctx, in, o...)
}

// orderedCommits lets racing workers read before any of them writes, then commits their first
// transactions in a fixed order: worker i's waits for every worker to arrive and for workers
// 0..i-1 to finish theirs.
type orderedCommits struct {
	arrived sync.WaitGroup
	done    []chan struct{}
}

func newOrderedCommits(n int) *orderedCommits {
	o := &orderedCommits{done: make([]chan struct{}, n)}
	o.arrived.Add(n)
	for i := range o.done {
		o.done[i] = make(chan struct{})
	}
	return o
}

// orderedWorker is worker i's client under orderedCommits.
type orderedWorker struct {
	DynamoAPI
	o     *orderedCommits
	i     int
	first sync.Once
}

func (w *orderedWorker) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	first := false
	w.first.Do(func() { first = true })
	if !first {
		return w.DynamoAPI.TransactWriteItems(ctx, in, o...)
	}
	w.o.arrived.Done()
	w.o.arrived.Wait()
	for j := range w.i {
		<-w.o.done[j]
	}
	defer close(w.o.done[w.i])
	return w.DynamoAPI.TransactWriteItems(ctx, in, o...)
}

// thinGraphEmail is a Graph message notification reduced to what its hydration gives for an
// email from a person crmsync does not know yet: an email activity, no contact fields.
func thinGraphEmail(email string, at time.Time) *canonical.Event {
	return &canonical.Event{Key: "msgraph:sub:created:msg1", Source: "msgraph", Kind: canonical.KindEmailEvent, OccurredAt: at, ReceivedAt: at,
		GroupKey: "email:" + email, Subject: canonical.Person{Emails: []string{email}},
		Activity: &canonical.Activity{ID: "email:<msg1@example.net>", Type: "email", Status: "received", Direction: "inbound",
			Participants: []canonical.Participant{{Role: "from", Email: email}}},
		MappingVersion: "msgraph/1", PayloadHash: canonical.HashHex("graph:msg1")}
}

// leadInOtherGroup is a lead for the same person travelling in another FIFO group (its phone's).
func leadInOtherGroup(email string, at time.Time) *canonical.Event {
	ev := lead("typeform:grace", email, at, map[string]string{"first_name": "Grace"})
	ev.Subject.Phones = []string{"+14155550123"}
	ev.GroupKey = "phone:+14155550123"
	return ev
}

// A thin Graph email parked before its contact exists is on the contact's timeline as soon as
// the lead (another message group) is applied — in either order of commit, with every index
// read answering as an index that has not caught up: adoption never waits for the consistency
// job and never reads an index.
func TestParkedActivityAdoptedWithoutIndexReads(t *testing.T) {
	const email = "grace@example.org"
	for _, tt := range []struct {
		name        string
		parkerFirst bool
	}{
		{"email parked, then the lead commits", true},
		{"lead commits while the email is being parked", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := provision(t)
			c := newClock(t0.Add(time.Hour))
			order := newOrderedCommits(2)
			lag := &laggingIndexes{DynamoAPI: tb.ddb}
			parkerIdx, claimerIdx := 0, 1
			if !tt.parkerFirst {
				parkerIdx, claimerIdx = 1, 0
			}
			parker := newWorker(t, tb, &orderedWorker{DynamoAPI: lag, o: order, i: parkerIdx}, c)
			claimer := newWorker(t, tb, &orderedWorker{DynamoAPI: lag, o: order, i: claimerIdx}, c)

			var wg sync.WaitGroup
			var parked, claimed Result
			var parkErr, claimErr error
			wg.Add(2)
			go func() {
				defer wg.Done()
				parked, parkErr = parker.Apply(context.Background(), thinGraphEmail(email, t0))
			}()
			go func() {
				defer wg.Done()
				claimed, claimErr = claimer.Apply(context.Background(), leadInOtherGroup(email, t0.Add(time.Minute)))
			}()
			wg.Wait()
			if parkErr != nil || claimErr != nil || parked.Outcome != store.Applied || claimed.Outcome != store.Applied {
				t.Fatalf("parker %+v %v; claimer %+v %v", parked, parkErr, claimed, claimErr)
			}
			v := getContact(t, newWorker(t, tb, tb.ddb, c), ContactQuery{Email: email})
			var ids []string
			for _, e := range v.Timeline {
				ids = append(ids, e.Activity.ID)
			}
			if len(ids) != 2 {
				t.Fatalf("timeline = %v, want the Graph email and the form", ids)
			}
			if lag.hidden != 0 {
				t.Errorf("the decision path read a global secondary index %d times", lag.hidden)
			}
		})
	}
}

// An unclaimed identity lists at most maxPending parked activities (a mailing recipient who
// never becomes a contact must not grow an item without bound); later ones are still parked,
// and the contact that finally claims the identity adopts from the list while the consistency
// job finds the rest through the Unassociated index.
func TestPendingListIsBounded(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c)
	const email = "list@example.org"
	for i := range maxPending + 3 {
		ev := thinGraphEmail(email, t0.Add(time.Duration(i)*time.Minute))
		ev.Key = fmt.Sprintf("msgraph:sub:created:msg%d", i)
		ev.Activity.ID = fmt.Sprintf("email:<msg%d@example.net>", i)
		ev.PayloadHash = canonical.HashHex(ev.Key)
		if res := mustApply(t, w, ev); res.Outcome != store.Applied || res.ContactID != "" {
			t.Fatalf("parking %d: %+v", i, res)
		}
	}
	claim, err := w.applier.reader.claim(context.Background(), store.IdentEmailPK(email), store.SKIdent)
	if err != nil || claim == nil {
		t.Fatalf("identity item: %+v, %v", claim, err)
	}
	if got := len(claim.Pending); got != maxPending || claim.ContactID != "" {
		t.Fatalf("pending = %d (contact %q), want %d and unclaimed", got, claim.ContactID, maxPending)
	}
	mustApply(t, w, leadInOtherGroup(email, t0.Add(2*time.Hour)))
	v := getContact(t, w, ContactQuery{Email: email})
	if got, want := len(v.Timeline), maxMoves+1; got != want { // adopted by the claim, plus the form
		t.Errorf("timeline has %d activities, want %d", got, want)
	}
	claim, _ = w.applier.reader.claim(context.Background(), store.IdentEmailPK(email), store.SKIdent)
	if got := len(claim.Pending); got != maxPending-maxMoves {
		t.Errorf("still pending on the claim: %d, want %d", got, maxPending-maxMoves)
	}
}
