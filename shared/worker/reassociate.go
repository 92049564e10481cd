package worker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
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

// reassociate retries the association of one unassociated activity (see Worker.Reassociate).
func (o *operator) reassociate(ctx context.Context, activityID, key, why string) (Reassociation, error) {
	res := Reassociation{ActivityID: activityID}
	parked, err := o.reader.activity(ctx, store.PKUnassociated, activityID)
	if err != nil {
		return res, err
	}
	if parked == nil || parked.MovedTo != "" {
		res.Note = "not waiting unassociated"
		if parked != nil {
			res.ContactID = parked.MovedTo
		}
		return res, nil
	}
	if res.ContactID, res.Via, err = o.claimingContact(ctx, parked.Identities); err != nil {
		return res, err
	}
	if res.ContactID == "" {
		res.Note = "no contact owns its identities yet"
		return res, nil
	}
	contact, err := o.reader.record(ctx, store.Contact, res.ContactID)
	if err != nil {
		return res, err
	}
	if contact == nil {
		res.Note = "the identity's contact has no profile"
		return res, nil
	}
	if existing, err := o.reader.activity(ctx, contact.PK, activityID); err != nil {
		return res, err
	} else if existing != nil {
		res.Note = "the contact already holds an activity with this id"
		return res, nil
	}
	activity, err := decodeActivity(parked)
	if err != nil {
		return res, err
	}
	if activity == nil {
		res.Note = "the activity has no document"
		return res, nil
	}
	items, err := o.reassociationItems(res, parked, contact, activity, key, why, o.now())
	if err != nil {
		return res, err
	}
	if _, err := o.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items}); err != nil {
		var canceled *types.TransactionCanceledException
		if errors.As(err, &canceled) {
			return res, fmt.Errorf("reassociate %s: changed meanwhile, retry later: %w", activityID, err)
		}
		return res, fmt.Errorf("reassociate %s: %w", activityID, err)
	}
	res.Moved = true
	o.log.InfoContext(ctx, "activity re-associated", "activity", activityID, "contact", contact.ID, "key", key)
	return res, nil
}

// claimingContact returns the contact that claims one of an activity's identities ("kind:value")
// and the identity, trying emails before phones as the worker resolves a subject; "" when none
// is claimed.
func (o *operator) claimingContact(ctx context.Context, identityTags []string) (contactID, via string, err error) {
	ordered := append([]string(nil), identityTags...)
	sort.SliceStable(ordered, func(i, j int) bool { // emails before phones, as the worker resolves a subject
		return strings.HasPrefix(ordered[i], "email:") && !strings.HasPrefix(ordered[j], "email:")
	})
	for _, tag := range ordered {
		var pk string
		switch {
		case strings.HasPrefix(tag, "email:"):
			pk = store.IdentEmailPK(strings.TrimPrefix(tag, "email:"))
		case strings.HasPrefix(tag, "phone:"):
			pk = store.IdentPhonePK(strings.TrimPrefix(tag, "phone:"))
		default:
			continue
		}
		owner, err := o.reader.claimOwner(ctx, pk, store.SKIdent)
		if err != nil {
			return "", "", err
		}
		if owner != "" {
			return owner, tag, nil
		}
	}
	return "", "", nil
}

// reassociationItems are the writes that move a parked activity under the contact found (res):
// the activity under the contact (linked via the matched identity, with the contact's account
// when it has none), the UNASSOC item's tombstone conditioned on its version, and the audit
// entry.
func (o *operator) reassociationItems(res Reassociation, parked *store.ActivityItem, contact *store.Record,
	activity *timeline.Activity, key, why string, now time.Time) ([]types.TransactWriteItem, error) {
	moved := *parked
	moved.PK = contact.PK
	moved.Assoc.Contact = adoptLink(contact.ID, []string{res.Via}, parked.Identities)
	if moved.Assoc.Account == nil && contact.AccountID != "" {
		moved.Assoc.Account = &association.Link{ID: contact.AccountID, Method: association.ContactAccount}
	}
	fillActivityItem(&moved, activity, contact.PK)
	moved.Version, moved.UpdatedAt = 1, store.FormatTime(now)
	retired := tombstone(parked, contact.ID, now)
	entry := store.AuditItem{
		PK: contact.PK, SK: store.AuditSK(now, key, "_activity"), Entity: store.Contact, RecordID: contact.ID,
		Field: "_activity", After: store.Field{Value: res.ActivityID, Source: ReassociateSource, EventKey: key, OccurredAt: store.FormatTime(now)},
		Decision: "reassociated", Rule: "consistency_reassociation", Reason: why, PolicyVersion: o.cfg.Policy.Version(),
		Source: ReassociateSource, Actor: ReassociateSource, EventKey: key, OccurredAt: store.FormatTime(now), RecordedAt: store.FormatTime(now),
	}
	var items []types.TransactWriteItem
	for _, write := range []struct {
		value any
		cond  string
		vals  map[string]types.AttributeValue
	}{
		{moved, "attribute_not_exists(pk)", nil},
		{retired.item, "#v = :v AND attribute_not_exists(moved_to)", map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(parked.Version, 10)}}},
		{entry, "", nil},
	} {
		attrs, err := attributevalue.MarshalMap(write.value)
		if err != nil {
			return nil, err
		}
		put := &types.Put{TableName: aws.String(o.cfg.CRMTable), Item: attrs}
		if write.cond != "" {
			put.ConditionExpression = aws.String(write.cond)
		}
		if write.vals != nil {
			put.ExpressionAttributeNames = map[string]string{"#v": "version"}
			put.ExpressionAttributeValues = write.vals
		}
		items = append(items, types.TransactWriteItem{Put: put})
	}
	return items, nil
}
