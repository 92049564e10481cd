package worker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/decide"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// ContactGroupKey is the group key of events addressed to a contact by id (ExternalIDs
// ContactIDKey) rather than by one of its identities.
func ContactGroupKey(contactID string) string { return "contact:" + contactID }

// Rebuilt is a contact recomputed from the ledger.
type Rebuilt struct {
	// ContactID is the contact rebuilt.
	ContactID string `json:"contact_id"`
	// Fields are the recomputed fields with provenance.
	Fields map[string]store.Field `json:"fields"`
	// Activities are the recomputed timeline, by first occurrence.
	Activities []timeline.Activity `json:"activities"`
	// Events are the keys of the ledger events folded, in the order they were applied.
	Events []string `json:"events"`
}

// rebuild recomputes a contact from the ledger (see Worker.Rebuild).
//
// What to fold is found through strongly consistent reads, never through an index that may lag:
// the contact's partition lists its activities (each naming its log, which lists every event
// merged into it, wherever the activity was then — parked, adopted, re-associated) and its audit
// trail (every event whose decision on the contact was not a noop, forced re-runs included).
// The ByGroup index only adds candidates. Each candidate's ledger item is then read
// consistently. Fields are folded in the order the worker decided them (store.Application);
// activities merge all their events (timeline.Merge is a join, so order does not matter).
func (o *operator) rebuild(ctx context.Context, contactID string) (*Rebuilt, error) {
	rec, err := o.reader.record(ctx, store.Contact, contactID)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("contact %s: %w", contactID, ErrNotFound)
	}
	part, err := o.contactPartition(ctx, contactID)
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	for _, key := range part.auditKeys {
		keys[key] = true
	}
	activityKeys := make([][]string, len(part.activities))
	for i, item := range part.activities {
		if activityKeys[i], err = o.activityEventKeys(ctx, item); err != nil {
			return nil, err
		}
		for _, key := range activityKeys[i] {
			keys[key] = true
		}
	}
	indexed, err := o.contactLedgerKeys(ctx, contactID, rec.Identities)
	if err != nil {
		return nil, err
	}
	for _, key := range indexed {
		keys[key] = true
	}
	ledger, err := o.ledgerItems(ctx, slices.Sorted(maps.Keys(keys)))
	if err != nil {
		return nil, err
	}
	return o.fold(contactID, part.activities, activityKeys, ledger)
}

// contactPartition is what rebuild reads of a contact's partition.
type contactPartition struct {
	activities []*store.ActivityItem
	auditKeys  []string
}

// contactPartition reads a contact's activities and the event keys of its audit trail
// (strongly consistent).
func (o *operator) contactPartition(ctx context.Context, contactID string) (*contactPartition, error) {
	expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("pk").Equal(expression.Value(store.PK(store.Contact, contactID)))).Build()
	if err != nil {
		return nil, err
	}
	out := &contactPartition{}
	err = o.reader.query(ctx, &dynamodb.QueryInput{
		TableName: aws.String(o.cfg.CRMTable), ConsistentRead: aws.Bool(true),
		KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
	}, 0, func(item map[string]types.AttributeValue) error {
		sk, _ := item["sk"].(*types.AttributeValueMemberS)
		switch {
		case sk == nil:
		case strings.HasPrefix(sk.Value, store.PrefixActivity):
			var activity store.ActivityItem
			if err := attributevalue.UnmarshalMap(item, &activity); err != nil {
				return err
			}
			out.activities = append(out.activities, &activity)
		case strings.HasPrefix(sk.Value, store.PrefixAudit):
			if key, ok := item["event_key"].(*types.AttributeValueMemberS); ok && key.Value != "" {
				out.auditKeys = append(out.auditKeys, key.Value)
			}
		}
		return nil
	})
	return out, err
}

// activityEventKeys lists the keys of every event merged into an activity: its log (strongly
// consistent), plus the entries of its document (all of them for activities stored before logs
// existed).
func (o *operator) activityEventKeys(ctx context.Context, item *store.ActivityItem) ([]string, error) {
	keys := map[string]bool{}
	if activity, err := decodeActivity(item); err != nil {
		return nil, err
	} else if activity != nil {
		for _, entry := range activity.Entries {
			keys[entry.Key] = true
		}
	}
	if item.Log != "" {
		expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("pk").Equal(expression.Value(item.Log))).
			WithProjection(expression.NamesList(expression.Name("sk"))).Build()
		if err != nil {
			return nil, err
		}
		err = o.reader.query(ctx, &dynamodb.QueryInput{
			TableName: aws.String(o.cfg.CRMTable), ConsistentRead: aws.Bool(true), ProjectionExpression: expr.Projection(),
			KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
		}, 0, func(entry map[string]types.AttributeValue) error {
			if sk, ok := entry["sk"].(*types.AttributeValueMemberS); ok {
				keys[sk.Value] = true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return slices.Sorted(maps.Keys(keys)), nil
}

// contactLedgerKeys lists the keys the ByGroup index holds under the contact's identities'
// group keys or its ContactGroupKey. The index is eventually consistent: these are only extra
// candidates (events recorded before activity logs and application orders existed).
func (o *operator) contactLedgerKeys(ctx context.Context, contactID string, identityTags []string) ([]string, error) {
	var keys []string
	// "email:<addr>" and "phone:<e164>" are group keys too; changes addressed by contact id use
	// ContactGroupKey.
	for _, groupKey := range append(slices.Clone(identityTags), ContactGroupKey(contactID)) {
		expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("group_key").Equal(expression.Value(groupKey))).
			WithProjection(expression.NamesList(expression.Name("pk"), expression.Name("contact_id"))).Build()
		if err != nil {
			return nil, err
		}
		err = o.reader.query(ctx, &dynamodb.QueryInput{
			TableName: aws.String(o.cfg.LedgerTable), IndexName: aws.String(store.IndexByGroup), ProjectionExpression: expr.Projection(),
			KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
		}, 0, func(item map[string]types.AttributeValue) error {
			owner, _ := item["contact_id"].(*types.AttributeValueMemberS)
			if key, ok := item["pk"].(*types.AttributeValueMemberS); ok && owner != nil && owner.Value == contactID {
				keys = append(keys, key.Value)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// batchGetter is the part of *dynamodb.Client that reads up to 100 items at once.
type batchGetter interface {
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
}

// ledgerItems reads the ledger items of keys (strongly consistent), by key; absent keys (an
// audit entry of a rebuild or a re-association) are left out.
func (o *operator) ledgerItems(ctx context.Context, keys []string) (map[string]*store.LedgerItem, error) {
	out := make(map[string]*store.LedgerItem, len(keys))
	batch := o.batch
	if batch == nil {
		for _, key := range keys {
			item, err := o.getLedger(ctx, key)
			if err != nil {
				return nil, err
			}
			if item != nil {
				out[key] = item
			}
		}
		return out, nil
	}
	for start := 0; start < len(keys); start += 100 {
		pending := map[string]types.KeysAndAttributes{o.cfg.LedgerTable: {ConsistentRead: aws.Bool(true)}}
		for _, key := range keys[start:min(start+100, len(keys))] {
			request := pending[o.cfg.LedgerTable]
			request.Keys = append(request.Keys, map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: key}})
			pending[o.cfg.LedgerTable] = request
		}
		for attempt := 0; len(pending) > 0 && len(pending[o.cfg.LedgerTable].Keys) > 0; attempt++ {
			if attempt > 0 {
				if err := o.sleep(ctx, backoff(min(attempt, 6))); err != nil {
					return nil, err
				}
			}
			got, err := batch.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: pending})
			if err != nil {
				return nil, fmt.Errorf("read ledger: %w", err)
			}
			for _, item := range got.Responses[o.cfg.LedgerTable] {
				var ledger store.LedgerItem
				if err := attributevalue.UnmarshalMap(item, &ledger); err != nil {
					return nil, fmt.Errorf("decode ledger item: %w", err)
				}
				out[ledger.Key] = &ledger
			}
			pending = got.UnprocessedKeys
		}
	}
	return out, nil
}

// application is one decision of a ledger event against the contact being rebuilt.
type application struct {
	entry   *store.LedgerItem
	ev      *canonical.Event
	version int64 // -1: recorded before application orders existed (ordered by occurred_at)
	wrote   bool
	at      string
}

// applications lists the decisions against contactID recorded on the ledger items, in the
// order the worker made them: by the contact version each read, the events that did not write
// the record before the one that did (it moved the record to the next version), then by time
// and key. Items recorded before application orders existed come first, by occurred_at.
func applications(contactID string, ledger map[string]*store.LedgerItem, events map[string]*canonical.Event) []application {
	var out []application
	for key, entry := range ledger {
		ev := events[key]
		if ev == nil || (entry.Outcome != store.Applied && entry.Outcome != store.Noop) {
			continue
		}
		if len(entry.Applications) == 0 {
			if entry.ContactID == contactID {
				out = append(out, application{entry: entry, ev: ev, version: -1, at: entry.OccurredAt})
			}
			continue
		}
		for _, applied := range entry.Applications {
			if applied.ContactID == contactID {
				out = append(out, application{entry: entry, ev: ev, version: applied.Version, wrote: applied.Wrote, at: applied.At})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.version != b.version {
			return a.version < b.version
		}
		if a.wrote != b.wrote {
			return !a.wrote
		}
		if a.at != b.at {
			return a.at < b.at
		}
		return a.entry.Key < b.entry.Key
	})
	return out
}

// fold replays the ledger through the current policy and the timeline merge: the contact's
// fields by its applications, in order, and each of its activities (activityKeys[i] are the
// events of activities[i]) from all of its events.
func (o *operator) fold(contactID string, activities []*store.ActivityItem, activityKeys [][]string, ledger map[string]*store.LedgerItem) (*Rebuilt, error) {
	out := &Rebuilt{ContactID: contactID, Fields: map[string]store.Field{}, Activities: []timeline.Activity{}}
	events := make(map[string]*canonical.Event, len(ledger))
	for key, entry := range ledger {
		doc, err := entry.EventJSON()
		if err != nil {
			return nil, fmt.Errorf("ledger %s: %w", entry.Key, err)
		}
		if doc == "" {
			continue
		}
		ev, err := canonical.Unmarshal([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("ledger %s: %w", entry.Key, err)
		}
		events[key] = ev
	}
	fields := decide.Record{}
	for _, applied := range applications(contactID, ledger, events) {
		if prop := proposal(applied.ev, store.Contact); !empty(prop) {
			fields = decide.Apply(fields, decide.Decide(o.cfg.Policy, store.Contact, fields, prop))
		}
		out.Events = append(out.Events, applied.entry.Key)
	}
	for field, value := range fields {
		out.Fields[field] = store.FieldFrom(value)
	}
	for i, item := range activities {
		var merged *timeline.Activity
		for _, key := range activityKeys[i] {
			ev := events[key]
			if ev == nil || ev.Activity == nil || ev.Activity.ID != item.ActivityID {
				continue
			}
			next := timeline.Merge(merged, ev)
			merged = &next
		}
		if merged != nil {
			out.Activities = append(out.Activities, *merged)
		}
	}
	sortActivities(out.Activities)
	return out, nil
}

// sortActivities orders activities by first occurrence, then id.
func sortActivities(activities []timeline.Activity) {
	sort.Slice(activities, func(i, j int) bool {
		if !activities[i].FirstAt.Equal(activities[j].FirstAt) {
			return activities[i].FirstAt.Before(activities[j].FirstAt)
		}
		return activities[i].ID < activities[j].ID
	})
}
