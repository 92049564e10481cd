package worker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/store"
)

// ReassociateSource is the audit source of a re-association made by reconciliation.
const ReassociateSource = "reconcile"

// Reassociation says what Reassociate found and did.
type Reassociation struct {
	// ActivityID is the activity retried.
	ActivityID string `json:"activity_id"`
	// ContactID is the contact that now owns one of the activity's identities ("" when none
	// does yet).
	ContactID string `json:"contact_id,omitempty"`
	// Via is the identity that matched ("email:<addr>" or "phone:<e164>").
	Via string `json:"via,omitempty"`
	// Moved is set when the activity was moved under ContactID.
	Moved bool `json:"moved"`
	// Note explains why nothing moved, when nothing did.
	Note string `json:"note,omitempty"`
}

// Reassociate retries the association of one unassociated activity (the consistency job's
// repair): when a contact now owns one of the identities the activity carries — emails first,
// then phones, as the worker resolves a subject — the activity moves under that contact exactly
// as the worker adopts activities when a contact gains an identity: the contact link (how it
// matched), the contact's account when the activity has none, and a tombstone on the UNASSOC
// item, all in one TransactWriteItems conditioned on the items' versions, together with an audit
// entry on the contact (field "_activity", decision "reassociated", source ReassociateSource,
// event key key, reason why). Nothing is written when no contact owns an identity yet, when the
// activity was moved meanwhile, or when the contact already holds an activity with that id; a
// lost race (a condition failed) is reported as an error and a later run retries.
func (w *Worker) Reassociate(ctx context.Context, activityID, key, why string) (Reassociation, error) {
	res := Reassociation{ActivityID: activityID}
	r := reader{w: w}
	un, err := r.activity(ctx, store.PKUnassociated, activityID)
	if err != nil {
		return res, err
	}
	if un == nil || un.MovedTo != "" {
		res.Note = "not waiting unassociated"
		if un != nil {
			res.ContactID = un.MovedTo
		}
		return res, nil
	}
	idents := append([]string(nil), un.Identities...)
	sort.SliceStable(idents, func(i, j int) bool { // emails before phones, as the worker resolves a subject
		return strings.HasPrefix(idents[i], "email:") && !strings.HasPrefix(idents[j], "email:")
	})
	for _, id := range idents {
		var pk string
		switch {
		case strings.HasPrefix(id, "email:"):
			pk = store.IdentEmailPK(strings.TrimPrefix(id, "email:"))
		case strings.HasPrefix(id, "phone:"):
			pk = store.IdentPhonePK(strings.TrimPrefix(id, "phone:"))
		default:
			continue
		}
		owner, err := r.claimOwner(ctx, pk, store.SKIdent)
		if err != nil {
			return res, err
		}
		if owner != "" {
			res.ContactID, res.Via = owner, id
			break
		}
	}
	if res.ContactID == "" {
		res.Note = "no contact owns its identities yet"
		return res, nil
	}
	contact, err := r.record(ctx, store.Contact, res.ContactID)
	if err != nil {
		return res, err
	}
	if contact == nil {
		res.Note = "the identity's contact has no profile"
		return res, nil
	}
	if existing, err := r.activity(ctx, contact.PK, activityID); err != nil {
		return res, err
	} else if existing != nil {
		res.Note = "the contact already holds an activity with this id"
		return res, nil
	}
	a, err := doc(un)
	if err != nil {
		return res, err
	}
	if a == nil {
		res.Note = "the activity has no document"
		return res, nil
	}
	now := w.now()
	moved := *un
	moved.PK = contact.PK
	moved.Assoc.Contact = adoptLink(contact.ID, []string{res.Via}, un.Identities)
	if moved.Assoc.Account == nil && contact.AccountID != "" {
		moved.Assoc.Account = &association.Link{ID: contact.AccountID, Method: association.ContactAccount}
	}
	fill(&moved, a, contact.PK)
	moved.Version, moved.UpdatedAt = 1, store.FormatTime(now)
	tomb := tombstone(un, contact.ID, now)
	audit := store.AuditItem{
		PK: contact.PK, SK: store.AuditSK(now, key, "_activity"), Entity: store.Contact, RecordID: contact.ID,
		Field: "_activity", After: store.Field{Value: activityID, Source: ReassociateSource, EventKey: key, OccurredAt: store.FormatTime(now)},
		Decision: "reassociated", Rule: "consistency_reassociation", Reason: why, PolicyVersion: w.cfg.Policy.Version(),
		Source: ReassociateSource, Actor: ReassociateSource, EventKey: key, OccurredAt: store.FormatTime(now), RecordedAt: store.FormatTime(now),
	}
	var items []types.TransactWriteItem
	for _, p := range []struct {
		v    any
		cond string
		vals map[string]types.AttributeValue
	}{
		{moved, "attribute_not_exists(pk)", nil},
		{tomb.item, "#v = :v AND attribute_not_exists(moved_to)", map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(un.Version, 10)}}},
		{audit, "", nil},
	} {
		av, err := attributevalue.MarshalMap(p.v)
		if err != nil {
			return res, err
		}
		put := &types.Put{TableName: aws.String(w.cfg.CRMTable), Item: av}
		if p.cond != "" {
			put.ConditionExpression = aws.String(p.cond)
		}
		if p.vals != nil {
			put.ExpressionAttributeNames = map[string]string{"#v": "version"}
			put.ExpressionAttributeValues = p.vals
		}
		items = append(items, types.TransactWriteItem{Put: put})
	}
	if _, err := w.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items}); err != nil {
		var tce *types.TransactionCanceledException
		if errors.As(err, &tce) {
			return res, fmt.Errorf("reassociate %s: changed meanwhile, retry later: %w", activityID, err)
		}
		return res, fmt.Errorf("reassociate %s: %w", activityID, err)
	}
	res.Moved = true
	w.log.InfoContext(ctx, "activity re-associated", "activity", activityID, "contact", contact.ID, "key", key)
	return res, nil
}
