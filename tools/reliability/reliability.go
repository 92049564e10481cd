// Package reliability owns crmsync's reliability suite (issue 8): it runs the whole pipeline on
// the local stack with the functions' AWS traffic going through the fault proxy
// (tools/awsproxy), the worker crashing after its transaction but before its batch response,
// and the load generator (tools/loadgen) acting as every vendor — duplicates, deliveries out of
// order, re-sends after the SQS deduplication window, retries of deliveries answered 5xx — then
// waits for the pipeline to drain, reads the ledger, the CRM table, the dead-letter queue and the
// quarantine bucket, and judges the run against the independent oracle (tools/oracle):
//
//   - lost: a unique event a webhook accepted (or the harness enqueued) with no ledger outcome,
//     no quarantined payload and no dead-letter message;
//   - applied twice: an event key whose ledger write (the transaction that applies it, or the
//     rejection) committed more than once — counted from the endpoint's real answers as the
//     proxy saw them, so a transaction applied behind an injected error counts — plus activities
//     held in two places and audit entries written twice;
//   - diverged: people whose contact or timeline differs from the oracle's.
//
// `crmsync-dev reliability` and `make reliability` run it in full; a shortened run is a test.
package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/wiring"
	"github.com/crmsync/crmsync/tools/awsproxy"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/loadgen"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/oracle"
	"github.com/crmsync/crmsync/tools/samples"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// DefaultFaults is the fault mix of a full run: every kind, before and after forwarding, on every
// AWS API the functions call, and batches answered 200 with part of them not done.
const DefaultFaults = "throttle=0.02,server-error=0.01,timeout=0.002,conflict=0.03,partial=0.03"

// SQSRefusal is the extra rule that makes SQS refuse the webhooks' sends often enough that the
// SDK's three attempts all fail now and then: the webhook answers 5xx and the vendor retries.
var SQSRefusal = awsproxy.Rule{Kind: awsproxy.ServerError, Phase: awsproxy.Before, Rate: 0.15, APIs: []string{"sqs.SendMessageBatch"}}

// Options configure a run.
type Options struct {
	// Root is the repository root (template.yaml, config/, events/vendor).
	Root string
	// Events, People, DupRate, ReorderRate and LateShare shape the load (see loadgen.Options).
	Events, People       int
	DupRate, ReorderRate float64
	LateShare            float64
	Concurrency          int    // deliveries in flight (default 16)
	Faults               string // awsproxy.ParseRules syntax (default DefaultFaults; "none")
	SQSRefusal           bool   // add the SQSRefusal rule
	// IndexLag is how far behind the table a Query of a global secondary index sees it (the
	// patched moto's index lag; default 300ms, negative for none). A run against a given Endpoint
	// has none of its own.
	IndexLag time.Duration
	// Poison is how many poison events to inject (see poisoned); 0 for none.
	Poison int
	// HistoryPath is where the run writes its history of profile reads and writes (JSON lines);
	// "" for a file in the temporary directory.
	HistoryPath string
	// VendorFaults is the share of hydration reads (Graph, Meta) the vendor fakes fail: two
	// fifths server errors, two fifths rate limits, one fifth no answer (localcloud.VendorFaults).
	VendorFaults float64
	// NoContention lets overlapping DynamoDB writes pass. By default the fault proxy makes them
	// conflict as DynamoDB does (awsproxy.Config.Contention) and the run fails without any.
	NoContention  bool
	CrashRate     float64 // share of worker invocations crashed after the handler ran
	Seed          uint64
	Pollers       int           // event source mapping pollers (default 6)
	Visibility    time.Duration // ingest queue visibility timeout for the run (default 30s)
	Hold          time.Duration // how long a timeout fault holds a request (default 2s)
	DrainTimeout  time.Duration // how long to wait for the queue to drain (default 10m)
	Endpoint      string        // moto endpoint; "" starts one on a free port
	Log           io.Writer     // progress lines (default discard)
	FunctionLog   io.Writer     // the functions' JSON logs (default discard)
	SecretTTL     time.Duration // webhook secret cache TTL override (0: the template's)
	ProgressEvery time.Duration // how often progress is logged (default 10s)
}

// ShortOptions is the shortened run's profile (TestReliabilityShort, and `make reliability
// SEEDS=n`): 1,000 events about 100 people, every fault kind at higher rates than a full run's,
// worker crashes, SQS refusals and 3 poison events, with a 10 s visibility timeout so that
// crashes and poison cost seconds, not minutes.
func ShortOptions(root string, seed uint64) Options {
	return Options{Root: root, Events: 1000, People: 100, Concurrency: 16, DupRate: 0.3, ReorderRate: 0.2,
		Faults: "throttle=0.03,server-error=0.02,timeout=0.003,conflict=0.05,partial=0.05", SQSRefusal: true, CrashRate: 0.04,
		Poison: 3, VendorFaults: 0.05, Seed: seed, Visibility: 10 * time.Second, Hold: time.Second, DrainTimeout: 3 * time.Minute, ProgressEvery: 15 * time.Second}
}

func (o *Options) defaults() error {
	if o.Root == "" {
		o.Root = "."
	}
	if o.Events <= 0 {
		o.Events = 10000
	}
	if o.People <= 0 {
		o.People = 1000
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Faults == "" {
		o.Faults = DefaultFaults
	}
	if o.Pollers <= 0 {
		o.Pollers = 6
	}
	if o.Visibility <= 0 {
		o.Visibility = 30 * time.Second
	}
	if o.Hold <= 0 {
		o.Hold = 2 * time.Second
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.FunctionLog == nil {
		o.FunctionLog = io.Discard
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 10 * time.Second
	}
	switch {
	case o.Endpoint != "" || o.IndexLag < 0:
		o.IndexLag = 0
	case o.IndexLag == 0:
		o.IndexLag = 300 * time.Millisecond
	}
	if o.CrashRate < 0 || o.CrashRate > 1 || o.DupRate < 0 || o.ReorderRate < 0 || o.ReorderRate > 1 {
		return errors.New("reliability: rates must be in [0, 1]")
	}
	return nil
}

// Verdict is a run's result.
type Verdict struct {
	// Settings echo what was run.
	Events, People, Concurrency, Pollers int
	Seed                                 uint64
	// FaultFlag is the --faults value; FaultSpec the rules it expanded to (SQS refusal included).
	FaultFlag, FaultSpec string
	SQSRefusal           bool
	CrashRate            float64
	// VendorFaults is the share of hydration reads the vendor fakes failed.
	VendorFaults float64
	Visibility   time.Duration

	// Sent is the scheduled deliveries (unique + duplicates); Unique the unique events;
	// Duplicates the duplicate deliveries, Late those re-sent after the SQS deduplication window;
	// OutOfOrder the unique deliveries sent before an earlier event of the same person.
	Sent, Unique, Duplicates, Late, OutOfOrder int
	// BySource counts unique events per connector.
	BySource map[string]int
	// Requests is the webhook HTTP requests (vendor retries included); Statuses their answers;
	// VendorRetries the deliveries retried after a 5xx.
	Requests, VendorRetries int
	Statuses                map[string]int
	// Faults counts injected faults: "<kind>/<phase>" from the proxy, "crash/after-commit" for
	// worker crashes.
	Faults map[string]int
	// FaultChecks are the injected faults per kind, phase and API beside the minimum the run
	// asserts (from each rule's rate and the requests it could fault); FaultsShort counts the
	// checks that fell short of their minimum.
	FaultChecks []FaultCheck
	FaultsShort int
	// Contention says whether overlapping writes conflicted as in DynamoDB; NaturalConflicts
	// counts the conflicts so answered, by API.
	Contention       bool
	NaturalConflicts map[string]int
	// IndexLag is how far behind its table a Query of an index saw it; LaggedReads counts the
	// Queries whose answer differed from a fresh one because of it, by index.
	IndexLag    time.Duration
	LaggedReads map[string]int
	// Webhook5xx counts webhook answers 5xx (the vendor retried them), whatever their cause.
	Webhook5xx int
	// AWSRequests counts the functions' AWS requests by API (as the proxy saw them).
	AWSRequests map[string]int

	// Accepted is the unique events a webhook accepted; EnqueuedLate those only the harness's
	// late re-sends enqueued; Refused authentic deliveries answered 4xx that no webhook delivery
	// of the event recovered; GaveUp deliveries never accepted by a webhook (a late re-send that
	// got the event in does not excuse either).
	Accepted, EnqueuedLate, Refused, GaveUp int
	// Dropped counts events a webhook answered 2xx for without enqueueing them (no SendMessageBatch
	// entry of the key succeeded at the endpoint).
	Dropped int
	// QuarantinedAuthentic counts authentic deliveries the webhook quarantined; RejectedValid the
	// REJECTED ledger outcomes of the plan's (valid) events; DeadLettered the plan's events in the
	// dead-letter queue. The run's scenarios expect none of them.
	QuarantinedAuthentic, RejectedValid, DeadLettered int
	// History is the history check's report; HistoryPath the file the history was written to.
	History     HistoryReport
	HistoryPath string
	// ObserverMissed counts ledger items whose write the observer never saw commit, ObserverExtra
	// keys it saw commit that have no ledger item: either means "applied twice" was judged blind.
	ObserverMissed, ObserverExtra int
	// Outcomes counts ledger items by outcome; DLQ the dead-letter messages; Quarantined the
	// quarantined payloads.
	Outcomes         map[string]int
	DLQ, Quarantined int
	// Drained says whether the queue drained before the timeout.
	Drained bool

	// Poison is the poison events injected; PoisonDeadLettered those the redrive found in the
	// dead-letter queue; PoisonApplied those applied exactly once after it; UnexpectedDeadLetters
	// the other events the redrive found there. RedriveRuns counts the redrive calls (one stopped
	// by a fault is run again).
	Poison, PoisonDeadLettered, PoisonApplied, UnexpectedDeadLetters, RedriveRuns int
	// DraggedDeadLetters counts events of a poisoned group dead-lettered with the poison: received
	// with it on every receive and returned unprocessed (FIFO order), they used up their receives
	// too. A known limitation of the worker, reported; each must still apply exactly once after
	// the redrive (else it counts as unexpected).
	DraggedDeadLetters int
	// PoisonGroupWait is the longest an event of a poisoned group waited between its webhook's
	// answer and its ledger outcome, OtherGroupWait the longest any other event waited (a backlog
	// makes every event wait); PoisonBound is the documented bound on how long a poison event
	// holds its group (maxReceiveCount receives, each a visibility timeout).
	PoisonGroupWait, OtherGroupWait, PoisonBound time.Duration

	// Lost, AppliedTwice and Diverged are the three counts that must be 0.
	Lost                        int
	AppliedTwice                int
	DuplicateLedgerWrites       int
	DuplicateActivities         int
	DuplicateAudits             int
	DivergedRecords             int
	DivergedTimelines           int
	ComparedPeople, WithContact int
	// DivergedBeforeReconcile counts records and timelines differing from the oracle once the
	// queue drained, before the consistency job ran; Reassociated the activities that job moved
	// under their contact.
	DivergedBeforeReconcile, Reassociated int
	// Findings describes the first problems (lost keys, double writes, divergences, refusals).
	Findings []string
	// Wall is the run's wall time (stack start to verdict); Send the sending phase; Drain the
	// wait for the queue to empty.
	Wall, Send, Drain time.Duration
}

// Diverged is records plus timelines differing from the oracle.
func (v *Verdict) Diverged() int { return v.DivergedRecords + v.DivergedTimelines }

// Pass reports whether nothing was lost, nothing applied twice, nothing diverged; no authentic
// delivery was refused, given up on, dropped, quarantined, rejected or dead-lettered; the
// observer saw every ledger write; and every fault was injected at least its asserted minimum.
func (v *Verdict) Pass() bool {
	return v.Lost == 0 && v.AppliedTwice == 0 && v.Diverged() == 0 && v.Refused == 0 && v.GaveUp == 0 && v.Dropped == 0 &&
		v.QuarantinedAuthentic == 0 && v.RejectedValid == 0 && v.DeadLettered == 0 && v.ObserverMissed == 0 &&
		v.ObserverExtra == 0 && v.FaultsShort == 0 && v.Drained && v.PoisonDeadLettered == v.Poison && v.PoisonApplied == v.Poison &&
		v.UnexpectedDeadLetters == 0 && v.History.Count == 0 && (!v.Contention || v.NaturalConflicts["dynamodb.TransactWriteItems"] > 0) &&
		(v.IndexLag == 0 || awsproxy.Total(v.LaggedReads) > 0)
}

// FaultCheck is one fault kind in one phase on one API (or the worker crash): how many were
// injected beside the minimum the run asserts.
type FaultCheck struct {
	// Fault is "<kind>/<phase>" or "crash/after-commit"; API the request name ("lambda.worker" for
	// crashes).
	Fault, API string
	// Expected is the mean injections at the rules' rates over the requests made while faults
	// were on; Min the asserted minimum (0: too few requests to assert one).
	Expected float64
	Min, Got int
}

// vendorFaultChecks lists, per vendor and kind, the vendor faults injected beside their asserted
// minimum (from the rates and the hydration reads each vendor fake saw).
func vendorFaultChecks(f localcloud.VendorFaults, counts map[string]int) []FaultCheck {
	var out []FaultCheck
	for _, vendor := range []string{"meta-graph", "msgraph"} {
		gets := float64(counts["get "+vendor])
		for _, k := range []struct {
			kind string
			rate float64
		}{{"server-error", f.ServerError}, {"throttle", f.Throttle}, {"timeout", f.Timeout}} {
			if k.rate == 0 && counts[k.kind+" "+vendor] == 0 {
				continue
			}
			e := k.rate * gets
			out = append(out, FaultCheck{Fault: "vendor-" + k.kind, API: vendor + ".GET", Expected: e, Min: minimumFor(e), Got: counts[k.kind+" "+vendor]})
		}
	}
	return out
}

// minimumFor is the injections a check asserts when expected are due: none below 10 expected
// (a Poisson count of mean 10 is 0 with probability 5e-5), one from 10, a third of the mean
// from 30 (below it with probability under 1e-5).
func minimumFor(expected float64) int {
	switch {
	case expected >= 30:
		return int(expected / 3)
	case expected >= 10:
		return 1
	}
	return 0
}

// faultChecks lists, for every kind/phase and API the rules could fault, the injections counted
// beside their asserted minimum. A request is drawn against the rules in order and the first hit
// wins, so a rule's effective rate on an API is its rate times the misses of the rules before it.
func faultChecks(rules []awsproxy.Rule, requests, injected map[string]int, crashRate float64, invocations, crashes int) []FaultCheck {
	expected := map[string]float64{}
	for api, n := range requests {
		miss := 1.0
		for _, r := range rules {
			if !r.Matches(api) || r.Rate == 0 {
				continue
			}
			expected[awsproxy.FaultKey(r.Kind, r.Phase, api)] += float64(n) * miss * r.Rate
			miss *= 1 - r.Rate
		}
	}
	for key := range injected {
		if _, ok := expected[key]; !ok {
			expected[key] = 0 // injected where no rule expects any: shown (a bug of the proxy)
		}
	}
	var out []FaultCheck
	for _, key := range slices.Sorted(maps.Keys(expected)) {
		fault, api, _ := strings.Cut(key, " ")
		out = append(out, FaultCheck{Fault: fault, API: api, Expected: expected[key], Min: minimumFor(expected[key]), Got: injected[key]})
	}
	if crashRate > 0 {
		e := crashRate * float64(invocations)
		out = append(out, FaultCheck{Fault: "crash/after-commit", API: "lambda.worker", Expected: e, Min: minimumFor(e), Got: crashes})
	}
	return out
}

// Run runs the suite.
func Run(ctx context.Context, o Options) (*Verdict, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	rules, err := faultRules(o)
	if err != nil {
		return nil, err
	}
	endpoint, stopMoto, err := ensureEndpoint(ctx, o.Endpoint, o.IndexLag)
	if err != nil {
		return nil, err
	}
	defer stopMoto()
	h := &harness{o: o, endpoint: endpoint}
	if err := h.startFaultProxy(); err != nil {
		return nil, err
	}
	defer h.proxy.Close()
	h.crash = NewCrasher(o.CrashRate, o.Seed)
	if err := h.startStack(ctx); err != nil {
		return nil, err
	}
	defer h.dev.Close()
	if err := h.prepare(ctx); err != nil {
		return nil, err
	}
	plan, err := h.planLoad(ctx)
	if err != nil {
		return nil, err
	}
	h.poison = choosePoison(plan, o.Poison, o.Seed)
	if err := h.enableFaults(rules); err != nil {
		return nil, err
	}
	if _, err := h.injectPoison(ctx, h.poison); err != nil {
		return nil, err
	}
	stats, sendTime, err := h.send(ctx, plan)
	if err != nil {
		return nil, err
	}
	for _, p := range h.poison {
		stats.Enqueued[p.d.Event.Key] = true
	}
	drainStart := time.Now()
	drained := waitDrained(ctx, h.queue, h.queueURL, o.DrainTimeout, o.Log, o.ProgressEvery)
	h.redrive = h.fixAndRedrive(ctx, h.poison)
	drainTime := time.Since(drainStart)
	h.disableFaults(drained, drainTime)
	v, err := h.judgeAfterConsistencyJob(ctx, plan, stats)
	if err != nil {
		return nil, err
	}
	v.Drained = drained
	v.Send, v.Drain, v.Wall = sendTime, drainTime, time.Since(start)
	return v, nil
}

// faultRules is the run's fault rules: o.Faults, plus SQSRefusal when asked for.
func faultRules(o Options) ([]awsproxy.Rule, error) {
	rules, err := awsproxy.ParseRules(o.Faults)
	if err != nil {
		return nil, err
	}
	if o.SQSRefusal {
		rules = append(rules, SQSRefusal)
	}
	return rules, nil
}

// ensureEndpoint returns the moto endpoint to use: the given one, or a patched moto_server with
// the index lag started on a free port, which stop stops (stop does nothing otherwise).
func ensureEndpoint(ctx context.Context, endpoint string, lag time.Duration) (_ string, stop func(), _ error) {
	if endpoint != "" {
		return endpoint, func() {}, nil
	}
	endpoint, err := moto.FreeEndpoint()
	if err != nil {
		return "", nil, err
	}
	server, err := moto.StartPatchedWithLag(ctx, endpoint, lag)
	if err != nil {
		return "", nil, err
	}
	return endpoint, server.Stop, nil
}

// harness is one run's moving parts: the fault proxy in front of moto, the crash injector, the
// local stack and what the load generator needs of it.
type harness struct {
	o         Options
	endpoint  string
	stackName string
	observer  *observer
	history   *historian
	proxy     *awsproxy.Proxy
	proxyURL  string
	crash     *Crasher
	dev       *localcloud.Dev
	base      string // the HTTP API's base URL
	queueURL  string // the ingest queue
	queue     *sqs.Client
	secrets   map[string]connector.Secret
	rules     []awsproxy.Rule
	counted   counted
	// keySchemas are the stack's tables' key attributes (for the proxy's contention).
	keySchemas map[string][]string
	// poison are the run's poison events, redrive what fixing them did; maxReceives is the ingest
	// queue's maxReceiveCount.
	poison      []*poisoned
	redrive     redriveResult
	maxReceives int // what the proxy and the crasher counted while faults were on
}

// counted is what the fault proxy and the crash injector counted while faults were on.
type counted struct {
	requests, faults, faultsByAPI, natural map[string]int
	vendor                                 map[string]int // localcloud.VendorFakes.FaultCounts
	invocations, crashes                   int
}

// vendorFaults is the run's vendor fault rates (see Options.VendorFaults).
func vendorFaults(o Options) localcloud.VendorFaults {
	r := o.VendorFaults
	return localcloud.VendorFaults{ServerError: r * 0.4, Throttle: r * 0.4, Timeout: r * 0.2, Hold: o.Hold, Seed: o.Seed}
}

// snapshot reads the counts of the proxy and the crasher.
func snapshot(p *awsproxy.Proxy, c *Crasher) counted {
	invocations, crashes := c.Counts()
	return counted{requests: p.Counts(), faults: p.Faults(), faultsByAPI: p.FaultsByAPI(), natural: p.NaturalConflicts(),
		invocations: invocations, crashes: crashes}
}

// startFaultProxy starts the fault proxy in front of moto, with an observer counting committed
// ledger writes. No fault is injected until enableFaults.
func (h *harness) startFaultProxy() error {
	h.observer, h.history = newObserver(), &historian{}
	observe := func(e awsproxy.Exchange) {
		h.observer.observe(e)
		h.history.observe(e)
	}
	proxy, err := awsproxy.New(awsproxy.Config{Target: h.endpoint, Seed: h.o.Seed, Hold: h.o.Hold, Observe: observe})
	if err != nil {
		return err
	}
	if h.proxyURL, err = proxy.Start("127.0.0.1:0"); err != nil {
		return err
	}
	h.proxy = proxy
	return nil
}

// startStack starts the local stack with the functions' AWS traffic going through the fault
// proxy and the worker wrapped by the crash injector.
func (h *harness) startStack(ctx context.Context) error {
	o := h.o
	h.stackName = fmt.Sprintf("rel%d", time.Now().UnixNano()%1e9)
	d, err := localcloud.Start(ctx, localcloud.Config{
		TemplatePath: filepath.Join(o.Root, "template.yaml"), Endpoint: h.endpoint, FunctionEndpoint: h.proxyURL,
		HTTPAddr: "127.0.0.1:0", DevSecretsPath: filepath.Join(o.Root, "config", "dev-secrets.json"),
		FixturesDir: filepath.Join(o.Root, "events", "vendor"), StackName: h.stackName, Factory: Factory(h.crash, o.SecretTTL),
		Out: o.FunctionLog, NoSchedules: true, Pollers: o.Pollers,
		QueueAttributes: map[string]map[string]string{"IngestQueue": {"VisibilityTimeout": strconv.Itoa(int(o.Visibility / time.Second))}},
		Alarms:          localcloud.AlarmOptions{Disabled: true}, // not under test; spares the CPU
	})
	if err != nil {
		return fmt.Errorf("start local stack: %w", err)
	}
	h.dev = d
	h.observer.table = d.Stack.Physical["LedgerTable"].Ref
	h.history.table = d.Stack.Physical["CrmTable"].Ref
	h.base = "http://" + d.Addr
	h.queueURL = d.Stack.Physical["IngestQueue"].Ref
	h.queue = sqs.NewFromConfig(d.AWS)
	return h.readKeySchemas(ctx)
}

// readKeySchemas reads every table's key attributes (straight from moto), hash key first.
func (h *harness) readKeySchemas(ctx context.Context) error {
	db := dynamodb.NewFromConfig(h.dev.AWS)
	tables, err := db.ListTables(ctx, &dynamodb.ListTablesInput{})
	if err != nil {
		return fmt.Errorf("list tables: %w", err)
	}
	h.keySchemas = map[string][]string{}
	for _, name := range tables.TableNames {
		out, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
		if err != nil {
			return fmt.Errorf("describe %s: %w", name, err)
		}
		var keys []string
		for _, k := range out.Table.KeySchema {
			if k.KeyType == ddbtypes.KeyTypeHash {
				keys = append([]string{aws.ToString(k.AttributeName)}, keys...)
			} else {
				keys = append(keys, aws.ToString(k.AttributeName))
			}
		}
		h.keySchemas[name] = keys
	}
	return nil
}

// prepare reads the ingest queue's redrive policy and the webhooks' secrets. (The run's
// visibility timeout is set at provisioning: an event source mapping's long poll takes the
// timeout the queue has when it starts, so one set later would leave the first polls with the
// template's.)
func (h *harness) prepare(ctx context.Context) error {
	attrs, err := h.queue.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(h.queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameRedrivePolicy}})
	if err != nil {
		return fmt.Errorf("read the redrive policy: %w", err)
	}
	var policy struct {
		MaxReceiveCount json.Number `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(attrs.Attributes["RedrivePolicy"]), &policy); err != nil {
		return fmt.Errorf("ingest queue redrive policy %q: %w", attrs.Attributes["RedrivePolicy"], err)
	}
	n, _ := policy.MaxReceiveCount.Int64()
	h.maxReceives = int(n)
	secrets, err := samples.DevSecrets(filepath.Join(h.o.Root, "config", "dev-secrets.json"))
	if err != nil {
		return err
	}
	h.secrets = secrets
	fmt.Fprintf(h.o.Log, "local stack %s up: HTTP API %s, moto %s, fault proxy %s\n", h.stackName, h.base, h.endpoint, h.proxyURL)
	return nil
}

// planLoad plans the load and installs its vendor fixtures in the vendor fakes.
func (h *harness) planLoad(ctx context.Context) (*loadgen.Plan, error) {
	o := h.o
	plan := loadgen.NewPlan(loadgen.Options{Events: o.Events, People: o.People, DupRate: o.DupRate, LateShare: o.LateShare,
		ReorderRate: o.ReorderRate, Seed: o.Seed, Now: time.Now()})
	if err := putFixtures(ctx, h.base, plan.Fixtures); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "plan: %d unique events across %d people (%v), %d duplicates (%d after the dedup window), %d out of order, %d vendor fixtures\n",
		len(plan.Unique), o.People, plan.BySource, plan.Duplicates, plan.Late, plan.OutOfOrder, len(plan.Fixtures))
	return plan, nil
}

// enableFaults turns the faults on: AWS faults through the proxy (its counts reset), crashes in
// the worker.
func (h *harness) enableFaults(rules []awsproxy.Rule) error {
	h.proxy.Reset()
	if err := h.proxy.SetRules(rules); err != nil {
		return err
	}
	h.rules = rules
	if !h.o.NoContention {
		h.proxy.SetContention(h.keySchemas)
	}
	h.dev.Fakes.SetFaults(vendorFaults(h.o))
	h.crash.Enable(true)
	fmt.Fprintf(h.o.Log, "faults: %s; worker crash rate %.3g\n", awsproxy.String(rules), h.o.CrashRate)
	return nil
}

// send sends the plan's deliveries as the vendors would, logging progress, and returns the
// sender's statistics and how long sending took.
func (h *harness) send(ctx context.Context, plan *loadgen.Plan) (*loadgen.Stats, time.Duration, error) {
	o := h.o
	sendStart := time.Now()
	var lastLog atomic.Int64
	sender := &loadgen.Sender{BaseURL: h.base, Secrets: h.secrets, Concurrency: o.Concurrency, Seed: o.Seed,
		Late: lateSender(h.queue, h.queueURL, h.base, h.secrets, o.Seed),
		Progress: func(done, total int) {
			if now := time.Now().UnixNano(); now-lastLog.Load() >= int64(o.ProgressEvery) {
				lastLog.Store(now)
				fmt.Fprintf(o.Log, "  sent %d/%d (%s)\n", done, total, time.Since(sendStart).Round(time.Second))
			}
		}}
	stats, err := sender.Run(ctx, plan)
	if err != nil {
		return nil, 0, err
	}
	sendTime := time.Since(sendStart)
	fmt.Fprintf(o.Log, "sent %d deliveries in %s: %d HTTP requests %v\n", stats.Sends, sendTime.Round(time.Second), stats.Requests, stats.Statuses)
	return stats, sendTime, nil
}

// disableFaults turns the faults off, keeps what was counted while they were on, and logs the
// endpoint's latency by API.
func (h *harness) disableFaults(drained bool, drainTime time.Duration) {
	o := h.o
	h.crash.Enable(false)
	_ = h.proxy.SetRules(nil)
	h.counted = snapshot(h.proxy, h.crash)
	h.counted.vendor = h.dev.Fakes.FaultCounts()
	h.dev.Fakes.SetFaults(localcloud.VendorFaults{})
	fmt.Fprintf(o.Log, "queue drained=%v in %s; reading the CRM\n", drained, drainTime.Round(time.Second))

	fmt.Fprintln(o.Log, "endpoint latency by API (as the proxy saw it):")
	for _, l := range h.observer.latencies() {
		fmt.Fprintln(o.Log, "  "+l)
	}
}

// judgeAfterConsistencyJob compares what the pipeline itself converged to with the oracle, runs
// the consistency job as scheduled in production (it re-associates activities left unassociated
// by a race between an activity and the event creating its contact), then judges the state it
// leaves; the divergences before the job are findings of the verdict. The dead-letter queue is
// read once, at the end (a read hides its messages for the visibility timeout).
func (h *harness) judgeAfterConsistencyJob(ctx context.Context, plan *loadgen.Plan, stats *loadgen.Stats) (*Verdict, error) {
	before, err := readState(ctx, h.dev)
	if err != nil {
		return nil, err
	}
	beforeReport := compare(plan, stats, before)

	reassociated, consistencyErr := runConsistency(ctx, h.dev)
	if consistencyErr == nil {
		waitDrained(ctx, h.queue, h.queueURL, 2*time.Minute, h.o.Log, h.o.ProgressEvery)
	}
	after, err := readState(ctx, h.dev)
	if err != nil {
		return nil, err
	}
	if after.dlq, err = readDLQ(ctx, h.queue, h.dev.Stack.Physical["IngestDLQ"].Ref); err != nil {
		return nil, err
	}
	v := judge(h.o, h.rules, plan, stats, after, h.observer, h.counted)
	judgePoison(v, h.poison, h.redrive, stats, after, h.observer, time.Duration(h.maxReceives)*h.o.Visibility)
	ops := h.history.history()
	v.History = checkHistory(ops, after.profiles)
	for _, f := range v.History.Violations {
		v.Findings = append(v.Findings, "history: "+f)
	}
	v.HistoryPath = h.o.HistoryPath
	if v.HistoryPath == "" {
		v.HistoryPath = filepath.Join(os.TempDir(), "crmsync-history-"+h.stackName+".jsonl")
	}
	if err := writeHistory(v.HistoryPath, ops); err != nil {
		return nil, fmt.Errorf("write the history: %w", err)
	}
	v.DivergedBeforeReconcile = beforeReport.DivergedRecords + beforeReport.DivergedTimelines
	v.Reassociated = reassociated
	if consistencyErr != nil {
		v.Findings = append(v.Findings, "consistency job failed: "+consistencyErr.Error())
	}
	for _, diff := range beforeReport.Diffs {
		if len(v.Findings) < 80 {
			v.Findings = append(v.Findings, "before the consistency job: "+diff)
		}
	}
	return v, nil
}

// Factory builds every function as its Lambda main does (shared/wiring), wrapping the worker with the
// crash injector c (none when nil) and, when secretTTL is set, giving the webhooks that secret
// cache TTL.
func Factory(c *Crasher, secretTTL time.Duration) localcloud.Factory {
	return func(ctx context.Context, fn samtemplate.Function, env localcloud.FunctionEnv) (lambda.Handler, error) {
		getenv := env.Getenv
		if secretTTL > 0 {
			ttl := strconv.Itoa(max(1, int(secretTTL/time.Second)))
			getenv = func(k string) string {
				if k == "SECRET_TTL_SECONDS" {
					return ttl
				}
				return env.Getenv(k)
			}
		}
		h, err := fnbuild.Build(ctx, fn.LogicalID, wiring.Env{Getenv: getenv, AWS: env.AWS, Log: env.Log, Stdout: env.Stdout})
		if err != nil || c == nil {
			return h, err
		}
		if k, _ := fnbuild.KindOf(fn.LogicalID); k == fnbuild.KindWorker {
			return &crashHandler{h: h, c: c}, nil
		}
		return h, nil
	}
}

// Crasher decides which worker invocations crash after their handler ran.
type Crasher struct {
	rate        float64
	enabled     atomic.Bool
	mu          sync.Mutex
	rnd         *rand.Rand
	crashes     int
	invocations int // while enabled
}

// NewCrasher returns a crash injector that, once enabled, crashes rate of the worker's
// invocations, seeded with seed.
func NewCrasher(rate float64, seed uint64) *Crasher {
	return &Crasher{rate: rate, rnd: rand.New(rand.NewPCG(seed, 0xc7a54))}
}

// Enable turns crashing on or off.
func (c *Crasher) Enable(on bool) { c.enabled.Store(on) }

// Counts returns how many invocations ran while crashing was enabled, and how many crashed.
func (c *Crasher) Counts() (invocations, crashes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.invocations, c.crashes
}

// crash draws one invocation's fate: whether it crashes, and whether as a panic (every other
// crash) rather than an error.
func (c *Crasher) crash() (crash, asPanic bool) {
	if !c.enabled.Load() || c.rate == 0 {
		return false, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invocations++
	if c.rnd.Float64() >= c.rate {
		return false, false
	}
	c.crashes++
	return true, c.crashes%2 == 0
}

// crashHandler is the worker killed after its transactions but before its batch response: the
// handler runs to completion, then the invocation fails (an error, or a panic the runtime turns
// into one), so the event source mapping re-delivers the whole batch after the visibility
// timeout.
type crashHandler struct {
	h lambda.Handler
	c *Crasher
}

// Invoke implements lambda.Handler.
func (h *crashHandler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	out, err := h.h.Invoke(ctx, payload)
	if crash, asPanic := h.c.crash(); crash {
		if asPanic {
			panic("reliability: worker killed after its transactions, before its batch response")
		}
		return nil, errors.New("reliability: worker killed after its transactions, before its batch response")
	}
	return out, err
}

func putFixtures(ctx context.Context, base string, fx []loadgen.Fixture) error {
	client := &http.Client{Timeout: 10 * time.Second}
	for _, f := range fx {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/_vendor/"+f.Path, strings.NewReader(string(f.Body)))
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("put vendor fixture %s: %w", f.Path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("put vendor fixture %s: %s", f.Path, resp.Status)
		}
	}
	return nil
}

// lateSender re-sends a delivery's canonical events straight to the ingest queue with a
// deduplication id SQS has not seen: what a vendor's re-send after SQS's 5-minute deduplication
// window looks like to SQS. Moto keeps deduplication ids for 5 minutes of real time and the run
// cannot wait that long, so the re-send takes the one path SQS cannot deduplicate and only the
// ledger can catch it. The events are the connector's own parse of the signed delivery, exactly
// what the webhook would have enqueued.
func lateSender(client *sqs.Client, queueURL, base string, secrets map[string]connector.Secret, seed uint64) loadgen.LateFunc {
	var mu sync.Mutex
	rnd := rand.New(rand.NewPCG(seed, 0x1a7e))
	return func(ctx context.Context, d *loadgen.Delivery, n int) ([]string, error) {
		now := time.Now()
		mu.Lock()
		req, err := loadgen.Sign(d, base, secrets[d.Connector], now, rnd)
		mu.Unlock()
		if err != nil {
			return nil, err
		}
		return enqueueParsed(ctx, client, queueURL, d.Connector, req, secrets[d.Connector], now,
			func(ev *canonical.Event) string { return fmt.Sprintf("%s-late-%d", ev.DedupID()[:48], n) },
			func(ev *canonical.Event) string { return ev.GroupID() })
	}
}

// enqueueParsed parses a signed delivery with its connector, exactly as the webhook would, and
// sends its canonical events straight to the queue (received now) with the deduplication and
// group ids given; it returns their keys.
func enqueueParsed(ctx context.Context, client *sqs.Client, queueURL, name string, req *connector.Request, secret connector.Secret,
	now time.Time, dedup, group func(*canonical.Event) string) ([]string, error) {
	c, err := registry.New(name)
	if err != nil {
		return nil, err
	}
	parsed, err := c.Parse(req, secret)
	if err != nil {
		return nil, err
	}
	var keys []string
	var entries []sqstypes.SendMessageBatchRequestEntry
	for i := range parsed.Events {
		ev := parsed.Events[i]
		ev.ReceivedAt = now.UTC()
		b, err := ev.Marshal()
		if err != nil {
			return nil, err
		}
		entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(b)),
			MessageDeduplicationId: aws.String(dedup(&ev)), MessageGroupId: aws.String(group(&ev))})
		keys = append(keys, ev.Key)
	}
	out, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: entries})
	if err != nil {
		return nil, err
	}
	if len(out.Failed) > 0 {
		return nil, fmt.Errorf("the queue refused %d of %d events of %s", len(out.Failed), len(entries), name)
	}
	return keys, nil
}

// waitDrained waits until the ingest queue holds nothing visible, in flight or delayed for three
// checks in a row.
func waitDrained(ctx context.Context, client *sqs.Client, queueURL string, timeout time.Duration, log io.Writer, every time.Duration) bool {
	deadline := time.Now().Add(timeout)
	quiet := 0
	last := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(queueURL),
			AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
				sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible, sqstypes.QueueAttributeNameApproximateNumberOfMessagesDelayed}})
		if err == nil {
			n := 0
			for _, v := range out.Attributes {
				x, _ := strconv.Atoi(v)
				n += x
			}
			if n == 0 {
				quiet++
				if quiet >= 3 {
					return true
				}
			} else {
				quiet = 0
			}
			if time.Since(last) >= every {
				last = time.Now()
				fmt.Fprintf(log, "  queue: %s visible, %s in flight\n", out.Attributes["ApproximateNumberOfMessages"],
					out.Attributes["ApproximateNumberOfMessagesNotVisible"])
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return false
}

// runConsistency fires the consistency job's schedule now and returns how many activities it
// re-associated.
func runConsistency(ctx context.Context, d *localcloud.Dev) (int, error) {
	out, err := d.RunSchedule(ctx, "consistency")
	if err != nil {
		return 0, err
	}
	var rep struct {
		Counts map[string]int `json:"counts"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return 0, fmt.Errorf("consistency report: %w", err)
	}
	return rep.Counts["reassociated"], nil
}

// compare runs the oracle against a state, for the unique events that got in (a webhook accepted
// them, or the harness enqueued them late).
func compare(plan *loadgen.Plan, stats *loadgen.Stats, st *state) oracle.Report {
	var accepted []oracle.Event
	for _, d := range plan.Unique {
		if stats.GotIn(d.Event.Key) {
			accepted = append(accepted, d.Event)
		}
	}
	pol, err := oracle.ParsePolicy(config.PolicyYAML)
	if err != nil {
		return oracle.Report{DivergedRecords: 1, Diffs: []string{"oracle: " + err.Error()}}
	}
	return oracle.Compare(oracle.Expect(pol, accepted), st.actual)
}

// judge computes the verdict. Each delivery is judged by what the webhook answered and did, apart
// from the harness's own late re-sends: a late re-send gets an event in (so the oracle expects it),
// but it never excuses a webhook that refused, dropped or quarantined the event.
func judge(o Options, rules []awsproxy.Rule, plan *loadgen.Plan, stats *loadgen.Stats, st *state, obs *observer, c counted) *Verdict {
	v := &Verdict{Events: o.Events, People: o.People, Concurrency: o.Concurrency, Pollers: o.Pollers, Seed: o.Seed,
		FaultFlag: o.Faults, SQSRefusal: o.SQSRefusal, CrashRate: o.CrashRate, Visibility: o.Visibility, VendorFaults: o.VendorFaults,
		Sent: len(plan.Schedule), Unique: len(plan.Unique), Duplicates: plan.Duplicates, Late: plan.Late,
		OutOfOrder: plan.OutOfOrder, BySource: plan.BySource, Requests: stats.Requests, VendorRetries: stats.Retried,
		Statuses: stats.Statuses, Faults: c.faults, AWSRequests: c.requests, Outcomes: st.outcomes,
		DLQ: len(st.dlq), Quarantined: st.quarantined, FaultSpec: awsproxy.String(rules),
		Contention: !o.NoContention, NaturalConflicts: c.natural, IndexLag: o.IndexLag, LaggedReads: obs.laggedReads()}
	if v.IndexLag > 0 && awsproxy.Total(v.LaggedReads) == 0 {
		v.Findings = append(v.Findings, "index lag on, yet no Query saw a lagged index: the run shows nothing of DynamoDB's index lag")
	}
	if v.Contention && c.natural["dynamodb.TransactWriteItems"] == 0 {
		v.Findings = append(v.Findings, "contention on, yet no transaction met another: the run shows nothing of DynamoDB's conflicts")
	}
	if v.Faults == nil {
		v.Faults = map[string]int{}
	}
	if c.crashes > 0 {
		v.Faults["crash/after-commit"] = c.crashes
	}
	for status, n := range stats.Statuses {
		if len(status) == 3 && status[0] == '5' {
			v.Webhook5xx += n
		}
	}
	finding := func(format string, args ...any) {
		if len(v.Findings) < 60 {
			v.Findings = append(v.Findings, fmt.Sprintf(format, args...))
		}
	}
	v.FaultChecks = append(faultChecks(rules, c.requests, c.faultsByAPI, o.CrashRate, c.invocations, c.crashes),
		vendorFaultChecks(vendorFaults(o), c.vendor)...)
	for _, fc := range v.FaultChecks {
		if fc.Got < fc.Min {
			v.FaultsShort++
			finding("fault %s on %s injected %d times, asserted minimum %d (%.1f expected)", fc.Fault, fc.API, fc.Got, fc.Min, fc.Expected)
		}
	}

	// Which unique events got in, and how each webhook treated its delivery.
	var gotIn []oracle.Event
	valid := map[string]bool{}
	for _, d := range plan.Unique {
		k := d.Event.Key
		valid[k] = true
		if stats.GotIn(k) {
			gotIn = append(gotIn, d.Event)
		}
		switch {
		case stats.Accepted[k]:
			v.Accepted++
			if obs.enqueuedCount(k) == 0 {
				v.Dropped++
				finding("dropped: the webhook accepted %s but never enqueued it", k)
			}
		case stats.Enqueued[k]:
			v.EnqueuedLate++
		}
		if stats.Quarantined[k] {
			v.QuarantinedAuthentic++
			finding("authentic event %s quarantined", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(stats.Refused)) {
		if !stats.Accepted[k] {
			v.Refused++
			finding("authentic delivery %s refused: %s", k, stats.Refused[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(stats.GaveUp)) {
		if !stats.Accepted[k] {
			v.GaveUp++
			finding("delivery %s never accepted after the vendor's retries", k)
		}
	}

	// Lost: got in, yet no ledger outcome and no dead letter.
	for _, e := range gotIn {
		if _, ok := st.ledger[e.Key]; ok || st.dlq[e.Key] {
			continue
		}
		v.Lost++
		finding("lost: %s (got in, no ledger item, not in the DLQ)", e.Key)
	}
	for _, k := range slices.Sorted(maps.Keys(st.ledger)) {
		if st.ledger[k] == "REJECTED" && valid[k] {
			v.RejectedValid++
			finding("rejected: %s: %s", k, st.reasons[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(st.dlq)) {
		v.DeadLettered++
		finding("dead-lettered: %s", k)
	}

	// Applied twice, and the observer's self-check: every ledger item's write seen committed, and
	// no commit seen of a key the ledger does not hold.
	commits := obs.commitCounts()
	for _, k := range slices.Sorted(maps.Keys(commits)) {
		if n := commits[k]; n > 1 {
			v.DuplicateLedgerWrites++
			finding("applied twice: %s (%d commits)", k, n)
		}
		if _, ok := st.ledger[k]; !ok && commits[k] > 0 {
			v.ObserverExtra++
			finding("observer: saw %s commit, but the ledger holds no item for it", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(st.ledger)) {
		if commits[k] == 0 {
			v.ObserverMissed++
			finding("observer: the ledger holds %s, but its write was never seen to commit", k)
		}
	}

	rep := compare(plan, stats, st)
	v.ComparedPeople, v.WithContact = rep.People, rep.Contacts
	v.DivergedRecords, v.DivergedTimelines = rep.DivergedRecords, rep.DivergedTimelines
	v.DuplicateActivities, v.DuplicateAudits = rep.DuplicateActivities, rep.DuplicateAudits
	v.AppliedTwice = v.DuplicateLedgerWrites + v.DuplicateActivities + v.DuplicateAudits
	for _, d := range rep.Diffs {
		finding("%s", d)
	}
	return v
}
