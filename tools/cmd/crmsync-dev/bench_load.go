package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/tools/costmodel"
)

// loadResult is the load run's figures.
type loadResult struct {
	// EndToEnd is set when the worker ran (else only the webhooks were measured).
	EndToEnd             bool
	Persons, Concurrency int
	Deliveries           int            // webhook requests posted
	Retries              int            // of which vendor retries of an earlier delivery
	Events               int            // distinct canonical events
	ByStep               map[string]int // deliveries per journey step
	ByConnector          map[string]int
	Statuses             map[int]int
	PostWall             time.Duration // first post to last answer
	DrainWall            time.Duration // first post to queue drained
	Latencies            []time.Duration
	ConnectorLatencies   map[string][]time.Duration
	Outcomes             map[string]int // ledger outcomes of the distinct events
	Missing              int            // distinct events without a ledger item
	Usage                costmodel.Usage
	Lambda               []costmodel.LambdaUse
	LogBytes             int64
	MetricSeries         int
	Workload             costmodel.Workload
}

// runLoad posts every person's journey over HTTP, concurrency senders at a time (each sender
// posts its people's deliveries in journey order), with one in twenty deliveries repeated as a
// vendor retry; endToEnd waits for the worker (the stack's event source mapping) to drain the
// queue and checks every event's ledger outcome.
func runLoad(ctx context.Context, s *benchStack, t *benchTraffic, first, persons, concurrency int, endToEnd bool) (*loadResult, error) {
	now := time.Now()
	r := &loadResult{EndToEnd: endToEnd, Persons: persons, Concurrency: concurrency, ByStep: map[string]int{}, ByConnector: map[string]int{},
		Statuses: map[int]int{}, Outcomes: map[string]int{}, ConnectorLatencies: map[string][]time.Duration{}}
	type job struct{ ds []delivery }
	var jobs []job
	keys := map[string]bool{}
	n := 0
	for i := 0; i < persons; i++ {
		p := person(first + i)
		var j job
		for _, st := range p.journey() {
			d, err := t.build(st, p, 0, s.base, now)
			if err != nil {
				return nil, err
			}
			if err := installFixture(ctx, s.client, s.base, d); err != nil {
				return nil, err
			}
			j.ds = append(j.ds, d)
			n++
			// Mailgun tokens are single-use (the replay cache refuses a second use), so a Mailgun
			// retry would be refused; retries are drawn from the other connectors.
			if n%20 == 0 && d.connector != "mailgun" {
				retry := d
				retry.label = "retry"
				j.ds = append(j.ds, retry)
			}
		}
		jobs = append(jobs, j)
	}
	for _, j := range jobs {
		for _, d := range j.ds {
			r.Deliveries++
			if d.label == "retry" {
				r.Retries++
			} else {
				r.ByStep[d.label]++
				r.ByConnector[d.connector]++
			}
			for _, k := range d.keys {
				keys[k] = true
			}
		}
	}
	r.Events = len(keys)

	before, fnBefore := s.counter.Snapshot(), s.fns.snapshot()
	if !endToEnd {
		// Without the worker, consume the queue (uncounted) so it stays as short as in service:
		// moto's FIFO send slows down as a queue grows.
		stop := s.consume(ctx)
		defer stop()
	}
	queue := make(chan job)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				for _, d := range j.ds {
					t0 := time.Now()
					status, err := post(ctx, s.client, s.base, d)
					lat := time.Since(t0)
					mu.Lock()
					r.Latencies = append(r.Latencies, lat)
					r.ConnectorLatencies[d.connector] = append(r.ConnectorLatencies[d.connector], lat)
					r.Statuses[status]++
					if err != nil && firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, j := range jobs {
		queue <- j
	}
	close(queue)
	wg.Wait()
	r.PostWall = time.Since(start)
	if firstErr != nil {
		return nil, firstErr
	}
	for _, l := range r.ConnectorLatencies {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	sort.Slice(r.Latencies, func(i, j int) bool { return r.Latencies[i] < r.Latencies[j] })
	if !endToEnd {
		r.Usage = s.counter.Snapshot().Sub(before)
		r.Lambda, r.LogBytes = s.fns.since(fnBefore)
		return r, nil
	}
	// Drained: nothing visible or in flight, twice in a row.
	deadline := time.Now().Add(10 * time.Minute)
	for quiet := 0; quiet < 2; {
		vis, inflight, err := s.queueDepth(ctx)
		if err != nil {
			return nil, err
		}
		if vis == 0 && inflight == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the queue did not drain in 10 minutes (%d visible, %d in flight)", vis, inflight)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.DrainWall = time.Since(start)
	// The event source mapping keeps polling an empty queue; stop counting at the drain.
	r.Usage = s.counter.Snapshot().Sub(before)
	r.Lambda, r.LogBytes = s.fns.since(fnBefore)
	s.fns.mu.Lock()
	r.MetricSeries = len(s.fns.series)
	s.fns.mu.Unlock()

	if err := s.outcomes(ctx, keys, r); err != nil {
		return nil, err
	}
	r.Workload = costmodel.Workload{Events: r.Events, HTTPRequests: r.Deliveries, Lambda: r.Lambda, AWS: r.Usage, LogBytes: r.LogBytes}
	return r, nil
}

// consume receives and deletes the ingest queue's messages until stopped, without counting.
func (s *benchStack) consume(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	client := sqs.NewFromConfig(s.plain)
	url := aws.String(s.Stack.Physical["IngestQueue"].Ref)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
			if err != nil || len(out.Messages) == 0 {
				continue
			}
			var entries []sqstypes.DeleteMessageBatchRequestEntry
			for i, m := range out.Messages {
				entries = append(entries, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
			}
			_, _ = client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: url, Entries: entries})
		}
	}()
	return func() { cancel(); <-done }
}

func attrString(v ddbtypes.AttributeValue) string {
	if s, ok := v.(*ddbtypes.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}

// outcomes tallies the ledger's outcome of every distinct event (reads are not counted).
func (s *benchStack) outcomes(ctx context.Context, keys map[string]bool, r *loadResult) error {
	client := dynamodb.NewFromConfig(s.plain)
	p := dynamodb.NewScanPaginator(client, &dynamodb.ScanInput{TableName: aws.String(s.Stack.Physical["LedgerTable"].Ref)})
	seen := map[string]bool{}
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, it := range out.Items {
			k, o := attrString(it["pk"]), attrString(it["outcome"])
			if keys[k] {
				seen[k] = true
				r.Outcomes[o]++
			}
		}
	}
	r.Missing = len(keys) - len(seen)
	return nil
}
