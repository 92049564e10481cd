package main

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/tools/costmodel"
	"github.com/crmsync/crmsync/tools/localcloud"
)

// Scenario classes.
const (
	classApplied   = "applied"
	classNoop      = "no-op"
	classDuplicate = "duplicate"
)

// costScenario is the exact AWS usage of one event, end to end: webhook, queue and worker.
type costScenario struct {
	Name    string
	Class   string
	Outcome string // the ledger's outcome and reason after it
	Reason  string
	Usage   costmodel.Usage
	// Webhook is the part of Usage spent before the message reached the queue.
	Webhook costmodel.Usage
	// Writes are the item writes, as priced.
	Writes []costmodel.WriteTrace
	Lambda []costmodel.LambdaUse
	Logs   int64
	// Note says what is special about it.
	Note string
}

// costRun measures each scenario alone on a stack without a running event source mapping: the
// delivery is posted over HTTP, then one batch is polled and settled exactly as the mapping does.
type costRun struct {
	s   *benchStack
	t   *benchTraffic
	esm *localcloud.EventSourceMapping
	now time.Time
	// last is the delivery measured last.
	last delivery
}

// runCostScenarios measures each scenario's exact AWS usage alone, on a warm pipeline: a
// journey's events, a late status callback, CRM edits (one a no-op) and the two kinds of
// duplicate.
func runCostScenarios(ctx context.Context, s *benchStack, t *benchTraffic) ([]costScenario, error) {
	esm, err := s.workerMapping()
	if err != nil {
		return nil, err
	}
	run := &costRun{s: s, t: t, esm: esm, now: time.Now()}
	if err := run.warmUp(ctx); err != nil {
		return nil, err
	}
	subject := person(1)
	scenarios, completed, err := run.journeyScenarios(ctx, subject)
	if err != nil {
		return nil, err
	}
	late, err := run.lateCallbackScenario(ctx, subject)
	if err != nil {
		return nil, err
	}
	scenarios = append(scenarios, late)
	edits, err := run.crmEditScenarios(ctx, subject)
	if err != nil {
		return nil, err
	}
	scenarios = append(scenarios, edits...)
	duplicates, err := run.duplicateScenarios(ctx, completed)
	if err != nil {
		return nil, err
	}
	return append(scenarios, duplicates...), nil
}

// warmUp runs every function once (its secret cached, as in a warm Lambda container) with a
// person of its own, so the figures measured after it are those of a warm pipeline.
func (r *costRun) warmUp(ctx context.Context) error {
	for i, warmStep := range []step{stepTypeform, stepMetaLead, stepGenericLead, stepCalendly, stepCallRinging, stepGraphMail, stepMailDelivered} {
		if _, err := r.one(ctx, "warm-up", "", warmStep, person(9000+i), 0); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	return nil
}

// journeyScenarios measures the subject's journey step by step, then the first events of other
// connectors' leads; completed is the call-completed delivery (the duplicates re-send it).
func (r *costRun) journeyScenarios(ctx context.Context, subject person) (scenarios []costScenario, completed delivery, err error) {
	steps := []struct {
		name   string
		step   step
		person person
		note   string
	}{
		{"lead, new contact (typeform)", stepTypeform, subject, "creates the contact, its identity claims and account"},
		{"meeting scheduled (calendly)", stepCalendly, subject, ""},
		{"call ringing (twilio), new call", stepCallRinging, subject, ""},
		{"call in-progress (twilio)", stepCallInProgress, subject, ""},
		{"call-status update: completed (twilio)", stepCallCompleted, subject, "the design's reference event"},
		{"mail created (msgraph, hydrated)", stepGraphMail, subject, "hydration calls the vendor API, not AWS"},
		{"email delivered (mailgun)", stepMailDelivered, subject, "includes the replay-cache PutItem"},
		{"email opened (mailgun)", stepMailOpened, subject, ""},
		{"lead, new contact (meta-leads, hydrated)", stepMetaLead, person(6), ""},
		{"lead, new contact (generic)", stepGenericLead, person(8), ""},
	}
	for _, journeyStep := range steps {
		scenario, err := r.one(ctx, journeyStep.name, classApplied, journeyStep.step, journeyStep.person, 0)
		if err != nil {
			return nil, delivery{}, err
		}
		scenario.Note = journeyStep.note
		scenarios = append(scenarios, scenario)
		if journeyStep.step == stepCallCompleted {
			completed = r.last
		}
	}
	return scenarios, completed, nil
}

// lateCallbackScenario measures a status callback that arrives after the call completed (Twilio
// does not guarantee order): the status never regresses, but the callback joins the call's
// history.
func (r *costRun) lateCallbackScenario(ctx context.Context, subject person) (costScenario, error) {
	late, err := r.t.buildLate(subject, r.s.base, r.now)
	if err != nil {
		return costScenario{}, err
	}
	scenario, err := r.measure(ctx, "late status callback after completed (twilio)", classApplied, late)
	if err != nil {
		return costScenario{}, err
	}
	scenario.Note = "out of order: its proposals are refused and audited; the call's history gains it"
	return scenario, nil
}

// crmEditScenarios measures three CRM edits: one that changes a field; one that sends values the
// contact already has, later than what set them (CRM integrations send whole records), which is
// applied — the fields' provenance moves to the later edit, so that a late older edit cannot win
// afterwards; and a late re-send of an edit older than the field's current value, with that same
// value: the no-op.
func (r *costRun) crmEditScenarios(ctx context.Context, subject person) ([]costScenario, error) {
	at := r.now.Add(-time.Hour)
	edit, err := crmChange(subject, "bench-chg-1", map[string]string{"job_title": "CTO"}, at)
	if err != nil {
		return nil, err
	}
	changed, err := r.measure(ctx, "CRM edit (POST /crm/changes)", classApplied, edit)
	if err != nil {
		return nil, err
	}
	same, err := crmChange(subject, "bench-chg-2", map[string]string{"first_name": "Ada", "last_name": "Lovelace"}, at.Add(time.Minute))
	if err != nil {
		return nil, err
	}
	unchanged, err := r.measure(ctx, "CRM sends the contact's unchanged name, later", classApplied, same)
	if err != nil {
		return nil, err
	}
	unchanged.Note = "the values stay; their provenance moves to this later edit (the profile and an audit entry are written)"
	older, err := crmChange(subject, "bench-chg-0", map[string]string{"job_title": "CTO"}, at.Add(-time.Minute))
	if err != nil {
		return nil, err
	}
	noop, err := r.measure(ctx, "CRM re-sends an older edit of the current value", classNoop, older)
	if err != nil {
		return nil, err
	}
	noop.Note = "nothing changes: the ledger item is the only write"
	return []costScenario{changed, unchanged, noop}, nil
}

// duplicateScenarios measures the two kinds of duplicate of the completed delivery: the
// vendor's retry inside SQS's 5-minute deduplication window, and the same event after it (a late
// retry, or a redelivery), which the worker's ledger read catches.
func (r *costRun) duplicateScenarios(ctx context.Context, completed delivery) ([]costScenario, error) {
	retry, err := r.measure(ctx, "vendor retry within 5 min (twilio completed again)", classDuplicate, completed)
	if err != nil {
		return nil, err
	}
	retry.Note = "SQS FIFO deduplication drops it: the worker never sees it"
	redelivery, err := r.redeliver(ctx, "redelivery after the SQS window (twilio completed again)", completed)
	if err != nil {
		return nil, err
	}
	redelivery.Note = "the worker's strongly consistent ledger read catches it"
	return []costScenario{retry, redelivery}, nil
}

// buildLate is a Twilio "initiated" callback (sequence 0, before ringing) for the person's call,
// delivered last.
func (t *benchTraffic) buildLate(p person, base string, now time.Time) (delivery, error) {
	saved := t.bodies["twilio"]
	t.bodies["twilio"] = replacePairs(saved, "CallStatus=completed", "CallStatus=initiated", "SequenceNumber=3", "SequenceNumber=0",
		"16%3A05%3A12", "15%3A59%3A58")
	defer func() { t.bodies["twilio"] = saved }()
	d, err := t.build(stepCallRinging, p, 0, base, now)
	d.label = "twilio call initiated (late)"
	return d, err
}

func (r *costRun) one(ctx context.Context, name, class string, st step, p person, variant int) (costScenario, error) {
	d, err := r.t.build(st, p, variant, r.s.base, r.now)
	if err != nil {
		return costScenario{}, err
	}
	if err := installFixture(ctx, r.s.client, r.s.base, d); err != nil {
		return costScenario{}, err
	}
	return r.measure(ctx, name, class, d)
}

// measure posts one delivery, settles what it enqueued, and returns what that cost.
func (r *costRun) measure(ctx context.Context, name, class string, d delivery) (costScenario, error) {
	r.last = d
	before, fnBefore := r.s.counter.Snapshot(), r.s.fns.snapshot()
	r.s.counter.StartTrace()
	status, err := post(ctx, r.s.client, r.s.base, d)
	if err != nil {
		return costScenario{}, err
	}
	if status/100 != 2 {
		return costScenario{}, fmt.Errorf("%s: webhook answered %d", name, status)
	}
	webhook := r.s.counter.Snapshot().Sub(before)
	if err := r.settle(ctx, name); err != nil {
		return costScenario{}, err
	}
	sc, err := r.result(ctx, name, class, d, before, fnBefore)
	sc.Webhook = webhook
	return sc, err
}

// settle polls the queue as the event source mapping would, until it is empty.
func (r *costRun) settle(ctx context.Context, name string) error {
	for i := 0; i < 20; i++ {
		vis, inflight, err := r.s.queueDepth(ctx)
		if err != nil {
			return err
		}
		if vis == 0 && inflight == 0 {
			return nil
		}
		if vis == 0 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		res, err := r.esm.PollOnce(ctx)
		if err != nil {
			return err
		}
		if res.Failed > 0 {
			return fmt.Errorf("%s: the worker failed %d message(s)", name, res.Failed)
		}
	}
	return fmt.Errorf("%s: the queue did not drain", name)
}

// redeliver enqueues a delivery's events again with a fresh deduplication id (as SQS accepts a
// retry once its window is over) and settles them.
func (r *costRun) redeliver(ctx context.Context, name string, d delivery) (costScenario, error) {
	evs, err := r.t.canonicalEvents(d, r.now)
	if err != nil {
		return costScenario{}, err
	}
	before, fnBefore := r.s.counter.Snapshot(), r.s.fns.snapshot()
	r.s.counter.StartTrace()
	client := lateDedup{sqs.NewFromConfig(r.s.AWS)}
	if err := ingest.Enqueue(ctx, client, r.s.Stack.Physical["IngestQueue"].Ref, evs); err != nil {
		return costScenario{}, err
	}
	if err := r.settle(ctx, name); err != nil {
		return costScenario{}, err
	}
	return r.result(ctx, name, classDuplicate, d, before, fnBefore)
}

// lateDedup gives every message a deduplication id SQS has not seen, as after its 5-minute window.
type lateDedup struct{ *sqs.Client }

// SendMessageBatch sends the batch with every entry's deduplication id made one SQS has not seen.
func (l lateDedup) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, o ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	for i := range in.Entries {
		in.Entries[i].MessageDeduplicationId = aws.String(aws.ToString(in.Entries[i].MessageDeduplicationId)[:60] + "-late")
	}
	return l.Client.SendMessageBatch(ctx, in, o...)
}

func (r *costRun) result(ctx context.Context, name, class string, d delivery, before costmodel.Usage, fnBefore map[string]fnStat) (costScenario, error) {
	u := r.s.counter.Snapshot().Sub(before)
	lam, logs := r.s.fns.since(fnBefore)
	sc := costScenario{Name: name, Class: class, Usage: u, Lambda: lam, Logs: logs, Writes: r.s.counter.StopTrace()}
	if len(d.keys) > 0 {
		ledgerItem, err := r.s.ledger(ctx, d.keys[0])
		if err != nil {
			return sc, err
		}
		if ledgerItem != nil {
			sc.Outcome, sc.Reason = ledgerItem.Outcome, ledgerItem.Reason
		}
	}
	return sc, nil
}

// ledger reads an event's ledger item without counting it.
func (s *benchStack) ledger(ctx context.Context, key string) (*store.LedgerItem, error) {
	out, err := dynamodb.NewFromConfig(s.plain).GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.Stack.Physical["LedgerTable"].Ref), ConsistentRead: aws.Bool(true),
		Key: map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: key}},
	})
	if err != nil || len(out.Item) == 0 {
		return nil, err
	}
	var it store.LedgerItem
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil {
		return nil, err
	}
	return &it, nil
}
