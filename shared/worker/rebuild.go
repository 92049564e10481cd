package worker

import (
	"context"
	"fmt"
	"slices"
	"sort"

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
func (o *operator) rebuild(ctx context.Context, contactID string) (*Rebuilt, error) {
	rec, err := o.reader.record(ctx, store.Contact, contactID)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("contact %s: %w", contactID, ErrNotFound)
	}
	entries, err := o.contactLedger(ctx, contactID, rec.Identities)
	if err != nil {
		return nil, err
	}
	return o.fold(contactID, entries)
}

// contactLedger returns the APPLIED and NOOP ledger items recorded against a contact under one
// of its identities' group keys or its ContactGroupKey, in occurred_at order (then key).
func (o *operator) contactLedger(ctx context.Context, contactID string, identityTags []string) ([]store.LedgerItem, error) {
	seen := map[string]bool{}
	var entries []store.LedgerItem
	// "email:<addr>" and "phone:<e164>" are group keys too; changes addressed by contact id use
	// ContactGroupKey.
	for _, groupKey := range append(slices.Clone(identityTags), ContactGroupKey(contactID)) {
		expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("group_key").Equal(expression.Value(groupKey))).Build()
		if err != nil {
			return nil, err
		}
		err = o.reader.query(ctx, &dynamodb.QueryInput{
			TableName: aws.String(o.cfg.LedgerTable), IndexName: aws.String(store.IndexByGroup),
			KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
		}, 0, func(item map[string]types.AttributeValue) error {
			var entry store.LedgerItem
			if err := attributevalue.UnmarshalMap(item, &entry); err != nil {
				return err
			}
			if seen[entry.Key] || entry.ContactID != contactID || entry.Event == "" ||
				(entry.Outcome != store.Applied && entry.Outcome != store.Noop) {
				return nil
			}
			seen[entry.Key] = true
			entries = append(entries, entry)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].OccurredAt != entries[j].OccurredAt {
			return entries[i].OccurredAt < entries[j].OccurredAt
		}
		return entries[i].Key < entries[j].Key
	})
	return entries, nil
}

// fold replays ledger events, in order, through the current policy and the timeline merge.
func (o *operator) fold(contactID string, entries []store.LedgerItem) (*Rebuilt, error) {
	out := &Rebuilt{ContactID: contactID, Fields: map[string]store.Field{}}
	fields := decide.Record{}
	activities := map[string]*timeline.Activity{}
	for _, entry := range entries {
		ev, err := canonical.Unmarshal([]byte(entry.Event))
		if err != nil {
			return nil, fmt.Errorf("ledger %s: %w", entry.Key, err)
		}
		if prop := proposal(ev, store.Contact); !empty(prop) {
			fields = decide.Apply(fields, decide.Decide(o.cfg.Policy, store.Contact, fields, prop))
		}
		if ev.Activity != nil && ev.Activity.ID != "" {
			merged := timeline.Merge(activities[ev.Activity.ID], ev)
			activities[ev.Activity.ID] = &merged
		}
		out.Events = append(out.Events, entry.Key)
	}
	for field, value := range fields {
		out.Fields[field] = store.FieldFrom(value)
	}
	for _, activity := range activities {
		out.Activities = append(out.Activities, *activity)
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
