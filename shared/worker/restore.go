package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// FieldDiff is one field whose stored value differs from the value rebuilt from the ledger.
type FieldDiff struct {
	Field   string      `json:"field"`
	Stored  store.Field `json:"stored"`
	Rebuilt store.Field `json:"rebuilt"`
}

// ActivityDiff is one timeline entry whose stored content differs from the rebuilt one.
type ActivityDiff struct {
	ActivityID string `json:"activity_id"`
	Stored     string `json:"stored"`  // status, or "(missing)"
	Rebuilt    string `json:"rebuilt"` // status
}

// RebuildDiff is what a rebuild would change.
type RebuildDiff struct {
	ContactID  string         `json:"contact_id"`
	Fields     []FieldDiff    `json:"fields"`
	Activities []ActivityDiff `json:"activities"`
}

// Empty reports whether the stored record already matches the ledger.
func (d *RebuildDiff) Empty() bool { return len(d.Fields) == 0 && len(d.Activities) == 0 }

// DiffRebuild compares a rebuilt contact with what is stored.
func (w *Worker) DiffRebuild(ctx context.Context, rb *Rebuilt) (*RebuildDiff, error) {
	r := reader{w: w}
	rec, err := r.record(ctx, store.Contact, rb.ContactID)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("contact %s: %w", rb.ContactID, ErrNotFound)
	}
	d := &RebuildDiff{ContactID: rb.ContactID, Fields: []FieldDiff{}, Activities: []ActivityDiff{}}
	names := map[string]bool{}
	for f := range rb.Fields {
		names[f] = true
	}
	for f := range rec.Fields {
		names[f] = true
	}
	for f := range names {
		if rec.Fields[f].Value != rb.Fields[f].Value || rec.Fields[f].LockedBy != rb.Fields[f].LockedBy {
			d.Fields = append(d.Fields, FieldDiff{Field: f, Stored: rec.Fields[f], Rebuilt: rb.Fields[f]})
		}
	}
	sort.Slice(d.Fields, func(i, j int) bool { return d.Fields[i].Field < d.Fields[j].Field })
	pk := store.PK(store.Contact, rb.ContactID)
	for i := range rb.Activities {
		a := rb.Activities[i]
		it, err := r.activity(ctx, pk, a.ID)
		if err != nil {
			return nil, err
		}
		if it == nil {
			d.Activities = append(d.Activities, ActivityDiff{ActivityID: a.ID, Stored: "(missing)", Rebuilt: a.Status})
			continue
		}
		stored, err := doc(it)
		if err != nil {
			return nil, err
		}
		if !timeline.Equal(*stored, a) {
			d.Activities = append(d.Activities, ActivityDiff{ActivityID: a.ID, Stored: stored.Status, Rebuilt: a.Status})
		}
	}
	return d, nil
}

// ErrStaleRebuild reports that the record changed between the diff and the write; run the rebuild
// again.
var ErrStaleRebuild = errors.New("record changed while rebuilding; run the rebuild again")

// WriteRebuild restores a contact to its rebuilt state in one transaction: the record (conditioned
// on its version), every differing timeline entry, and an audit entry per restored field with
// decision "rebuild", who ran it and why.
func (w *Worker) WriteRebuild(ctx context.Context, rb *Rebuilt, by, why string) (*RebuildDiff, error) {
	d, err := w.DiffRebuild(ctx, rb)
	if err != nil || d.Empty() {
		return d, err
	}
	r := reader{w: w}
	rec, err := r.record(ctx, store.Contact, rb.ContactID)
	if err != nil || rec == nil {
		return nil, fmt.Errorf("contact %s: %w", rb.ContactID, ErrNotFound)
	}
	now := w.now()
	prev := rec.Version
	var items []types.TransactWriteItem
	for _, fd := range d.Fields {
		if fd.Rebuilt.Value == "" && fd.Rebuilt.LockedBy == "" {
			delete(rec.Fields, fd.Field)
		} else {
			rec.Fields[fd.Field] = fd.Rebuilt
		}
		a := store.AuditItem{PK: rec.PK, SK: store.AuditSK(now, "rebuild:"+strconv.FormatInt(now.UnixNano(), 36), fd.Field),
			Entity: rec.Entity, RecordID: rec.ID, Field: fd.Field, Before: fd.Stored, After: fd.Rebuilt,
			Decision: "rebuild", Rule: "rebuild", Reason: why, PolicyVersion: w.cfg.Policy.Version(), Source: "crmsync-rebuild",
			Actor: by, EventKey: fd.Rebuilt.EventKey, OccurredAt: store.FormatTime(now), RecordedAt: store.FormatTime(now),
			RerunBy: by, RerunWhy: why}
		av, err := attributevalue.MarshalMap(a)
		if err != nil {
			return nil, err
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(w.cfg.CRMTable), Item: av}})
	}
	rec.Version = prev + 1
	rec.UpdatedAt = store.FormatTime(now)
	rec.ChangeDay = now.UTC().Format("2006-01-02")
	recAV, err := attributevalue.MarshalMap(rec)
	if err != nil {
		return nil, err
	}
	items = append(items, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(w.cfg.CRMTable), Item: recAV,
		ConditionExpression:       aws.String("version = :v"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(prev, 10)}}}})
	pk := store.PK(store.Contact, rb.ContactID)
	for _, ad := range d.Activities {
		var act *timeline.Activity
		for i := range rb.Activities {
			if rb.Activities[i].ID == ad.ActivityID {
				act = &rb.Activities[i]
			}
		}
		it, err := r.activity(ctx, pk, ad.ActivityID)
		if err != nil {
			return nil, err
		}
		cond := "attribute_not_exists(pk)"
		vals := map[string]types.AttributeValue(nil)
		if it == nil {
			it = &store.ActivityItem{PK: pk, SK: store.ActivitySK(ad.ActivityID), ActivityID: ad.ActivityID}
		} else {
			cond = "version = :v"
			vals = map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(it.Version, 10)}}
		}
		fill(it, act, pk)
		it.Version++
		it.UpdatedAt = store.FormatTime(now)
		av, err := attributevalue.MarshalMap(it)
		if err != nil {
			return nil, err
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{TableName: aws.String(w.cfg.CRMTable), Item: av,
			ConditionExpression: aws.String(cond), ExpressionAttributeValues: vals}})
	}
	if len(items) > MaxTransactItems {
		return nil, fmt.Errorf("rebuild of %s needs %d writes, more than one transaction holds", rb.ContactID, len(items))
	}
	if _, err := w.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items}); err != nil {
		if _, conflict := cancellation(err); conflict {
			return nil, ErrStaleRebuild
		}
		return nil, fmt.Errorf("write rebuild of %s: %w", rb.ContactID, err)
	}
	b, _ := json.Marshal(map[string]any{"contact": rb.ContactID, "fields": len(d.Fields), "activities": len(d.Activities)})
	w.log.InfoContext(ctx, "contact rebuilt", "summary", string(b), "by", by)
	return d, nil
}
