package graphsub

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/store"
)

// lifecycleWindow is how far back a run reads a subscription's lifecycle notifications from the
// ledger (Graph's longest Outlook subscription lifetime: an older request is moot).
const lifecycleWindow = 7 * 24 * time.Hour

// ledgerLifecycle is one lifecycle notification the webhook received at the notification route
// and the worker recorded in the ledger.
type ledgerLifecycle struct {
	key        string
	event      string
	at         time.Time // when the webhook received it (the event's occurred_at)
	recordedAt string    // the ledger entry's recorded_at (store.TimeLayout)
}

// collectLedgerLifecycle records on the state items the lifecycle notifications that reached the
// notification route (Graph sends them there when a subscription's lifecycleNotificationUrl is
// the notification URL, e.g. one created by hand). The msgraph webhook queues each as an event
// (object msgraph.LifecycleObject, group msgraph.LifecycleGroupKey of its subscription), and the
// worker records it in the ledger (NOOP, "recorded for the subscription manager"). Here each
// live subscription's group is read from the ledger's ByGroup index, and every entry recorded
// after the state's LifecycleLedgerSeen is recorded on the state item at its receipt time, as
// the lifecycle route would have recorded it then, advancing LifecycleLedgerSeen in the same
// update. One subscription's events share a FIFO group, so the worker writes them one after
// the other and recorded_at only grows. It returns how many it recorded and, per state key, why
// that subscription's entries could not be read or recorded (the next run tries again).
func (m *Manager) collectLedgerLifecycle(ctx context.Context, states []State, now time.Time) (int, map[string]string) {
	recorded, failed := 0, map[string]string{}
	if m.cfg.LedgerTable == "" {
		return 0, failed
	}
	for _, st := range states {
		if st.SubscriptionID == "" {
			continue
		}
		items, err := m.ledgerLifecycle(ctx, st, now)
		if err != nil {
			failed[st.PK] = err.Error()
			m.log.WarnContext(ctx, "lifecycle: ledger unreadable", "subscription", st.PK, "error", err.Error())
			continue
		}
		for _, it := range items {
			m.log.InfoContext(ctx, "lifecycle from the notification route", "subscription", st.PK, "key", it.key, "event", it.event)
			if err := m.recordOn(ctx, st.PK, st.SubscriptionID, it.event, it.at, it.recordedAt); err != nil {
				failed[st.PK] = err.Error()
				m.log.WarnContext(ctx, "lifecycle: record from the ledger failed", "subscription", st.PK, "key", it.key, "error", err.Error())
				break
			}
			recorded++
		}
	}
	if recorded > 0 {
		m.metrics.Emit(nil, emf.Metric{Name: MetricLifecycle, Value: float64(recorded), Unit: emf.Count})
	}
	return recorded, failed
}

// ledgerLifecycle reads the subscription's lifecycle notifications recorded in the ledger after
// the state's LifecycleLedgerSeen (ByGroup, received within lifecycleWindow), in recorded order.
func (m *Manager) ledgerLifecycle(ctx context.Context, st State, now time.Time) ([]ledgerLifecycle, error) {
	key := expression.Key("group_key").Equal(expression.Value(msgraph.LifecycleGroupKey(st.SubscriptionID))).
		And(expression.Key("occurred_at").GreaterThanEqual(expression.Value(store.FormatTime(now.Add(-lifecycleWindow)))))
	b := expression.NewBuilder().WithKeyCondition(key)
	if st.LifecycleLedgerSeen != "" {
		b = b.WithFilter(expression.Name("recorded_at").GreaterThan(expression.Value(st.LifecycleLedgerSeen)))
	}
	expr, err := b.Build()
	if err != nil {
		return nil, fmt.Errorf("lifecycle query: %w", err)
	}
	in := &dynamodb.QueryInput{TableName: aws.String(m.cfg.LedgerTable), IndexName: aws.String(store.IndexByGroup),
		KeyConditionExpression: expr.KeyCondition(), FilterExpression: expr.Filter(), ExpressionAttributeNames: expr.Names(),
		ExpressionAttributeValues: expr.Values()}
	var out []ledgerLifecycle
	for {
		page, err := m.d.DynamoDB.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("query ledger for lifecycle notifications: %w", err)
		}
		for _, item := range page.Items {
			var li store.LedgerItem
			if attributevalue.UnmarshalMap(item, &li) != nil || li.RecordedAt == "" {
				continue
			}
			doc, err := li.EventJSON()
			if err != nil || doc == "" {
				continue
			}
			ev, err := canonical.Unmarshal([]byte(doc))
			if err != nil || ev.Source != msgraph.Name || ev.Hydrate == nil || ev.Hydrate.Object != msgraph.LifecycleObject ||
				ev.ExternalIDs["subscription_id"] != st.SubscriptionID {
				continue
			}
			out = append(out, ledgerLifecycle{key: ev.Key, event: ev.Hydrate.Change, at: ev.OccurredAt, recordedAt: li.RecordedAt})
		}
		if in.ExclusiveStartKey = page.LastEvaluatedKey; len(in.ExclusiveStartKey) == 0 {
			break
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].recordedAt < out[j].recordedAt })
	return out, nil
}
