package worker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/store"
)

// getLedger reads an event's ledger item with a strongly consistent read; nil when absent.
func (d *deps) getLedger(ctx context.Context, key string) (*store.LedgerItem, error) {
	out, err := d.ddb.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(d.cfg.LedgerTable),
		Key:            map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: key}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	if len(out.Item) == 0 {
		return nil, nil
	}
	var ledger store.LedgerItem
	if err := attributevalue.UnmarshalMap(out.Item, &ledger); err != nil {
		return nil, fmt.Errorf("decode ledger item: %w", err)
	}
	return &ledger, nil
}

// ledgerCondition is the ledger Put's condition: absent, or its dedup window is over.
func ledgerCondition(now time.Time) (string, map[string]types.AttributeValue) {
	return "attribute_not_exists(pk) OR dedup_until < :now", map[string]types.AttributeValue{
		":now": &types.AttributeValueMemberN{Value: strconv.FormatInt(now.UnixMilli(), 10)},
	}
}

// ledgerItem returns the ledger item for an event recorded at now (outcome to be filled in).
func (d *deps) ledgerItem(ev *canonical.Event, now time.Time) *store.LedgerItem {
	window, forever := d.cfg.Policy.DedupWindow(ev.Source)
	until := now.Add(window).UnixMilli()
	if forever {
		until = store.ForeverMillis
	}
	var expires int64
	if !forever {
		expires = now.Add(time.Duration(d.cfg.RetentionDays) * 24 * time.Hour).Unix()
	}
	body, _ := ev.Marshal()
	return &store.LedgerItem{
		Key: ev.Key, PayloadHash: ev.PayloadHash, DedupUntil: until, DedupForever: forever,
		ExpiresAt:      expires,
		GroupKey:       ev.GroupKey,
		OccurredAt:     store.FormatTime(ev.OccurredAt),
		Source:         ev.Source,
		RecordedAt:     store.FormatTime(now),
		Event:          store.Pack(body),
		PolicyVersion:  d.cfg.Policy.Version(),
		MappingVersion: ev.MappingVersion,
		Unmapped:       ev.Unmapped,
	}
}
