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

	"github.com/crmsync/crmsync/shared/store"
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
	result := &loadResult{EndToEnd: endToEnd, Persons: persons, Concurrency: concurrency, ByStep: map[string]int{}, ByConnector: map[string]int{},
		Statuses: map[int]int{}, Outcomes: map[string]int{}, ConnectorLatencies: map[string][]time.Duration{}}
	jobs, err := planLoadJobs(ctx, s, t, first, persons)
	if err != nil {
		return nil, err
	}
	keys := result.tallyDeliveries(jobs)

	before, fnBefore := s.counter.Snapshot(), s.fns.snapshot()
	storedAt := time.Now()
	storedBefore := s.counter.Storage(storedAt, storageHorizon)
	if !endToEnd {
		// Without the worker, consume the queue (uncounted) so it stays as short as in service:
		// moto's FIFO send slows down as a queue grows.
		stop := s.consume(ctx)
		defer stop()
	}
	start := time.Now()
	err = result.postLoadJobs(ctx, s, jobs, concurrency)
	result.PostWall = time.Since(start)
	if err != nil {
		return nil, err
	}
	result.sortLatencies()
	if !endToEnd {
		result.recordUsage(s, before, fnBefore)
		return result, nil
	}
	if err := waitQueueDrained(ctx, s); err != nil {
		return nil, err
	}
	result.DrainWall = time.Since(start)
	// The event source mapping keeps polling an empty queue; stop counting at the drain.
	result.recordUsage(s, before, fnBefore)
	s.fns.mu.Lock()
	result.MetricSeries = len(s.fns.series)
	s.fns.mu.Unlock()

	if err := s.outcomes(ctx, keys, result); err != nil {
		return nil, err
	}
	result.Workload = costmodel.Workload{Events: result.Events, HTTPRequests: result.Deliveries, Lambda: result.Lambda, AWS: result.Usage, LogBytes: result.LogBytes,
		Storage: s.storageAdded(storedBefore, s.counter.Storage(storedAt, storageHorizon))}
	return result, nil
}

// storageHorizon is how long the cost model keeps what a month's events store: the ledger's
// retention (its items' TTL). CRM items have no TTL; priced for the same horizon, they keep
// costing as much every further month.
const storageHorizon = store.DefaultRetention

// storageAdded is what the run added to each table of the stack, with the template's
// point-in-time recovery setting.
func (s *benchStack) storageAdded(before, after map[string]costmodel.Stored) []costmodel.TableStorage {
	var out []costmodel.TableStorage
	for _, id := range s.Stack.Template.OfType("AWS::DynamoDB::Table") {
		name := s.Stack.Physical[id].Ref
		spec, _ := s.Stack.Template.Resources[id].Properties["PointInTimeRecoverySpecification"].(map[string]any)
		pitr, _ := spec["PointInTimeRecoveryEnabled"].(bool)
		out = append(out, costmodel.TableStorage{Table: id, Stored: after[name].Sub(before[name]), PITR: pitr})
	}
	return out
}

// loadJob is one person's deliveries, posted in journey order by one sender.
type loadJob struct{ deliveries []delivery }

// planLoadJobs builds the journeys of persons people from person first, installing the vendor
// fixtures their deliveries need; every twentieth delivery (but Mailgun's) is followed by its
// vendor retry.
func planLoadJobs(ctx context.Context, s *benchStack, t *benchTraffic, first, persons int) ([]loadJob, error) {
	now := time.Now()
	var jobs []loadJob
	planned := 0
	for i := 0; i < persons; i++ {
		subject := person(first + i)
		var job loadJob
		for _, journeyStep := range subject.journey() {
			d, err := t.build(journeyStep, subject, 0, s.base, now)
			if err != nil {
				return nil, err
			}
			if err := installFixture(ctx, s.client, s.base, d); err != nil {
				return nil, err
			}
			job.deliveries = append(job.deliveries, d)
			planned++
			// Mailgun tokens are single-use (the replay cache refuses a second use), so a Mailgun
			// retry would be refused; retries are drawn from the other connectors.
			if planned%20 == 0 && d.connector != "mailgun" {
				retry := d
				retry.label = "retry"
				job.deliveries = append(job.deliveries, retry)
			}
		}
		jobs = append(jobs, job)
	}
	return jobs, nil
}

// tallyDeliveries counts the jobs' deliveries, retries, steps and connectors, and returns the
// distinct canonical event keys they carry (their number is Events).
func (r *loadResult) tallyDeliveries(jobs []loadJob) map[string]bool {
	keys := map[string]bool{}
	for _, job := range jobs {
		for _, d := range job.deliveries {
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
	return keys
}

// postLoadJobs posts the jobs, concurrency senders at a time, recording each delivery's latency
// and status; it returns the first posting error once every job was posted.
func (r *loadResult) postLoadJobs(ctx context.Context, s *benchStack, jobs []loadJob, concurrency int) error {
	queue := make(chan loadJob)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range queue {
				for _, d := range job.deliveries {
					postStart := time.Now()
					status, err := post(ctx, s.client, s.base, d)
					latency := time.Since(postStart)
					mu.Lock()
					r.Latencies = append(r.Latencies, latency)
					r.ConnectorLatencies[d.connector] = append(r.ConnectorLatencies[d.connector], latency)
					r.Statuses[status]++
					if err != nil && firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, job := range jobs {
		queue <- job
	}
	close(queue)
	wg.Wait()
	return firstErr
}

// sortLatencies sorts the latencies, overall and per connector.
func (r *loadResult) sortLatencies() {
	for _, latencies := range r.ConnectorLatencies {
		sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	}
	sort.Slice(r.Latencies, func(i, j int) bool { return r.Latencies[i] < r.Latencies[j] })
}

// recordUsage records the AWS usage and the functions' Lambda use and log bytes since before.
func (r *loadResult) recordUsage(s *benchStack, before costmodel.Usage, fnBefore map[string]fnStat) {
	r.Usage = s.counter.Snapshot().Sub(before)
	r.Lambda, r.LogBytes = s.fns.since(fnBefore)
}

// waitQueueDrained waits until the ingest queue holds nothing visible or in flight, twice in a
// row, for at most 10 minutes.
func waitQueueDrained(ctx context.Context, s *benchStack) error {
	deadline := time.Now().Add(10 * time.Minute)
	for quiet := 0; quiet < 2; {
		visible, inFlight, err := s.queueDepth(ctx)
		if err != nil {
			return err
		}
		if visible == 0 && inFlight == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the queue did not drain in 10 minutes (%d visible, %d in flight)", visible, inFlight)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
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
