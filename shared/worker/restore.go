package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// FieldDiff is one field whose stored value differs from the value rebuilt from the ledger.
type FieldDiff struct {
	// Field is the field's name.
	Field string `json:"field"`
	// Stored is the field as stored.
	Stored store.Field `json:"stored"`
	// Rebuilt is the field as rebuilt from the ledger.
	Rebuilt store.Field `json:"rebuilt"`
}

// ActivityDiff is one timeline entry whose stored content differs from the rebuilt one.
type ActivityDiff struct {
	// ActivityID is the activity's id.
	ActivityID string `json:"activity_id"`
	// Stored is the stored activity's status, or "(missing)".
	Stored string `json:"stored"`
	// Rebuilt is the rebuilt activity's status.
	Rebuilt string `json:"rebuilt"`
}

// RebuildDiff is what a rebuild would change.
type RebuildDiff struct {
	// ContactID is the contact compared.
	ContactID string `json:"contact_id"`
	// Fields are the fields that differ, by name.
	Fields []FieldDiff `json:"fields"`
	// Activities are the timeline entries that differ.
	Activities []ActivityDiff `json:"activities"`
}

// Empty reports whether the stored record already matches the ledger.
func (d *RebuildDiff) Empty() bool { return len(d.Fields) == 0 && len(d.Activities) == 0 }

// notRebuilt is ActivityDiff.Rebuilt for a stored activity the ledger does not rebuild.
const notRebuilt = "(not in the ledger)"

// ErrStaleRebuild reports that the record changed between the diff and the write; run the rebuild
// again.
var ErrStaleRebuild = errors.New("record changed while rebuilding; run the rebuild again")

// diffRebuild compares a rebuilt contact with what is stored (see Worker.DiffRebuild).
func (o *operator) diffRebuild(ctx context.Context, rebuilt *Rebuilt) (*RebuildDiff, error) {
	rec, err := o.reader.record(ctx, store.Contact, rebuilt.ContactID)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("contact %s: %w", rebuilt.ContactID, ErrNotFound)
	}
	diff := &RebuildDiff{ContactID: rebuilt.ContactID, Fields: diffFields(rec, rebuilt), Activities: []ActivityDiff{}}
	pk := store.PK(store.Contact, rebuilt.ContactID)
	for i := range rebuilt.Activities {
		want := rebuilt.Activities[i]
		item, err := o.reader.activity(ctx, pk, want.ID)
		if err != nil {
			return nil, err
		}
		if item == nil {
			diff.Activities = append(diff.Activities, ActivityDiff{ActivityID: want.ID, Stored: "(missing)", Rebuilt: want.Status})
			continue
		}
		stored, err := decodeActivity(item)
		if err != nil {
			return nil, err
		}
		if !timeline.Equal(*stored, want) {
			diff.Activities = append(diff.Activities, ActivityDiff{ActivityID: want.ID, Stored: stored.Status, Rebuilt: want.Status})
		}
	}
	// A stored activity the ledger does not rebuild differs too (it is reported, not removed).
	part, err := o.contactPartition(ctx, rebuilt.ContactID)
	if err != nil {
		return nil, err
	}
	for _, item := range part.activities {
		if !slices.ContainsFunc(rebuilt.Activities, func(a timeline.Activity) bool { return a.ID == item.ActivityID }) {
			diff.Activities = append(diff.Activities, ActivityDiff{ActivityID: item.ActivityID, Stored: item.Status, Rebuilt: notRebuilt})
		}
	}
	return diff, nil
}

// diffFields lists the fields whose value or lock differs between the record and the rebuilt
// contact, by name.
func diffFields(rec *store.Record, rebuilt *Rebuilt) []FieldDiff {
	diffs := []FieldDiff{}
	names := map[string]bool{}
	for field := range rebuilt.Fields {
		names[field] = true
	}
	for field := range rec.Fields {
		names[field] = true
	}
	for field := range names {
		if rec.Fields[field].Value != rebuilt.Fields[field].Value || rec.Fields[field].LockedBy != rebuilt.Fields[field].LockedBy {
			diffs = append(diffs, FieldDiff{Field: field, Stored: rec.Fields[field], Rebuilt: rebuilt.Fields[field]})
		}
	}
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].Field < diffs[j].Field })
	return diffs
}

// writeRebuild restores a contact to its rebuilt state in one transaction (see
// Worker.WriteRebuild).
func (o *operator) writeRebuild(ctx context.Context, rebuilt *Rebuilt, by, why string) (*RebuildDiff, error) {
	diff, err := o.diffRebuild(ctx, rebuilt)
	if err != nil || diff.Empty() {
		return diff, err
	}
	rec, err := o.reader.record(ctx, store.Contact, rebuilt.ContactID)
	if err != nil || rec == nil {
		return nil, fmt.Errorf("contact %s: %w", rebuilt.ContactID, ErrNotFound)
	}
	now := o.now()
	items, err := o.restoreRecord(rec, diff, now, by, why)
	if err != nil {
		return nil, err
	}
	activityItems, err := o.restoreActivities(ctx, rebuilt, diff, now)
	if err != nil {
		return nil, err
	}
	items = append(items, activityItems...)
	if len(items) > MaxTransactItems {
		return nil, fmt.Errorf("rebuild of %s needs %d writes, more than one transaction holds", rebuilt.ContactID, len(items))
	}
	if _, err := o.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items}); err != nil {
		if _, conflict := cancellation(err); conflict {
			return nil, ErrStaleRebuild
		}
		return nil, fmt.Errorf("write rebuild of %s: %w", rebuilt.ContactID, err)
	}
	summary, _ := json.Marshal(map[string]any{"contact": rebuilt.ContactID, "fields": len(diff.Fields), "activities": len(diff.Activities)})
	o.log.InfoContext(ctx, "contact rebuilt", "summary", string(summary), "by", by)
	return diff, nil
}

// restoreRecord sets the record's differing fields to their rebuilt values and returns an audit
// Put per restored field (decision "rebuild") followed by the record's Put, conditioned on its
// version.
func (o *operator) restoreRecord(rec *store.Record, diff *RebuildDiff, now time.Time, by, why string) ([]types.TransactWriteItem, error) {
	prev := rec.Version
	var items []types.TransactWriteItem
	for _, field := range diff.Fields {
		if field.Rebuilt.Value == "" && field.Rebuilt.LockedBy == "" {
			delete(rec.Fields, field.Field)
		} else {
			rec.Fields[field.Field] = field.Rebuilt
		}
		entry := store.AuditItem{PK: rec.PK, SK: store.AuditSK(now, "rebuild:"+strconv.FormatInt(now.UnixNano(), 36), field.Field),
			Entity: rec.Entity, RecordID: rec.ID, Field: field.Field, Before: field.Stored, After: field.Rebuilt,
			Decision: "rebuild", Rule: "rebuild", Reason: why, PolicyVersion: o.cfg.Policy.Version(), Source: "crmsync-rebuild",
			Actor: by, EventKey: field.Rebuilt.EventKey, OccurredAt: store.FormatTime(now), RecordedAt: store.FormatTime(now),
			RerunBy: by, RerunWhy: why}
		attrs, err := attributevalue.MarshalMap(entry)
		if err != nil {
			return nil, err
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(o.cfg.CRMTable), Item: attrs}})
	}
	rec.Version = prev + 1
	rec.UpdatedAt = store.FormatTime(now)
	stored, err := rec.Stored()
	if err != nil {
		return nil, err
	}
	recordAttrs, err := attributevalue.MarshalMap(stored)
	if err != nil {
		return nil, err
	}
	items = append(items, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(o.cfg.CRMTable), Item: recordAttrs,
		ConditionExpression:       aws.String("version = :v"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(prev, 10)}}}})
	return items, nil
}

// restoreActivities returns a Put per differing timeline entry holding its rebuilt activity,
// conditioned on the stored item's version (or its absence).
func (o *operator) restoreActivities(ctx context.Context, rebuilt *Rebuilt, diff *RebuildDiff, now time.Time) ([]types.TransactWriteItem, error) {
	pk := store.PK(store.Contact, rebuilt.ContactID)
	var items []types.TransactWriteItem
	for _, activityDiff := range diff.Activities {
		if activityDiff.Rebuilt == notRebuilt {
			continue // nothing to restore it to; left as it is
		}
		var activity *timeline.Activity
		for i := range rebuilt.Activities {
			if rebuilt.Activities[i].ID == activityDiff.ActivityID {
				activity = &rebuilt.Activities[i]
			}
		}
		item, err := o.reader.activity(ctx, pk, activityDiff.ActivityID)
		if err != nil {
			return nil, err
		}
		cond := "attribute_not_exists(pk)"
		vals := map[string]types.AttributeValue(nil)
		if item == nil {
			item = &store.ActivityItem{PK: pk, SK: store.ActivitySK(activityDiff.ActivityID), ActivityID: activityDiff.ActivityID}
		} else {
			cond = "version = :v"
			vals = map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(item.Version, 10)}}
		}
		fillActivityItem(item, activity, pk)
		item.Version++
		item.UpdatedAt = store.FormatTime(now)
		attrs, err := attributevalue.MarshalMap(item)
		if err != nil {
			return nil, err
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(o.cfg.CRMTable), Item: attrs,
			ConditionExpression: aws.String(cond), ExpressionAttributeValues: vals}})
	}
	return items, nil
}
