package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/store"
)

// applier owns applying events: the SQS batch handler and, per event, the ledger check,
// hydration, the plan and the one transaction that writes it (re-read and re-decided after a
// conflict), and the ledger writes of rejected and flagged deliveries.
type applier struct {
	*deps
	reader reader
}

// Result is what applying one event did.
type Result struct {
	// Key identifies the event (empty when the body had no readable key).
	Key string `json:"key,omitempty"`
	// Source is the event's source.
	Source string `json:"source,omitempty"`
	// Outcome is the ledger outcome written (store.Applied, store.Noop, store.Rejected), or ""
	// when nothing was written (duplicate, flagged).
	Outcome string `json:"outcome,omitempty"`
	// Reason explains the outcome.
	Reason string `json:"reason,omitempty"`
	// Duplicate is set when the event had already been applied inside its dedup window.
	Duplicate bool `json:"duplicate,omitempty"`
	// Flagged is set when the key was known with a different payload hash (not applied).
	Flagged bool `json:"flagged,omitempty"`
	// ContactID is the contact the event touched.
	ContactID string `json:"contact_id,omitempty"`
	// ActivityID is the activity the event merged into.
	ActivityID string `json:"activity_id,omitempty"`
	// Attempts counts transaction attempts.
	Attempts int `json:"attempts,omitempty"`
}

// rerunRequest is a forced re-run request: who asked and why.
type rerunRequest struct {
	by, why string
}

// groupAttr is the SQS system attribute naming a FIFO message's group.
const groupAttr = "MessageGroupId"

// handleBatch applies one SQS batch (see Worker.Handle): lanes of message groups run
// concurrently (messageLanes: groups about one person share a lane and run one after the other),
// the messages of one group in order, and a failed message fails the rest of its group. A
// message is started only while at least Config.DeadlineMargin remains before ctx's deadline;
// once one is deferred, so is every later message of its lane (FIFO order within each group).
func (a *applier) handleBatch(ctx context.Context, batch events.SQSEvent) events.SQSEventResponse {
	failed := make([]bool, len(batch.Records))
	deferred := make([]bool, len(batch.Records))
	slots := make(chan struct{}, a.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, lane := range a.messageLanes(ctx, batch.Records) {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			late := false
			for _, group := range lane {
				broken := false
				for _, i := range group {
					late = late || (!broken && a.deadlineNear(ctx))
					if broken || late {
						failed[i], deferred[i] = true, late
						continue
					}
					if err := a.handleMessage(ctx, batch.Records[i]); err != nil {
						failed[i], broken = true, true
					}
				}
			}
		}()
	}
	wg.Wait()
	a.reportDeferred(ctx, batch, deferred)
	var response events.SQSEventResponse
	for i, isFailed := range failed {
		if isFailed {
			response.BatchItemFailures = append(response.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: batch.Records[i].MessageId})
		}
	}
	return response
}

// messageLanes joins a batch's message groups (messageGroups) into lanes run one group after
// the other: groups whose events are about one person. Two events about one contact in
// different groups — a call keyed by phone, an email by address — would otherwise write the
// contact at once, and one transaction would be canceled, billed, re-read and re-decided.
// Groups are about one person when their events share a subject identity, or when the
// identities' claims (read in one strongly consistent BatchGetItem, only for a batch of several
// groups) name one contact. A claim made while the batch runs is not seen: that race is left to
// the transactions' conditions, as between batches. Lanes are in order of their first group, a
// lane's groups in order of first appearance; an event whose subject is not known before
// hydration (a thin notification) joins by nothing.
func (a *applier) messageLanes(ctx context.Context, messages []events.SQSMessage) [][][]int {
	groups := messageGroups(messages)
	lanes := newLanes(len(groups))
	if len(groups) < 2 {
		return lanes.of(groups)
	}
	first := map[string]int{} // identity claim or contact -> the first group that named it
	join := func(name string, g int) {
		if earlier, seen := first[name]; seen {
			lanes.join(earlier, g)
		} else {
			first[name] = g
		}
	}
	var keys []itemKey
	named := map[string][]int{} // identity claim pk -> groups naming it
	for g, group := range groups {
		for _, i := range group {
			emails, phones := subjectIdentities(messages[i].Body)
			pks := make([]string, 0, len(emails)+len(phones))
			for _, email := range emails {
				pks = append(pks, store.IdentEmailPK(email))
			}
			for _, phone := range phones {
				pks = append(pks, store.IdentPhonePK(phone))
			}
			for _, pk := range pks {
				join(pk, g)
				if len(named[pk]) == 0 {
					keys = append(keys, itemKey{pk, store.SKIdent})
				}
				named[pk] = append(named[pk], g)
			}
		}
	}
	claims := a.reader.planning()
	if err := claims.prefetch(ctx, keys...); err != nil {
		a.log.DebugContext(ctx, "batch claims not read; lanes by shared identities only", "error", err.Error())
		return lanes.of(groups)
	}
	for _, k := range keys {
		if _, read := claims.ahead[aheadKey(k.pk, k.sk)]; !read {
			continue // not read ahead (one key, or a client without BatchGetItem): no request for it
		}
		if claim, err := claims.claim(ctx, k.pk, k.sk); err == nil && claim != nil && claim.ContactID != "" {
			for _, g := range named[k.pk] {
				join("contact:"+claim.ContactID, g)
			}
		}
	}
	return lanes.of(groups)
}

// laneSet is a union-find over a batch's groups: each lane is led by its earliest group.
type laneSet []int

func newLanes(n int) laneSet {
	l := make(laneSet, n)
	for g := range l {
		l[g] = g
	}
	return l
}

// leader returns the earliest group of g's lane.
func (l laneSet) leader(g int) int {
	for l[g] != g {
		l[g] = l[l[g]]
		g = l[g]
	}
	return g
}

// join puts the lanes of groups a and b together, under the earlier leader.
func (l laneSet) join(a, b int) {
	a, b = l.leader(a), l.leader(b)
	if a > b {
		a, b = b, a
	}
	l[b] = a
}

// of returns the groups by lane, lanes in order of their leader.
func (l laneSet) of(groups [][]int) [][][]int {
	var out [][][]int
	at := map[int]int{}
	for g, group := range groups {
		leader := l.leader(g)
		k, ok := at[leader]
		if !ok {
			k = len(out)
			at[leader] = k
			out = append(out, nil)
		}
		out[k] = append(out[k], group)
	}
	return out
}

// subjectIdentities are the normalised emails and phones of a message body's subject; none when
// the body is not a canonical event.
func subjectIdentities(body string) (emails, phones []string) {
	var ev struct {
		Subject canonical.Person `json:"subject"`
	}
	if json.Unmarshal([]byte(body), &ev) != nil {
		return nil, nil
	}
	return identities(ev.Subject)
}

// deadlineNear reports whether less than Config.DeadlineMargin remains before ctx's deadline (the
// Lambda timeout): no message may be started then. It reads the real clock, as the deadline does.
func (a *applier) deadlineNear(ctx context.Context) bool {
	deadline, ok := ctx.Deadline()
	return ok && a.cfg.DeadlineMargin > 0 && time.Until(deadline) < a.cfg.DeadlineMargin
}

// reportDeferred logs and counts the messages a batch did not start for lack of time: they are
// returned to SQS untouched (not failed attempts of a bad message; SQS still counts the receive).
func (a *applier) reportDeferred(ctx context.Context, batch events.SQSEvent, deferred []bool) {
	var ids []string
	for i, isDeferred := range deferred {
		if isDeferred {
			ids = append(ids, batch.Records[i].MessageId)
		}
	}
	if len(ids) == 0 {
		return
	}
	remaining := time.Duration(0)
	if deadline, ok := ctx.Deadline(); ok {
		remaining = time.Until(deadline)
	}
	a.log.WarnContext(ctx, "deadline near; messages deferred to their next receive", "deferred", len(ids),
		"batch", len(batch.Records), "remaining_ms", remaining.Milliseconds(), "margin_ms", a.cfg.DeadlineMargin.Milliseconds(),
		"message_ids", ids)
	a.metrics.Emit(nil, emf.Metric{Name: "Deferred", Value: float64(len(ids)), Unit: emf.Count})
}

// messageGroups returns the indexes of a batch's messages by FIFO message group, groups in order
// of first appearance and messages in batch order. A message without a group is a group of its
// own.
func messageGroups(messages []events.SQSMessage) [][]int {
	var order []string
	groups := map[string][]int{}
	for i, message := range messages {
		group := message.Attributes[groupAttr]
		if group == "" {
			group = "\x00" + message.MessageId // no group: the message orders nothing else
		}
		if _, seen := groups[group]; !seen {
			order = append(order, group)
		}
		groups[group] = append(groups[group], i)
	}
	out := make([][]int, 0, len(order))
	for _, group := range order {
		out = append(out, groups[group])
	}
	return out
}

// handleMessage applies one SQS message (see Worker.HandleMessage).
func (a *applier) handleMessage(ctx context.Context, message events.SQSMessage) error {
	res, err := a.applyBody(ctx, []byte(message.Body))
	if err != nil {
		a.log.WarnContext(ctx, "transient failure; message will be retried", "message_id", message.MessageId,
			"key", res.Key, "error", err.Error())
		a.metrics.Emit(map[string]string{"Connector": res.Source, "Outcome": "RETRY"}, emf.Metric{Name: "Processed", Value: 1, Unit: emf.Count})
		return err
	}
	return nil
}

// applyBody decodes an SQS message body and applies it (see Worker.ApplyBody).
func (a *applier) applyBody(ctx context.Context, body []byte) (Result, error) {
	ev, err := canonical.Unmarshal(body)
	if err != nil {
		var partial struct {
			Key, Source, PayloadHash string
		}
		_ = json.Unmarshal(body, &struct {
			Key         *string `json:"key"`
			Source      *string `json:"source"`
			PayloadHash *string `json:"payload_hash"`
		}{&partial.Key, &partial.Source, &partial.PayloadHash})
		res := Result{Key: partial.Key, Source: partial.Source}
		if partial.Key == "" {
			a.log.ErrorContext(ctx, "invalid canonical event without a key; acknowledged", "error", err.Error())
			a.emitOutcome(res.Source, "INVALID", nil)
			return res, nil
		}
		stub := &canonical.Event{Key: partial.Key, Source: partial.Source, PayloadHash: partial.PayloadHash}
		return a.reject(ctx, stub, err.Error())
	}
	return a.applyEvent(ctx, ev)
}

// applyEvent applies one event and records a permanent failure as REJECTED (see Worker.Apply).
func (a *applier) applyEvent(ctx context.Context, ev *canonical.Event) (Result, error) {
	res, err := a.apply(ctx, ev, nil)
	var skipped *skippedError
	switch {
	case errors.As(err, &skipped):
		return a.settle(ctx, ev, store.Noop, skipped.reason)
	case err != nil && IsPermanent(err):
		return a.reject(ctx, ev, err.Error())
	}
	return res, err
}

// apply runs the per-event pipeline until the event is written or settled: read the ledger,
// check it, hydrate once, plan, and write the plan in one transaction (one PutItem when it is
// the ledger item alone); a canceled write is re-read and re-decided (bounded attempts). rerun
// is set for a forced re-run.
func (a *applier) apply(ctx context.Context, ev *canonical.Event, rerun *rerunRequest) (Result, error) {
	res := Result{Key: ev.Key, Source: ev.Source}
	hydrated := ev.Kind != canonical.KindNotification
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		now := a.now()
		ledger, err := a.getLedger(ctx, ev.Key)
		if err != nil {
			return res, asPermanent("read ledger", err)
		}
		if settled, err := a.checkLedger(ctx, ev, ledger, rerun, now, &res); settled || err != nil {
			return res, asPermanent("check ledger", err)
		}
		if !hydrated {
			if err := a.hydrate(ctx, ev); err != nil {
				return res, asPermanent("hydrate", err)
			}
			hydrated = true
		}
		planned, items, err := a.planTransaction(ctx, ev, now, ledger, rerun, attempt)
		if err != nil {
			return res, asPermanent("plan", err)
		}
		err = a.write(ctx, items)
		if err == nil {
			a.recordApplied(ctx, ev, planned, attempt, len(items), &res)
			return res, nil
		}
		if err := a.awaitRetry(ctx, ev, attempt, err); err != nil {
			return res, err
		}
	}
}

// errLedgerTaken is a single-item plan's PutItem refused by the ledger item's condition: like a
// transaction whose first item's condition failed, the event was recorded meanwhile.
var errLedgerTaken = errors.New("ledger item written meanwhile")

// write writes a plan's items: one TransactWriteItems, or, when the plan is its ledger item
// alone (a no-op), one PutItem with the same condition. One item is atomic by itself, and a
// transactional write costs twice the write units of a plain one.
func (a *applier) write(ctx context.Context, items []types.TransactWriteItem) error {
	if len(items) != 1 || items[0].Put == nil {
		_, err := a.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		return err
	}
	put := items[0].Put
	_, err := a.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: put.TableName, Item: put.Item,
		ConditionExpression: put.ConditionExpression, ExpressionAttributeNames: put.ExpressionAttributeNames,
		ExpressionAttributeValues: put.ExpressionAttributeValues})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return fmt.Errorf("put ledger item: %w (%w)", errLedgerTaken, err)
	}
	return err
}

// asPermanent returns err marked permanent when classify says so (the event is then recorded
// REJECTED with the reason), else err unchanged; op names the step for the reason.
func asPermanent(op string, err error) error {
	if err == nil || IsPermanent(err) {
		return err
	}
	if v := classify(err); v.Class == classPermanent {
		return &permanentError{reason: op + ": " + v.Reason(), err: err}
	}
	return err
}

// checkLedger settles an event its ledger item already answers for: a known key with another
// payload is flagged, a duplicate inside its dedup window is acknowledged, and a forced re-run
// needs a ledger item. It reports whether the event is settled (nothing more to do).
func (a *applier) checkLedger(ctx context.Context, ev *canonical.Event, ledger *store.LedgerItem, rerun *rerunRequest,
	now time.Time, res *Result) (bool, error) {
	if rerun == nil && ledger != nil {
		if ledger.PayloadHash != ev.PayloadHash {
			if err := a.flag(ctx, ev, ledger); err != nil {
				return true, err
			}
			res.Flagged = true
			return true, nil
		}
		if ledger.Duplicate(ev.PayloadHash, now) {
			res.Duplicate = true
			a.log.InfoContext(ctx, "duplicate acknowledged", "key", ev.Key, "outcome", ledger.Outcome)
			a.emitOutcome(ev.Source, "DUPLICATE", nil)
			return true, nil
		}
	}
	if rerun != nil && ledger == nil {
		return false, permanent("no ledger item for %s", ev.Key)
	}
	return false, nil
}

// planTransaction plans the event against what is stored now and builds the transaction that
// writes the plan.
func (a *applier) planTransaction(ctx context.Context, ev *canonical.Event, now time.Time, ledger *store.LedgerItem,
	rerun *rerunRequest, attempt int) (*plan, []types.TransactWriteItem, error) {
	planned, err := a.plan(ctx, ev, now, ledger, rerun)
	if err != nil {
		return nil, nil, err
	}
	planned.ledger.Attempts = attempt
	items, err := planned.transaction(a.deps)
	if err != nil {
		return nil, nil, err
	}
	return planned, items, nil
}

// recordApplied reports a written plan in res, the metrics and the log.
func (a *applier) recordApplied(ctx context.Context, ev *canonical.Event, written *plan, attempt, writes int, res *Result) {
	res.Outcome, res.Reason = written.outcome(), written.ledger.Reason
	res.ContactID, res.ActivityID = written.ledger.ContactID, written.ledger.ActivityID
	a.emitOutcome(ev.Source, res.Outcome, ev)
	if attempt > 1 {
		a.metrics.Emit(map[string]string{"Connector": ev.Source}, emf.Metric{Name: "Retries", Value: float64(attempt - 1), Unit: emf.Count})
	}
	a.log.InfoContext(ctx, "event applied", "key", ev.Key, "outcome", res.Outcome, "attempts", attempt,
		"contact", res.ContactID, "writes", writes)
}

// awaitRetry decides what a failed transaction means (classify): nil when the event is to be
// re-read and re-decided (after a jittered wait unless the ledger condition failed), a
// permanent error when the transaction can never be written, else the error to return (a
// transient failure, throttling the client's in-process backoff did not outlast, attempts
// exhausted, or the context ended).
func (a *applier) awaitRetry(ctx context.Context, ev *canonical.Event, attempt int, txErr error) error {
	v := classify(txErr)
	switch v.Class {
	case classRedecide:
	case classPermanent:
		a.log.WarnContext(ctx, "transaction refused; not retryable", "key", ev.Key, "code", v.Code, "item", v.Item, "attempt", attempt)
		return &permanentError{reason: "transact write: " + v.Reason(), err: txErr}
	default:
		return fmt.Errorf("transact write: %w", txErr)
	}
	a.metrics.Emit(map[string]string{"Connector": ev.Source, "Kind": "version"}, emf.Metric{Name: "Conflicts", Value: 1, Unit: emf.Count})
	a.log.InfoContext(ctx, "transaction canceled; re-reading", "key", ev.Key, "attempt", attempt, "ledger", v.LedgerFailed, "code", v.Code)
	if attempt >= a.cfg.MaxAttempts {
		return fmt.Errorf("gave up after %d conflicting attempts: %w", attempt, txErr)
	}
	if !v.LedgerFailed { // a ledger conflict is settled by the next read: no need to wait
		return a.sleep(ctx, backoff(attempt))
	}
	return nil
}

// cancellation reports, for a TransactWriteItems error, whether the ledger item's condition
// failed and whether the error is a conflict worth re-reading for (class re-decide in classify).
func cancellation(err error) (ledgerFailed, conflict bool) {
	v := classify(err)
	return v.LedgerFailed, v.Class == classRedecide
}

// emitOutcome emits the Processed metric of one event (and its lag when it was written).
func (a *applier) emitOutcome(source, outcome string, ev *canonical.Event) {
	metrics := []emf.Metric{{Name: "Processed", Value: 1, Unit: emf.Count}}
	if ev != nil && (outcome == store.Applied || outcome == store.Noop) && !ev.OccurredAt.IsZero() {
		metrics = append(metrics, emf.Metric{Name: "LagMs", Value: float64(a.now().Sub(ev.OccurredAt).Milliseconds()), Unit: emf.Milliseconds})
	}
	a.metrics.Emit(map[string]string{"Connector": source, "Outcome": outcome}, metrics...)
}

// flag marks a ledger item whose key arrived again with a different payload hash.
func (a *applier) flag(ctx context.Context, ev *canonical.Event, ledger *store.LedgerItem) error {
	update := expression.Set(expression.Name("flagged"), expression.Value(true)).
		Set(expression.Name("conflicting_payload"), expression.Value(ev.PayloadHash)).
		Add(expression.Name("conflicts"), expression.Value(1))
	expr, err := expression.NewBuilder().WithUpdate(update).WithCondition(expression.AttributeExists(expression.Name("pk"))).Build()
	if err != nil {
		return err
	}
	_, err = a.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(a.cfg.LedgerTable),
		Key:                       map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: ev.Key}},
		UpdateExpression:          expr.Update(),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	if err != nil {
		return fmt.Errorf("flag conflicting payload: %w", err)
	}
	a.log.WarnContext(ctx, "same key, different payload: flagged, not applied", "key", ev.Key,
		"ledger_outcome", ledger.Outcome)
	a.metrics.Emit(map[string]string{"Connector": ev.Source, "Kind": "payload"}, emf.Metric{Name: "Conflicts", Value: 1, Unit: emf.Count})
	return nil
}

// reject records a permanent failure in the ledger (outcome REJECTED) and acknowledges it. It
// reports REJECTED — in the result, the log and the Processed{Outcome=REJECTED} metric — only
// once its conditional ledger write succeeded. When the write loses to another delivery of the
// key (the ledger already answers for the event), what the ledger holds is reported instead: a
// duplicate, or a conflicting payload (flagged). When the ledger item is refused permanently
// (an event too large to store) it is recorded without the event body. A transient failure to
// write is returned (the message is retried).
func (a *applier) reject(ctx context.Context, ev *canonical.Event, reason string) (Result, error) {
	return a.settle(ctx, ev, store.Rejected, reason)
}

// settle records an event that changes nothing in the CRM with its outcome (REJECTED, or NOOP
// for a skipped hydration) and reason, reporting the outcome only once it is written.
func (a *applier) settle(ctx context.Context, ev *canonical.Event, outcome, reason string) (Result, error) {
	res := Result{Key: ev.Key, Source: ev.Source}
	now := a.now()
	ledger := a.ledgerItem(ev, now)
	ledger.Outcome, ledger.Reason = outcome, reason
	if ev.Validate() != nil {
		ledger.SetEvent("") // not a usable event: keep only what identifies it
		ledger.GroupKey, ledger.OccurredAt = "", ""
	}
	for attempt := 1; ; attempt++ {
		err := a.putRejection(ctx, ledger, now)
		if err == nil {
			res.Outcome, res.Reason = outcome, ledger.Reason
			if outcome == store.Rejected {
				a.log.WarnContext(ctx, "event rejected", "key", ev.Key, "source", ev.Source, "reason", reason)
			} else {
				a.log.InfoContext(ctx, "event settled", "key", ev.Key, "source", ev.Source, "outcome", outcome, "reason", reason)
			}
			a.emitOutcome(ev.Source, outcome, nil)
			return res, nil
		}
		v := classify(err)
		switch {
		case v.Class == classRedecide && attempt < a.cfg.MaxAttempts:
			current, err := a.getLedger(ctx, ev.Key)
			if err != nil {
				return res, err
			}
			if current == nil {
				continue // removed meanwhile: write it again
			}
			settled, err := a.checkLedger(ctx, ev, current, nil, now, &res)
			if settled || err != nil {
				a.log.InfoContext(ctx, "rejection not recorded; the ledger already answers for the event", "key", ev.Key,
					"ledger_outcome", current.Outcome)
				return res, err
			}
		case v.Class == classPermanent && ledger.HasEvent():
			a.log.WarnContext(ctx, "rejection refused with its event; recording it without the event body", "key", ev.Key,
				"code", v.Code)
			ledger.SetEvent("")
			ledger.Reason = reason + "; event body not stored: " + v.Reason()
		default:
			return res, fmt.Errorf("record rejection: %w", err)
		}
	}
}

// putRejection writes a REJECTED ledger item under the ledger condition (absent, or its dedup
// window over).
func (a *applier) putRejection(ctx context.Context, ledger *store.LedgerItem, now time.Time) error {
	attrs, err := attributevalue.MarshalMap(ledger)
	if err != nil {
		return err
	}
	cond, vals := ledgerCondition(now)
	_, err = a.ddb.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(a.cfg.LedgerTable), Item: attrs,
		ConditionExpression: aws.String(cond), ExpressionAttributeValues: vals,
	})
	return err
}
