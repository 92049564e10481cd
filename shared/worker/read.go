package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/identity"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// reader owns the worker's CRM table reads (strongly consistent where the key is known), and
// reading a contact back: ResolveContact and GetContact.
type reader struct {
	*deps
	// ahead holds the CRM items one plan read ahead (prefetch), by item key; a nil item was
	// read absent. nil outside a plan.
	ahead map[string]map[string]types.AttributeValue
}

// planning returns a reader for one plan attempt: what it reads ahead serves that attempt's
// reads only, so a re-plan after a canceled transaction reads afresh.
func (r reader) planning() reader {
	r.ahead = map[string]map[string]types.AttributeValue{}
	return r
}

// aheadKey is an item key in reader.ahead.
func aheadKey(pk, sk string) string { return pk + "\x00" + sk }

// prefetch reads the CRM items at keys in one strongly consistent BatchGetItem and keeps them
// for this plan's later reads, so the items a plan needs once it knows its contact cost one
// request instead of one each. Keys already read ahead are skipped; with fewer than two left,
// or a client without BatchGetItem, it reads nothing (each read then goes out on its own).
func (r reader) prefetch(ctx context.Context, keys ...itemKey) error {
	if r.ahead == nil || r.batch == nil {
		return nil
	}
	var want []map[string]types.AttributeValue
	asked := map[string]bool{}
	for _, k := range keys {
		id := aheadKey(k.pk, k.sk)
		if _, done := r.ahead[id]; done || asked[id] {
			continue
		}
		asked[id] = true
		want = append(want, key(k.pk, k.sk))
	}
	if len(want) < 2 {
		return nil
	}
	out, err := r.batch.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
		r.cfg.CRMTable: {Keys: want, ConsistentRead: aws.Bool(true)}}})
	if err != nil {
		return fmt.Errorf("read ahead: %w", err)
	}
	for _, item := range out.Responses[r.cfg.CRMTable] {
		pk, _ := item["pk"].(*types.AttributeValueMemberS)
		sk, _ := item["sk"].(*types.AttributeValueMemberS)
		if pk != nil && sk != nil {
			r.ahead[aheadKey(pk.Value, sk.Value)] = item
		}
	}
	// A key DynamoDB left unprocessed (throttling) is read on its own when needed; every other
	// key without an item was read absent.
	unprocessed := map[string]bool{}
	for _, k := range out.UnprocessedKeys[r.cfg.CRMTable].Keys {
		pk, _ := k["pk"].(*types.AttributeValueMemberS)
		sk, _ := k["sk"].(*types.AttributeValueMemberS)
		if pk != nil && sk != nil {
			unprocessed[aheadKey(pk.Value, sk.Value)] = true
		}
	}
	for id := range asked {
		if _, got := r.ahead[id]; !got && !unprocessed[id] {
			r.ahead[id] = nil
		}
	}
	return nil
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

// resolveContact returns the id of the contact a query names (see Worker.ResolveContact).
func (r reader) resolveContact(ctx context.Context, query ContactQuery) (string, error) {
	var pk string
	switch {
	case query.ID != "":
		return query.ID, nil
	case query.Email != "":
		email, ok := identity.Email(query.Email)
		if !ok {
			return "", fmt.Errorf("not an email address: %q", query.Email)
		}
		pk = store.IdentEmailPK(email)
	case query.Phone != "":
		phone, ok := identity.Phone(query.Phone)
		if !ok {
			return "", fmt.Errorf("not a phone number: %q", query.Phone)
		}
		pk = store.IdentPhonePK(phone)
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

// contactView reads a contact's partition: record, timeline and audit (see Worker.GetContact).
func (r reader) contactView(ctx context.Context, query ContactQuery) (*ContactView, error) {
	id, err := r.resolveContact(ctx, query)
	if err != nil {
		return nil, err
	}
	expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("pk").Equal(expression.Value(store.PK(store.Contact, id)))).Build()
	if err != nil {
		return nil, err
	}
	view := &ContactView{}
	err = r.query(ctx, &dynamodb.QueryInput{
		TableName: aws.String(r.cfg.CRMTable), ConsistentRead: aws.Bool(true),
		KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
	}, 0, view.add)
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

// add decodes one item of the contact's partition into the view: the profile, an activity or
// an audit entry (other items are skipped).
func (view *ContactView) add(item map[string]types.AttributeValue) error {
	sk := ""
	if attr, ok := item["sk"].(*types.AttributeValueMemberS); ok {
		sk = attr.Value
	}
	switch {
	case sk == store.SKProfile:
		var rec store.Record
		if err := attributevalue.UnmarshalMap(item, &rec); err != nil {
			return err
		}
		if err := rec.Unpack(); err != nil {
			return err
		}
		view.Contact = &rec
	case strings.HasPrefix(sk, store.PrefixActivity):
		var stored store.ActivityItem
		if err := attributevalue.UnmarshalMap(item, &stored); err != nil {
			return err
		}
		activity, err := decodeActivity(&stored)
		if err != nil || activity == nil {
			return err
		}
		view.Timeline = append(view.Timeline, TimelineEntry{Activity: *activity, Assoc: stored.Assoc})
	case strings.HasPrefix(sk, store.PrefixAudit):
		entries, err := auditEntries(item)
		if err != nil {
			return err
		}
		view.Audit = append(view.Audit, entries...)
	}
	return nil
}

// auditEntries decodes an audit item: an event's decisions on a record (store.AuditEventItem),
// or one decision in the per-field shape written before (store.AuditItem).
func auditEntries(item map[string]types.AttributeValue) ([]store.AuditItem, error) {
	if _, packed := item["decisions_z"]; packed {
		var event store.AuditEventItem
		if err := attributevalue.UnmarshalMap(item, &event); err != nil {
			return nil, err
		}
		return event.Entries()
	}
	var entry store.AuditItem
	if err := attributevalue.UnmarshalMap(item, &entry); err != nil {
		return nil, err
	}
	return []store.AuditItem{entry}, nil
}

// key is a CRM table item's key attributes.
func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: pk},
		"sk": &types.AttributeValueMemberS{Value: sk},
	}
}

// get reads one CRM item into out; false when absent.
func (r reader) get(ctx context.Context, pk, sk string, out any) (bool, error) {
	if item, ahead := r.ahead[aheadKey(pk, sk)]; ahead {
		if item == nil {
			return false, nil
		}
		if err := attributevalue.UnmarshalMap(item, out); err != nil {
			return false, fmt.Errorf("decode %s/%s: %w", pk, sk, err)
		}
		return true, nil
	}
	item, err := r.fetch(ctx, pk, sk)
	if err != nil || item == nil {
		return false, err
	}
	if err := attributevalue.UnmarshalMap(item, out); err != nil {
		return false, fmt.Errorf("decode %s/%s: %w", pk, sk, err)
	}
	return true, nil
}

// claim reads an identity or domain item; nil when absent.
func (r reader) claim(ctx context.Context, pk, sk string) (*store.IdentityClaim, error) {
	var claim store.IdentityClaim
	ok, err := r.get(ctx, pk, sk, &claim)
	if err != nil || !ok {
		return nil, err
	}
	return &claim, nil
}

// claimOwner returns who owns an identity or domain claim ("" when unclaimed).
func (r reader) claimOwner(ctx context.Context, pk, sk string) (string, error) {
	var claim store.IdentityClaim
	ok, err := r.get(ctx, pk, sk, &claim)
	if err != nil || !ok {
		return "", err
	}
	if claim.ContactID != "" {
		return claim.ContactID, nil
	}
	return claim.Account, nil
}

// record reads a profile; nil when absent.
func (r reader) record(ctx context.Context, entity, id string) (*store.Record, error) {
	rec := &store.Record{}
	ok, err := r.get(ctx, store.PK(entity, id), store.SKProfile, rec)
	if err != nil || !ok {
		return nil, err
	}
	if err := rec.Unpack(); err != nil {
		return nil, err
	}
	return rec, nil
}

// activity reads an activity item; nil when absent.
func (r reader) activity(ctx context.Context, pk, activityID string) (*store.ActivityItem, error) {
	item := &store.ActivityItem{}
	ok, err := r.get(ctx, pk, store.ActivitySK(activityID), item)
	if err != nil || !ok {
		return nil, err
	}
	return item, nil
}

// fetch reads one CRM item, strongly consistent; nil when absent.
func (r reader) fetch(ctx context.Context, pk, sk string) (map[string]types.AttributeValue, error) {
	got, err := r.ddb.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(r.cfg.CRMTable), Key: key(pk, sk), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", pk, sk, err)
	}
	if len(got.Item) == 0 {
		return nil, nil
	}
	return got.Item, nil
}

// plannedActivity reads the activity item at pk for this plan, once: from what the plan read
// ahead (prefetch) when it did, else with one strongly consistent read whose answer it keeps
// for the plan's later reads of the item. nil when absent.
func (r reader) plannedActivity(ctx context.Context, pk, activityID string) (*store.ActivityItem, error) {
	sk := store.ActivitySK(activityID)
	if _, ahead := r.ahead[aheadKey(pk, sk)]; !ahead && r.ahead != nil {
		item, err := r.fetch(ctx, pk, sk)
		if err != nil {
			return nil, err
		}
		r.ahead[aheadKey(pk, sk)] = item // nil: read absent
	}
	return r.activity(ctx, pk, activityID)
}

// decodeActivity decodes an activity item's merged activity; nil when it has none.
func decodeActivity(item *store.ActivityItem) (*timeline.Activity, error) {
	if item == nil {
		return nil, nil
	}
	doc, err := item.DocJSON()
	if err != nil {
		return nil, fmt.Errorf("decode activity %s: %w", item.ActivityID, err)
	}
	if doc == "" {
		return nil, nil
	}
	var activity timeline.Activity
	if err := json.Unmarshal([]byte(doc), &activity); err != nil {
		return nil, fmt.Errorf("decode activity %s: %w", item.ActivityID, err)
	}
	return &activity, nil
}

// query runs a query to completion (bounded by maxPages) and decodes every item with fn.
func (r reader) query(ctx context.Context, in *dynamodb.QueryInput, maxPages int, fn func(map[string]types.AttributeValue) error) error {
	pages := dynamodb.NewQueryPaginator(r.ddb, in)
	for n := 0; pages.HasMorePages() && (maxPages <= 0 || n < maxPages); n++ {
		out, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("query %s: %w", aws.ToString(in.TableName), err)
		}
		for _, item := range out.Items {
			if err := fn(item); err != nil {
				return err
			}
		}
	}
	return nil
}

// deals lists an account's deals through the ByAccount index.
func (r reader) deals(ctx context.Context, accountID string) ([]*store.Record, error) {
	expr, err := expression.NewBuilder().
		WithKeyCondition(expression.Key("account_id").Equal(expression.Value(accountID)).
			And(expression.Key("sk").Equal(expression.Value(store.SKProfile)))).
		WithFilter(expression.Name("entity").Equal(expression.Value(store.Deal))).Build()
	if err != nil {
		return nil, err
	}
	var out []*store.Record
	err = r.query(ctx, &dynamodb.QueryInput{
		TableName: aws.String(r.cfg.CRMTable), IndexName: aws.String(store.IndexByAccount),
		KeyConditionExpression: expr.KeyCondition(), FilterExpression: expr.Filter(),
		ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
	}, 10, func(item map[string]types.AttributeValue) error {
		var rec store.Record
		if err := attributevalue.UnmarshalMap(item, &rec); err != nil {
			return err
		}
		if err := rec.Unpack(); err != nil {
			return err
		}
		out = append(out, &rec)
		return nil
	})
	return out, err
}
