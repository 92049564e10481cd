package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/store"
)

// Result is what applying one event did.
type Result struct {
	// Key and Source identify the event (empty when the body had no readable key).
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
	// ContactID and ActivityID are the contact and activity the event touched.
	ContactID string `json:"contact_id,omitempty"`
	// ActivityID is the activity the event merged into.
	ActivityID string `json:"activity_id,omitempty"`
	// Attempts counts transaction attempts.
	Attempts int `json:"attempts,omitempty"`
}

// rerun is a forced re-run request.
type rerun struct {
	by, why string
}

// ApplyBody decodes an SQS message body and applies it. An error means a transient failure
// (retry); an invalid body is recorded REJECTED when its key can be read, and acknowledged.
func (w *Worker) ApplyBody(ctx context.Context, body []byte) (Result, error) {
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
			w.log.ErrorContext(ctx, "invalid canonical event without a key; acknowledged", "error", err.Error())
			w.emitOutcome(res.Source, "INVALID", nil)
			return res, nil
		}
		stub := &canonical.Event{Key: partial.Key, Source: partial.Source, PayloadHash: partial.PayloadHash}
		return w.reject(ctx, stub, err.Error())
	}
	return w.Apply(ctx, ev)
}

// Apply applies one canonical event exactly once. A thin notification is hydrated in place (ev is
// modified). An error means a transient failure; the caller retries. Permanent failures are
// recorded REJECTED and return a nil error.
func (w *Worker) Apply(ctx context.Context, ev *canonical.Event) (Result, error) {
	res, err := w.apply(ctx, ev, nil)
	if err != nil && IsPermanent(err) {
		return w.reject(ctx, ev, err.Error())
	}
	return res, err
}

func (w *Worker) apply(ctx context.Context, ev *canonical.Event, rr *rerun) (Result, error) {
	res := Result{Key: ev.Key, Source: ev.Source}
	hydrated := ev.Kind != canonical.KindNotification
	for attempt := 1; ; attempt++ {
		res.Attempts = attempt
		now := w.now()
		led, err := w.getLedger(ctx, ev.Key)
		if err != nil {
			return res, err
		}
		if rr == nil && led != nil {
			if led.PayloadHash != ev.PayloadHash {
				res.Flagged = true
				return res, w.flag(ctx, ev, led)
			}
			if led.Duplicate(ev.PayloadHash, now) {
				res.Duplicate = true
				w.log.InfoContext(ctx, "duplicate acknowledged", "key", ev.Key, "outcome", led.Outcome)
				w.emitOutcome(ev.Source, "DUPLICATE", nil)
				return res, nil
			}
		}
		if rr != nil && led == nil {
			return res, permanent("no ledger item for %s", ev.Key)
		}
		if !hydrated {
			if err := w.hydrate(ctx, ev); err != nil {
				return res, err
			}
			hydrated = true
		}

		p, err := w.plan(ctx, ev, now, led, rr)
		if err != nil {
			return res, err
		}
		p.ledger.Attempts = attempt
		items, err := p.transaction(w)
		if err != nil {
			return res, err
		}
		_, err = w.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		if err == nil {
			res.Outcome, res.Reason = p.ledger.Outcome, p.ledger.Reason
			res.ContactID, res.ActivityID = p.ledger.ContactID, p.ledger.ActivityID
			w.emitOutcome(ev.Source, res.Outcome, ev)
			if attempt > 1 {
				w.metrics.Emit(map[string]string{"Connector": ev.Source}, emf.Metric{Name: "Retries", Value: float64(attempt - 1), Unit: emf.Count})
			}
			w.log.InfoContext(ctx, "event applied", "key", ev.Key, "outcome", res.Outcome, "attempts", attempt,
				"contact", res.ContactID, "writes", len(items))
			return res, nil
		}
		ledgerFailed, conflict := cancellation(err)
		if !conflict {
			return res, fmt.Errorf("transact write: %w", err)
		}
		w.metrics.Emit(map[string]string{"Connector": ev.Source, "Kind": "version"}, emf.Metric{Name: "Conflicts", Value: 1, Unit: emf.Count})
		w.log.InfoContext(ctx, "transaction canceled; re-reading", "key", ev.Key, "attempt", attempt, "ledger", ledgerFailed)
		if attempt >= w.cfg.MaxAttempts {
			return res, fmt.Errorf("gave up after %d conflicting attempts: %w", attempt, err)
		}
		if !ledgerFailed { // a ledger conflict is settled by the next read: no need to wait
			if err := w.sleep(ctx, backoff(attempt)); err != nil {
				return res, err
			}
		}
	}
}

// cancellation classifies a TransactWriteItems error: whether the ledger item's condition failed,
// and whether the error is a conflict worth re-reading for (a failed condition or a concurrent
// transaction).
func cancellation(err error) (ledgerFailed, conflict bool) {
	var tce *types.TransactionCanceledException
	if errors.As(err, &tce) {
		for i, r := range tce.CancellationReasons {
			code := aws.ToString(r.Code)
			switch code {
			case "ConditionalCheckFailed":
				conflict = true
				if i == 0 {
					ledgerFailed = true
				}
			case "TransactionConflict":
				conflict = true
			}
		}
		if len(tce.CancellationReasons) == 0 {
			conflict = true
		}
		return ledgerFailed, conflict
	}
	var tcx *types.TransactionConflictException
	if errors.As(err, &tcx) {
		return false, true
	}
	return false, false
}

func (w *Worker) emitOutcome(source, outcome string, ev *canonical.Event) {
	ms := []emf.Metric{{Name: "Processed", Value: 1, Unit: emf.Count}}
	if ev != nil && (outcome == store.Applied || outcome == store.Noop) && !ev.OccurredAt.IsZero() {
		ms = append(ms, emf.Metric{Name: "LagMs", Value: float64(w.now().Sub(ev.OccurredAt).Milliseconds()), Unit: emf.Milliseconds})
	}
	w.metrics.Emit(map[string]string{"Connector": source, "Outcome": outcome}, ms...)
}

// getLedger reads an event's ledger item with a strongly consistent read; nil when absent.
func (w *Worker) getLedger(ctx context.Context, key string) (*store.LedgerItem, error) {
	out, err := w.ddb.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(w.cfg.LedgerTable),
		Key:            map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: key}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	if len(out.Item) == 0 {
		return nil, nil
	}
	var it store.LedgerItem
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil {
		return nil, fmt.Errorf("decode ledger item: %w", err)
	}
	return &it, nil
}

// flag marks a ledger item whose key arrived again with a different payload hash.
func (w *Worker) flag(ctx context.Context, ev *canonical.Event, led *store.LedgerItem) error {
	upd := expression.Set(expression.Name("flagged"), expression.Value(true)).
		Set(expression.Name("conflicting_payload"), expression.Value(ev.PayloadHash)).
		Add(expression.Name("conflicts"), expression.Value(1))
	expr, err := expression.NewBuilder().WithUpdate(upd).WithCondition(expression.AttributeExists(expression.Name("pk"))).Build()
	if err != nil {
		return err
	}
	_, err = w.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(w.cfg.LedgerTable),
		Key:                       map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: ev.Key}},
		UpdateExpression:          expr.Update(),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	if err != nil {
		return fmt.Errorf("flag conflicting payload: %w", err)
	}
	w.log.WarnContext(ctx, "same key, different payload: flagged, not applied", "key", ev.Key,
		"ledger_outcome", led.Outcome)
	w.metrics.Emit(map[string]string{"Connector": ev.Source, "Kind": "payload"}, emf.Metric{Name: "Conflicts", Value: 1, Unit: emf.Count})
	return nil
}

// hydrate fills in a thin notification through its source's hydrator.
func (w *Worker) hydrate(ctx context.Context, ev *canonical.Event) error {
	h, ok := w.cfg.Hydrators[ev.Source]
	if !ok || h.Hydrator == nil {
		return permanent("no hydrator for source %q", ev.Source)
	}
	var sec connector.Secret
	if h.SecretID != "" {
		if w.cfg.Secrets == nil {
			return permanent("no secret source configured for %q", ev.Source)
		}
		s, err := w.cfg.Secrets.Get(ctx, h.SecretID)
		if err != nil {
			return fmt.Errorf("read %s secret: %w", ev.Source, err)
		}
		sec = s
	}
	err := h.Hydrator.Hydrate(ctx, ev, sec, h.API)
	switch {
	case err == nil:
	case errors.Is(err, connector.ErrNotFound), errors.Is(err, connector.ErrUnusable):
		return permanent("hydrate: %v", err)
	default:
		return fmt.Errorf("hydrate: %w", err) // ErrTransient and anything unexpected: retry
	}
	if ev.Kind == canonical.KindNotification {
		return permanent("hydrate left %s a notification", ev.Key)
	}
	if err := ev.Validate(); err != nil {
		return permanent("hydrated event: %v", err)
	}
	return nil
}

// reject records a permanent failure in the ledger (outcome REJECTED) and acknowledges it. A
// transient failure to write it is returned (the message is retried).
func (w *Worker) reject(ctx context.Context, ev *canonical.Event, reason string) (Result, error) {
	res := Result{Key: ev.Key, Source: ev.Source, Outcome: store.Rejected, Reason: reason}
	now := w.now()
	it := w.ledgerItem(ev, now)
	it.Outcome, it.Reason = store.Rejected, reason
	if ev.Validate() != nil {
		it.Event = "" // not a usable event: keep only what identifies it
		it.GroupKey, it.OccurredAt = "", ""
	}
	av, err := attributevalue.MarshalMap(it)
	if err != nil {
		return res, err
	}
	cond, vals := ledgerCondition(now)
	_, err = w.ddb.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(w.cfg.LedgerTable), Item: av,
		ConditionExpression: aws.String(cond), ExpressionAttributeValues: vals,
	})
	var ccf *types.ConditionalCheckFailedException
	if err != nil && !errors.As(err, &ccf) {
		return res, fmt.Errorf("record rejection: %w", err)
	}
	w.log.WarnContext(ctx, "event rejected", "key", ev.Key, "source", ev.Source, "reason", reason)
	w.emitOutcome(ev.Source, store.Rejected, nil)
	return res, nil
}

// ledgerCondition is the ledger Put's condition: absent, or its dedup window is over.
func ledgerCondition(now time.Time) (string, map[string]types.AttributeValue) {
	return "attribute_not_exists(pk) OR dedup_until < :now", map[string]types.AttributeValue{
		":now": &types.AttributeValueMemberN{Value: strconv.FormatInt(now.UnixMilli(), 10)},
	}
}

// ledgerItem returns the ledger item for an event recorded at now (outcome to be filled in).
func (w *Worker) ledgerItem(ev *canonical.Event, now time.Time) *store.LedgerItem {
	win, forever := w.cfg.Policy.DedupWindow(ev.Source)
	until := now.Add(win).UnixMilli()
	if forever {
		until = store.ForeverMillis
	}
	body, _ := ev.Marshal()
	return &store.LedgerItem{
		Key: ev.Key, PayloadHash: ev.PayloadHash, DedupUntil: until, DedupForever: forever,
		ExpiresAt:      now.Add(time.Duration(w.cfg.RetentionDays) * 24 * time.Hour).Unix(),
		GroupKey:       ev.GroupKey,
		OccurredAt:     store.FormatTime(ev.OccurredAt),
		Source:         ev.Source,
		RecordedAt:     store.FormatTime(now),
		Event:          string(body),
		PolicyVersion:  w.cfg.Policy.Version(),
		MappingVersion: ev.MappingVersion,
		Unmapped:       ev.Unmapped,
	}
}
