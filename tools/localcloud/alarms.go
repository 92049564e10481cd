package localcloud

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/tools/alarms"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// AlarmOptions tune local alarm evaluation.
type AlarmOptions struct {
	// Scale multiplies every alarm period locally (default 1/6: a one-minute CloudWatch period
	// is evaluated on 10-second windows, five minutes on 50 seconds, a day on 4 hours).
	Scale float64
	// Interval is how often every alarm is evaluated (default 2 s).
	Interval time.Duration
	// Sample is how often the queues' AWS/SQS metrics are sampled (default 1 s).
	Sample time.Duration
	// Disabled turns local alarm evaluation off.
	Disabled bool
}

// DefaultAlarmScale is the local period scale when none is configured.
const DefaultAlarmScale = 1.0 / 6

// AlarmMonitor rehearses template.yaml's CloudWatch alarms on the local stack: it collects the
// metrics CloudWatch would have — every function's EMF output (the functions' stdout is teed
// through emf.Parse), AWS/Lambda Invocations, Errors, Throttles and Duration from each
// invocation's result, and AWS/SQS ApproximateNumberOfMessagesVisible/NotVisible sampled with
// GetQueueAttributes plus ApproximateAgeOfOldestMessage of the queues the event source mappings
// poll (each message's SentTimestamp, from its first receive until it is deleted or leaves the
// queue) — into an alarms.Store, evaluates every alarm every Interval with periods scaled by
// Scale, logs each transition into or out of ALARM as a JSON line naming the runbook, publishes
// it to the alarm's SNS topic in the local endpoint, and serves the current states at GET
// /_local/alarms (what `crmsync status` reads locally). Datapoints are stamped with their
// arrival time, so a function's own clock does not matter. The local stack has no history
// before it started: periods before that never breach (alarms.Evaluator.Since), so heartbeat
// alarms go to ALARM only after their evaluation periods pass without a run.
type AlarmMonitor struct {
	// Eval holds the alarms and their states.
	Eval *alarms.Evaluator
	// Store holds the datapoints the alarms read.
	Store *alarms.Store

	opts    AlarmOptions
	log     *slog.Logger
	sqs     queueAttrAPI
	sns     *sns.Client
	queues  []localQueue
	fnNames map[string]string // logical id -> physical function name

	mu          sync.Mutex
	ages        map[string]*ageTracker // queue URL -> receive tracking
	transitions []alarms.Transition
	evaluatedAt time.Time
}

type queueAttrAPI interface {
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

type localQueue struct {
	name, url  string
	visibility time.Duration
}

// maxTransitions is how many recent transitions GET /_local/alarms returns.
const maxTransitions = 100

// NewAlarmMonitor reads the stack's alarms from its template, resolving dimension values and
// actions against the provisioned resources.
func NewAlarmMonitor(ctx context.Context, st *Stack, cfg aws.Config, log *slog.Logger, opts AlarmOptions) (*AlarmMonitor, error) {
	if opts.Scale <= 0 {
		opts.Scale = DefaultAlarmScale
	}
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.Sample <= 0 {
		opts.Sample = time.Second
	}
	as, err := alarms.FromTemplate(st.Template, func(s string) (string, error) { return samtemplate.Resolve(s, st.Physical) })
	if err != nil {
		return nil, err
	}
	store := &alarms.Store{}
	eval := &alarms.Evaluator{Alarms: as, Store: store, Scale: opts.Scale, Since: time.Now()}
	store.KeepFor(eval, time.Minute) // only what the alarms read, only as long as they read it
	client := sqs.NewFromConfig(cfg)
	m := &AlarmMonitor{Eval: eval, Store: store, opts: opts, log: log,
		sqs: client, sns: sns.NewFromConfig(cfg), fnNames: map[string]string{}, ages: map[string]*ageTracker{}}
	for _, id := range st.Template.OfType(samtemplate.TypeQueue) {
		p := st.Physical[id]
		q := localQueue{name: p.Attrs["QueueName"], url: p.Attrs["QueueUrl"], visibility: 30 * time.Second}
		if out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q.url),
			AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameVisibilityTimeout}}); err == nil {
			if n, err := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameVisibilityTimeout)]); err == nil {
				q.visibility = time.Duration(n) * time.Second
			}
		}
		m.queues = append(m.queues, q)
	}
	for id := range st.Functions {
		m.fnNames[id] = st.Physical[id].Ref
	}
	return m, nil
}

// Run samples and evaluates until ctx ends.
func (m *AlarmMonitor) Run(ctx context.Context) {
	if m == nil {
		return
	}
	sample := time.NewTicker(m.opts.Sample)
	defer sample.Stop()
	eval := time.NewTicker(m.opts.Interval)
	defer eval.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sample.C:
			m.sampleQueues(ctx)
		case <-eval.C:
			m.EvaluateNow(ctx)
		}
	}
}

// EvaluateNow evaluates every alarm once and reports the transitions.
func (m *AlarmMonitor) EvaluateNow(ctx context.Context) []alarms.Transition {
	now := time.Now()
	ts := m.Eval.Evaluate(now)
	m.mu.Lock()
	m.evaluatedAt = now
	m.transitions = append(m.transitions, ts...)
	if len(m.transitions) > maxTransitions {
		m.transitions = m.transitions[len(m.transitions)-maxTransitions:]
	}
	m.mu.Unlock()
	for _, t := range ts {
		attrs := []any{"alarm", t.Alarm, "from", string(t.From), "to", string(t.To), "transition", string(t.From) + "→" + string(t.To),
			"runbook", t.Runbook, "reason", t.Reason, "logical_id", t.LogicalID}
		if t.To != alarms.Alarming && t.From != alarms.Alarming {
			m.log.Debug("alarm state", attrs...) // INSUFFICIENT_DATA ↔ OK: not worth a line
			continue
		}
		lvl := slog.LevelWarn
		if t.To == alarms.OK {
			lvl = slog.LevelInfo
		}
		m.log.Log(ctx, lvl, "alarm "+string(t.To)+": "+t.Alarm+" (runbook "+t.Runbook+")", attrs...)
		m.notify(ctx, t)
	}
	return ts
}

// notify publishes a transition to the alarm's SNS topics as CloudWatch would (best effort).
func (m *AlarmMonitor) notify(ctx context.Context, t alarms.Transition) {
	if len(t.Actions) == 0 {
		return
	}
	msg, _ := json.Marshal(map[string]any{"AlarmName": t.Alarm, "NewStateValue": t.To, "OldStateValue": t.From,
		"NewStateReason": t.Reason, "AlarmDescription": "Runbook: " + t.Runbook, "StateChangeTime": t.At.UTC().Format(time.RFC3339)})
	for _, arn := range t.Actions {
		if _, err := m.sns.Publish(ctx, &sns.PublishInput{TopicArn: aws.String(arn), Subject: aws.String(string(t.To) + ": " + t.Alarm),
			Message: aws.String(string(msg))}); err != nil {
			m.log.Debug("alarm notification not published", "alarm", t.Alarm, "error", err.Error())
		}
	}
}

// AlarmsView is the answer of GET /_local/alarms.
type AlarmsView struct {
	// Alarms are every alarm's current status, by name.
	Alarms []alarms.Status `json:"alarms"`
	// Transitions are the most recent state changes, oldest first.
	Transitions []alarms.Transition `json:"transitions"`
	// Scale is the local period scale (e.g. 0.1667: a minute is evaluated on 10 s).
	Scale float64 `json:"scale"`
	// EvaluatedAt is when the alarms were last evaluated.
	EvaluatedAt time.Time `json:"evaluated_at"`
}

// View returns the current alarm states and recent transitions.
func (m *AlarmMonitor) View() AlarmsView {
	m.mu.Lock()
	ts := append([]alarms.Transition(nil), m.transitions...)
	at := m.evaluatedAt
	m.mu.Unlock()
	if ts == nil {
		ts = []alarms.Transition{}
	}
	return AlarmsView{Alarms: m.Eval.States(), Transitions: ts, Scale: m.opts.Scale, EvaluatedAt: at}
}

// ServeHTTP answers GET /_local/alarms with the AlarmsView as JSON (404 when local alarm
// evaluation is disabled).
func (m *AlarmMonitor) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if m == nil {
		writeJSONMessage(w, http.StatusNotFound, "local alarm evaluation is disabled")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m.View())
}

// Writer returns w teed through the EMF parser: every metric line a function writes becomes
// datapoints of the store.
func (m *AlarmMonitor) Writer(w io.Writer) io.Writer {
	if m == nil {
		return w
	}
	return &emfTee{w: w, m: m}
}

type emfTee struct {
	w   io.Writer
	m   *AlarmMonitor
	mu  sync.Mutex
	buf []byte
}

func (t *emfTee) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	t.mu.Lock()
	t.buf = append(t.buf, p...)
	var lines [][]byte
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, append([]byte(nil), t.buf[:i]...))
		t.buf = t.buf[i+1:]
	}
	if len(t.buf) > 1<<20 { // not a line-oriented writer: give up on the partial line
		t.buf = nil
	}
	t.mu.Unlock()
	now := time.Now()
	for _, l := range lines {
		for _, d := range emf.Parse(l) {
			t.m.Store.Add(alarms.Datapoint{Namespace: d.Namespace, Name: d.Name, Dimensions: d.Dimensions, Value: d.Value, Time: now})
		}
	}
	return n, err
}

// Invoker wraps inv so every invocation records the AWS/Lambda metrics of its function.
func (m *AlarmMonitor) Invoker(inv Invoker) Invoker {
	if m == nil {
		return inv
	}
	return &meteredInvoker{inner: inv, m: m}
}

type meteredInvoker struct {
	inner Invoker
	m     *AlarmMonitor
}

func (i *meteredInvoker) Invoke(ctx context.Context, fn string, payload []byte) ([]byte, error) {
	start := time.Now()
	out, err := i.inner.Invoke(ctx, fn, payload)
	name := i.m.fnNames[fn]
	if name == "" {
		name = fn
	}
	now := time.Now()
	dims := map[string]string{"FunctionName": name}
	errs := 0.0
	if err != nil {
		errs = 1
	}
	i.m.Store.Add(
		alarms.Datapoint{Namespace: "AWS/Lambda", Name: "Invocations", Dimensions: dims, Value: 1, Time: now},
		alarms.Datapoint{Namespace: "AWS/Lambda", Name: "Errors", Dimensions: dims, Value: errs, Time: now},
		// The local runtime has no concurrency limit: nothing is ever throttled.
		alarms.Datapoint{Namespace: "AWS/Lambda", Name: "Throttles", Dimensions: dims, Value: 0, Time: now},
		alarms.Datapoint{Namespace: "AWS/Lambda", Name: "Duration", Dimensions: dims, Value: float64(now.Sub(start).Milliseconds()), Time: now},
	)
	return out, err
}

// ObserveQueue wraps an event source mapping's SQS client so the messages it receives and
// deletes on queueURL give that queue's ApproximateAgeOfOldestMessage.
func (m *AlarmMonitor) ObserveQueue(api SQSAPI, queueURL string) SQSAPI {
	if m == nil {
		return api
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.ages[queueURL]
	if !ok {
		vis := 30 * time.Second
		for _, q := range m.queues {
			if q.url == queueURL {
				vis = q.visibility
			}
		}
		a = &ageTracker{visibility: vis, msgs: map[string]*trackedMsg{}, handles: map[string]string{}}
		m.ages[queueURL] = a
	}
	return &observedSQS{SQSAPI: api, ages: a}
}

type observedSQS struct {
	SQSAPI
	ages *ageTracker
}

func (o *observedSQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	out, err := o.SQSAPI.ReceiveMessage(ctx, in, optFns...)
	if err == nil {
		o.ages.received(out.Messages, time.Now())
	}
	return out, err
}

func (o *observedSQS) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	out, err := o.SQSAPI.DeleteMessageBatch(ctx, in, optFns...)
	if err == nil {
		failed := map[string]bool{}
		for _, f := range out.Failed {
			failed[aws.ToString(f.Id)] = true
		}
		var handles []string
		for _, e := range in.Entries {
			if !failed[aws.ToString(e.Id)] {
				handles = append(handles, aws.ToString(e.ReceiptHandle))
			}
		}
		o.ages.deleted(handles)
	}
	return out, err
}

// ageTracker remembers the messages of one queue seen by its consumer: when each was sent and
// when it was last received. A message neither deleted nor received again within the
// visibility timeout (plus slack) has left the queue (SQS moved it to the DLQ).
type ageTracker struct {
	visibility time.Duration
	mu         sync.Mutex
	msgs       map[string]*trackedMsg // message id
	handles    map[string]string      // receipt handle -> message id
}

type trackedMsg struct {
	sent, lastSeen time.Time
}

func (a *ageTracker) received(ms []sqstypes.Message, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, msg := range ms {
		id := aws.ToString(msg.MessageId)
		sent := now
		if v, err := strconv.ParseInt(msg.Attributes[string(sqstypes.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
			sent = time.UnixMilli(v)
		}
		t, ok := a.msgs[id]
		if !ok {
			t = &trackedMsg{sent: sent}
			a.msgs[id] = t
		}
		t.lastSeen = now
		a.handles[aws.ToString(msg.ReceiptHandle)] = id
	}
}

func (a *ageTracker) deleted(handles []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range handles {
		if id, ok := a.handles[h]; ok {
			delete(a.msgs, id)
			delete(a.handles, h)
		}
	}
}

// oldest returns the age of the oldest message still in the queue (0 when none); depth is the
// queue's current message count (0 clears what is tracked).
func (a *ageTracker) oldest(now time.Time, depth int) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if depth == 0 {
		a.msgs, a.handles = map[string]*trackedMsg{}, map[string]string{}
		return 0
	}
	var oldest time.Duration
	for id, t := range a.msgs {
		if now.Sub(t.lastSeen) > a.visibility+30*time.Second {
			delete(a.msgs, id)
			continue
		}
		oldest = max(oldest, now.Sub(t.sent))
	}
	for h, id := range a.handles {
		if _, ok := a.msgs[id]; !ok {
			delete(a.handles, h)
		}
	}
	return oldest
}

func (m *AlarmMonitor) sampleQueues(ctx context.Context) {
	now := time.Now()
	for _, q := range m.queues {
		out, err := m.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q.url), AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
		if err != nil {
			continue // the endpoint is going away, or the queue was deleted (a rehearsal): no sample
		}
		visible, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
		inFlight, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
		dims := map[string]string{"QueueName": q.name}
		m.Store.Add(
			alarms.Datapoint{Namespace: "AWS/SQS", Name: "ApproximateNumberOfMessagesVisible", Dimensions: dims, Value: float64(visible), Time: now},
			alarms.Datapoint{Namespace: "AWS/SQS", Name: "ApproximateNumberOfMessagesNotVisible", Dimensions: dims, Value: float64(inFlight), Time: now},
		)
		m.mu.Lock()
		a := m.ages[q.url]
		m.mu.Unlock()
		if a != nil {
			age := a.oldest(now, visible+inFlight)
			m.Store.Add(alarms.Datapoint{Namespace: "AWS/SQS", Name: "ApproximateAgeOfOldestMessage", Dimensions: dims,
				Value: float64(int64(age / time.Second)), Time: now})
		}
	}
}
