package graphsub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/identity"
	"github.com/crmsync/crmsync/shared/reconcile/check"
	"github.com/crmsync/crmsync/shared/store"
)

// ResyncRunKey is the ExternalIDs key a resync event carries: which run enqueued it.
const ResyncRunKey = "graph_resync"

// equivalenceSpan is how far from an item's time the ledger is searched for an equivalent
// delivered event (as reconcile's parity does).
const equivalenceSpan = 24 * time.Hour

// calendarPast is how far before the window the calendarView delta starts: events changed in
// the window may start earlier.
const calendarPast = 30 * 24 * time.Hour

// changedItem is a message or event the delta query returned for the window.
type changedItem struct {
	object   string // message | event
	resource string // Users/{user id}/Messages/{id}, as Graph's notifications name it
	id, etag string
}

// resyncState resyncs the state's pending window [ResyncSince, now): it enqueues what the ledger
// lacks, within the run's budget, and clears the request once nothing is left.
func (m *Manager) resyncState(ctx context.Context, st *State, now time.Time, budget *int) (int, error) {
	since := parseTime(st.ResyncSince)
	if since.IsZero() {
		st.ResyncSince, st.ResyncSubscriptionID = "", ""
		return 0, nil
	}
	items, err := m.changed(ctx, st, since, now)
	if err != nil {
		return 0, fmt.Errorf("resync: %w", err)
	}
	sid := st.ResyncSubscriptionID
	if sid == "" {
		sid = st.SubscriptionID
	}
	runID := "resync-" + now.UTC().Format("20060102T150405Z")
	var send []canonical.Event
	complete := true
	for _, it := range items {
		ev := thinEvent(sid, it, now, runID)
		lacks, err := m.lacks(ctx, &ev)
		if err != nil {
			return 0, fmt.Errorf("resync: %w", err)
		}
		if !lacks {
			continue
		}
		if *budget <= 0 {
			complete = false
			break
		}
		send = append(send, ev)
		*budget--
	}
	if err := m.enqueue(ctx, send); err != nil {
		return 0, fmt.Errorf("resync: %w", err)
	}
	st.LastResyncAt, st.LastResyncEnqueued = formatTime(now), len(send)
	if complete {
		st.ResyncSince, st.ResyncSubscriptionID = "", ""
	}
	m.log.InfoContext(ctx, "graph resync", "subscription", st.PK, "since", formatTime(since), "changed", len(items),
		"enqueued", len(send), "complete", complete, "run", runID)
	return len(send), nil
}

// changed lists the mailbox's messages received (in the configured folders) or events changed
// since the window's start, through the delta query.
func (m *Manager) changed(ctx context.Context, st *State, since, now time.Time) ([]changedItem, error) {
	user := url.PathEscape(st.UserID)
	var rounds []string
	object, segment := "message", "Messages"
	if st.Resource == ResourceEvents {
		object, segment = "event", "Events"
		rounds = append(rounds, "users/"+user+"/calendarView/delta?startDateTime="+url.QueryEscape(formatTime(since.Add(-calendarPast)))+
			"&endDateTime="+url.QueryEscape(formatTime(now.Add(m.cfg.CalendarHorizon))))
	} else {
		for _, f := range m.cfg.MailFolders {
			rounds = append(rounds, "users/"+user+"/mailFolders/"+url.PathEscape(f)+"/messages/delta?$select=id,receivedDateTime"+
				"&$filter="+url.QueryEscape("receivedDateTime ge "+formatTime(since)))
		}
	}
	seen := map[string]bool{}
	var out []changedItem
	for _, first := range rounds {
		items, err := m.delta(ctx, first)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			when := it.ReceivedDateTime
			if object == "event" {
				when = it.LastModifiedDateTime
			}
			// The delta's own filter is not trusted (calendarView has none): keep the window.
			if t, err := time.Parse(time.RFC3339Nano, when); err == nil && t.Before(since) || seen[it.ID] {
				continue
			}
			seen[it.ID] = true
			out = append(out, changedItem{object: object, id: it.ID, etag: it.ETag,
				resource: "Users/" + st.UserID + "/" + segment + "/" + it.ID})
		}
	}
	return out, nil
}

// thinEvent is the event the msgraph webhook makes of a `created` notification for the item on
// subscription sid (same key shape, same thin form: the worker hydrates it).
func thinEvent(sid string, it changedItem, now time.Time, runID string) canonical.Event {
	key := "msgraph:" + sid + ":created:" + it.resource + ":" + it.etag
	odataType := "#Microsoft.Graph.Message"
	if it.object == "event" {
		odataType = "#Microsoft.Graph.Event"
	}
	notification, _ := json.Marshal(map[string]any{"subscriptionId": sid, "changeType": "created", "resource": it.resource,
		"resourceData": map[string]string{"@odata.type": odataType, "@odata.id": it.resource, "@odata.etag": it.etag, "id": it.id}})
	return canonical.Event{
		Key: key, Source: msgraph.Name, Kind: canonical.KindNotification,
		GroupKey:   identity.GroupKey(nil, nil, msgraph.Name, it.resource),
		OccurredAt: now.UTC(), ReceivedAt: now.UTC(), MappingVersion: msgraph.MappingVersion,
		PayloadHash: canonical.PayloadHash(notification),
		Hydrate:     &canonical.HydrateRef{Object: it.object, Resource: it.resource, Change: "created"},
		ExternalIDs: map[string]string{"subscription_id": sid, "resource_id": it.id, ResyncRunKey: runID},
	}
}

// lacks reports whether the ledger holds neither the event's key nor an equivalent delivered
// event: the item is mapped as the worker would map it (same connector, hydrated through Graph),
// and the ledger's group is searched near its time (reconcile/check.Equivalent).
func (m *Manager) lacks(ctx context.Context, ev *canonical.Event) (bool, error) {
	out, err := m.d.DynamoDB.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(m.cfg.LedgerTable),
		Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: ev.Key}}, ProjectionExpression: aws.String("pk")})
	if err != nil {
		return false, fmt.Errorf("read ledger: %w", err)
	}
	if len(out.Item) > 0 {
		return false, nil
	}
	mapped := *ev
	ref := *ev.Hydrate
	mapped.Hydrate = &ref
	tok, err := m.d.Token.Token(ctx)
	if err != nil {
		return false, err
	}
	err = m.d.Hydrator.Hydrate(ctx, &mapped, connector.Secret{Current: map[string]string{"access_token": tok}},
		connector.API{BaseURL: m.cfg.GraphBaseURL, Client: m.d.HTTP})
	switch {
	case errors.Is(err, connector.ErrNotFound):
		return false, nil // gone since the delta: nothing to sync
	case errors.Is(err, connector.ErrUnusable):
		return true, nil // the worker decides (and records) what it cannot map
	case err != nil:
		return false, fmt.Errorf("map %s: %w", ev.Hydrate.Resource, err)
	}
	found, err := m.equivalentInLedger(ctx, &mapped)
	return !found, err
}

// equivalentInLedger searches the ledger's ByGroup index near the mapped event's time for an
// equivalent event.
func (m *Manager) equivalentInLedger(ctx context.Context, mapped *canonical.Event) (bool, error) {
	if mapped.GroupKey == "" || mapped.Activity == nil {
		return false, nil
	}
	expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("group_key").Equal(expression.Value(mapped.GroupKey)).
		And(expression.Key("occurred_at").Between(expression.Value(store.FormatTime(mapped.OccurredAt.Add(-equivalenceSpan))),
			expression.Value(store.FormatTime(mapped.OccurredAt.Add(equivalenceSpan)))))).Build()
	if err != nil {
		return false, err
	}
	in := &dynamodb.QueryInput{TableName: aws.String(m.cfg.LedgerTable), IndexName: aws.String(store.IndexByGroup),
		KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values()}
	for {
		page, err := m.d.DynamoDB.Query(ctx, in)
		if err != nil {
			return false, fmt.Errorf("query ledger: %w", err)
		}
		for _, item := range page.Items {
			var li store.LedgerItem
			if attributevalue.UnmarshalMap(item, &li) != nil {
				continue
			}
			doc, err := li.EventJSON()
			if err != nil || doc == "" {
				continue
			}
			if d, err := canonical.Unmarshal([]byte(doc)); err == nil && check.Equivalent(mapped, d) {
				return true, nil
			}
		}
		if in.ExclusiveStartKey = page.LastEvaluatedKey; len(in.ExclusiveStartKey) == 0 {
			return false, nil
		}
	}
}

// enqueue sends events to the ingest queue exactly as the webhook functions do:
// MessageDeduplicationId = sha256(key), MessageGroupId = sha256(group key), ten per batch.
func (m *Manager) enqueue(ctx context.Context, evs []canonical.Event) error {
	if len(evs) == 0 {
		return nil
	}
	if m.d.SQS == nil || m.cfg.QueueURL == "" {
		return errors.New("no ingest queue configured")
	}
	for start := 0; start < len(evs); start += 10 {
		end := min(start+10, len(evs))
		entries := make([]sqstypes.SendMessageBatchRequestEntry, 0, end-start)
		for i := start; i < end; i++ {
			body, err := evs[i].Marshal()
			if err != nil {
				return err
			}
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(body)),
				MessageDeduplicationId: aws.String(evs[i].DedupID()), MessageGroupId: aws.String(evs[i].GroupID())})
		}
		out, err := m.d.SQS.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(m.cfg.QueueURL), Entries: entries})
		if err != nil {
			return fmt.Errorf("send batch: %w", err)
		}
		if len(out.Failed) > 0 {
			return fmt.Errorf("SQS refused %d of %d events (%s)", len(out.Failed), len(entries), aws.ToString(out.Failed[0].Code))
		}
	}
	return nil
}
