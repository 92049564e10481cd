package worker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// reader does the worker's CRM table reads (strongly consistent where the key is known).
type reader struct {
	w *Worker
}

func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: pk},
		"sk": &types.AttributeValueMemberS{Value: sk},
	}
}

// get reads one CRM item into out; false when absent.
func (r reader) get(ctx context.Context, pk, sk string, out any) (bool, error) {
	o, err := r.w.ddb.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(r.w.cfg.CRMTable), Key: key(pk, sk), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return false, fmt.Errorf("read %s/%s: %w", pk, sk, err)
	}
	if len(o.Item) == 0 {
		return false, nil
	}
	if err := attributevalue.UnmarshalMap(o.Item, out); err != nil {
		return false, fmt.Errorf("decode %s/%s: %w", pk, sk, err)
	}
	return true, nil
}

// claimOwner returns who owns an identity or domain claim ("" when unclaimed).
func (r reader) claimOwner(ctx context.Context, pk, sk string) (string, error) {
	var c store.IdentityClaim
	ok, err := r.get(ctx, pk, sk, &c)
	if err != nil || !ok {
		return "", err
	}
	if c.ContactID != "" {
		return c.ContactID, nil
	}
	return c.Account, nil
}

// record reads a profile; nil when absent.
func (r reader) record(ctx context.Context, entity, id string) (*store.Record, error) {
	rec := &store.Record{}
	ok, err := r.get(ctx, store.PK(entity, id), store.SKProfile, rec)
	if err != nil || !ok {
		return nil, err
	}
	if rec.Fields == nil {
		rec.Fields = map[string]store.Field{}
	}
	return rec, nil
}

// activity reads an activity item; nil when absent.
func (r reader) activity(ctx context.Context, pk, activityID string) (*store.ActivityItem, error) {
	it := &store.ActivityItem{}
	ok, err := r.get(ctx, pk, store.ActivitySK(activityID), it)
	if err != nil || !ok {
		return nil, err
	}
	return it, nil
}

// doc decodes an activity item's merged activity.
func doc(it *store.ActivityItem) (*timeline.Activity, error) {
	if it == nil || it.Doc == "" {
		return nil, nil
	}
	var a timeline.Activity
	if err := json.Unmarshal([]byte(it.Doc), &a); err != nil {
		return nil, fmt.Errorf("decode activity %s: %w", it.ActivityID, err)
	}
	return &a, nil
}

// query runs a query to completion (bounded by maxPages) and decodes every item with fn.
func (r reader) query(ctx context.Context, in *dynamodb.QueryInput, maxPages int, fn func(map[string]types.AttributeValue) error) error {
	p := dynamodb.NewQueryPaginator(r.w.ddb, in)
	for n := 0; p.HasMorePages() && (maxPages <= 0 || n < maxPages); n++ {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("query %s: %w", aws.ToString(in.TableName), err)
		}
		for _, it := range out.Items {
			if err := fn(it); err != nil {
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
		TableName: aws.String(r.w.cfg.CRMTable), IndexName: aws.String(store.IndexByAccount),
		KeyConditionExpression: expr.KeyCondition(), FilterExpression: expr.Filter(),
		ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
	}, 10, func(item map[string]types.AttributeValue) error {
		var rec store.Record
		if err := attributevalue.UnmarshalMap(item, &rec); err != nil {
			return err
		}
		out = append(out, &rec)
		return nil
	})
	return out, err
}

// lookups backs association with the CRM table, seeing the plan's in-memory contact.
type lookups struct {
	r       reader
	contact *store.Record
	deal    map[string]*store.Record // deals already loaded by the plan
}

// ContactByEmail reads the email's identity claim.
func (l lookups) ContactByEmail(ctx context.Context, e string) (string, error) {
	return l.r.claimOwner(ctx, store.IdentEmailPK(e), store.SKIdent)
}

// ContactByPhone reads the phone's identity claim.
func (l lookups) ContactByPhone(ctx context.Context, p string) (string, error) {
	return l.r.claimOwner(ctx, store.IdentPhonePK(p), store.SKIdent)
}

// AccountOfContact answers from the plan's contact, else reads the contact's profile.
func (l lookups) AccountOfContact(ctx context.Context, id string) (string, error) {
	if l.contact != nil && l.contact.ID == id {
		return l.contact.AccountID, nil
	}
	rec, err := l.r.record(ctx, store.Contact, id)
	if err != nil || rec == nil {
		return "", err
	}
	return rec.AccountID, nil
}

// AccountByDomain reads the domain's claim.
func (l lookups) AccountByDomain(ctx context.Context, d string) (string, error) {
	return l.r.claimOwner(ctx, store.DomainPK(d), store.SKDomain)
}

// DealsOfAccount lists the account's deals through the ByAccount index.
func (l lookups) DealsOfAccount(ctx context.Context, a string) ([]association.Deal, error) {
	recs, err := l.r.deals(ctx, a)
	if err != nil {
		return nil, err
	}
	out := make([]association.Deal, 0, len(recs))
	for _, d := range recs {
		out = append(out, association.Deal{ID: d.ID, Open: d.Open(), LastActivityAt: store.ParseTime(d.LastActivityAt)})
	}
	return out, nil
}
