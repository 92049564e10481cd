package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/decide"
	"github.com/crmsync/crmsync/shared/identity"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// ContactGroupKey is the group key of events addressed to a contact by id (ExternalIDs
// ContactIDKey) rather than by one of its identities.
func ContactGroupKey(contactID string) string { return "contact:" + contactID }

// ErrNotFound reports that a contact or ledger item does not exist.
var ErrNotFound = errors.New("not found")

// Replay re-applies an event already in the ledger — a forced re-run — recording who asked and
// why in the ledger item's reruns and in the audit trail. The decisions are those the current
// policy makes for the stored (hydrated) event against the current records; an event whose
// effects are all present changes nothing but the ledger and the rerun audit entry.
func (w *Worker) Replay(ctx context.Context, key, by, why string) (Result, error) {
	if strings.TrimSpace(by) == "" || strings.TrimSpace(why) == "" {
		return Result{Key: key}, errors.New("replay: who and why are required")
	}
	led, err := w.getLedger(ctx, key)
	if err != nil {
		return Result{Key: key}, err
	}
	if led == nil {
		return Result{Key: key}, fmt.Errorf("replay %s: %w", key, ErrNotFound)
	}
	if led.Event == "" {
		return Result{Key: key}, fmt.Errorf("replay %s: the ledger holds no event (outcome %s)", key, led.Outcome)
	}
	ev, err := canonical.Unmarshal([]byte(led.Event))
	if err != nil {
		return Result{Key: key}, fmt.Errorf("replay %s: stored event: %w", key, err)
	}
	res, err := w.apply(ctx, ev, &rerun{by: by, why: why})
	if err == nil {
		w.log.InfoContext(ctx, "forced re-run", "key", key, "by", by, "outcome", res.Outcome)
	}
	return res, err
}

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

// Rebuild recomputes a contact's fields and timeline from the ledger: every APPLIED or NOOP event
// recorded against the contact under one of its identities' group keys (ByGroup index), folded
// in occurred_at order (then key) through the current policy and the timeline merge. It writes
// nothing; the caller compares or writes the result.
func (w *Worker) Rebuild(ctx context.Context, contactID string) (*Rebuilt, error) {
	r := reader{w: w}
	rec, err := r.record(ctx, store.Contact, contactID)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("contact %s: %w", contactID, ErrNotFound)
	}
	seen := map[string]bool{}
	var items []store.LedgerItem
	// "email:<addr>" and "phone:<e164>" are group keys too; changes addressed by contact id use
	// ContactGroupKey.
	for _, gk := range append(slices.Clone(rec.Identities), ContactGroupKey(contactID)) {
		expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("group_key").Equal(expression.Value(gk))).Build()
		if err != nil {
			return nil, err
		}
		err = r.query(ctx, &dynamodb.QueryInput{
			TableName: aws.String(w.cfg.LedgerTable), IndexName: aws.String(store.IndexByGroup),
			KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
		}, 0, func(item map[string]types.AttributeValue) error {
			var it store.LedgerItem
			if err := attributevalue.UnmarshalMap(item, &it); err != nil {
				return err
			}
			if seen[it.Key] || it.ContactID != contactID || it.Event == "" ||
				(it.Outcome != store.Applied && it.Outcome != store.Noop) {
				return nil
			}
			seen[it.Key] = true
			items = append(items, it)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].OccurredAt != items[j].OccurredAt {
			return items[i].OccurredAt < items[j].OccurredAt
		}
		return items[i].Key < items[j].Key
	})
	out := &Rebuilt{ContactID: contactID, Fields: map[string]store.Field{}}
	fields := decide.Record{}
	acts := map[string]*timeline.Activity{}
	for _, it := range items {
		ev, err := canonical.Unmarshal([]byte(it.Event))
		if err != nil {
			return nil, fmt.Errorf("ledger %s: %w", it.Key, err)
		}
		if prop := proposal(ev, store.Contact); !empty(prop) {
			fields = decide.Apply(fields, decide.Decide(w.cfg.Policy, store.Contact, fields, prop))
		}
		if ev.Activity != nil && ev.Activity.ID != "" {
			m := timeline.Merge(acts[ev.Activity.ID], ev)
			acts[ev.Activity.ID] = &m
		}
		out.Events = append(out.Events, it.Key)
	}
	for f, pv := range fields {
		out.Fields[f] = store.FieldFrom(pv)
	}
	for _, a := range acts {
		out.Activities = append(out.Activities, *a)
	}
	sortActivities(out.Activities)
	return out, nil
}

func sortActivities(as []timeline.Activity) {
	sort.Slice(as, func(i, j int) bool {
		if !as[i].FirstAt.Equal(as[j].FirstAt) {
			return as[i].FirstAt.Before(as[j].FirstAt)
		}
		return as[i].ID < as[j].ID
	})
}

// ContactQuery names a contact by one of email, phone or id.
type ContactQuery struct {
	// Email is any of the contact's email addresses.
	Email string
	// Phone is any of the contact's phone numbers (any format identity.Phone accepts).
	Phone string
	// ID is the contact id.
	ID string
}

// TimelineEntry is one activity of a contact's timeline with its associations.
type TimelineEntry struct {
	// Activity is the merged activity.
	Activity timeline.Activity `json:"activity"`
	// Assoc says which contact, account and deal it is linked to, and how.
	Assoc association.Result `json:"associations"`
}

// ContactView is everything `crmsync contact get` shows.
type ContactView struct {
	// Contact is the record, each field with its provenance.
	Contact *store.Record `json:"contact"`
	// Timeline is the contact's activities by first occurrence.
	Timeline []TimelineEntry `json:"timeline"`
	// Audit is the contact's audit trail, oldest first.
	Audit []store.AuditItem `json:"audit"`
}

// ResolveContact returns the id of the contact a query names.
func (w *Worker) ResolveContact(ctx context.Context, q ContactQuery) (string, error) {
	r := reader{w: w}
	var pk string
	switch {
	case q.ID != "":
		return q.ID, nil
	case q.Email != "":
		e, ok := identity.Email(q.Email)
		if !ok {
			return "", fmt.Errorf("not an email address: %q", q.Email)
		}
		pk = store.IdentEmailPK(e)
	case q.Phone != "":
		p, ok := identity.Phone(q.Phone)
		if !ok {
			return "", fmt.Errorf("not a phone number: %q", q.Phone)
		}
		pk = store.IdentPhonePK(p)
	default:
		return "", errors.New("give an email, a phone or an id")
	}
	id, err := r.claimOwner(ctx, pk, store.SKIdent)
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", fmt.Errorf("contact: %w", ErrNotFound)
	}
	return id, nil
}

// GetContact returns a contact's record with per-field provenance, its timeline with
// associations, and its audit trail (strongly consistent reads of the contact's partition).
func (w *Worker) GetContact(ctx context.Context, q ContactQuery) (*ContactView, error) {
	id, err := w.ResolveContact(ctx, q)
	if err != nil {
		return nil, err
	}
	r := reader{w: w}
	expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("pk").Equal(expression.Value(store.PK(store.Contact, id)))).Build()
	if err != nil {
		return nil, err
	}
	view := &ContactView{}
	err = r.query(ctx, &dynamodb.QueryInput{
		TableName: aws.String(w.cfg.CRMTable), ConsistentRead: aws.Bool(true),
		KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
	}, 0, func(item map[string]types.AttributeValue) error {
		sk := ""
		if v, ok := item["sk"].(*types.AttributeValueMemberS); ok {
			sk = v.Value
		}
		switch {
		case sk == store.SKProfile:
			var rec store.Record
			if err := attributevalue.UnmarshalMap(item, &rec); err != nil {
				return err
			}
			view.Contact = &rec
		case strings.HasPrefix(sk, store.PrefixActivity):
			var it store.ActivityItem
			if err := attributevalue.UnmarshalMap(item, &it); err != nil {
				return err
			}
			a, err := doc(&it)
			if err != nil || a == nil {
				return err
			}
			view.Timeline = append(view.Timeline, TimelineEntry{Activity: *a, Assoc: it.Assoc})
		case strings.HasPrefix(sk, store.PrefixAudit):
			var a store.AuditItem
			if err := attributevalue.UnmarshalMap(item, &a); err != nil {
				return err
			}
			view.Audit = append(view.Audit, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if view.Contact == nil {
		return nil, fmt.Errorf("contact %s: %w", id, ErrNotFound)
	}
	sort.SliceStable(view.Timeline, func(i, j int) bool {
		a, b := view.Timeline[i].Activity, view.Timeline[j].Activity
		if !a.FirstAt.Equal(b.FirstAt) {
			return a.FirstAt.Before(b.FirstAt)
		}
		return a.ID < b.ID
	})
	return view, nil
}
