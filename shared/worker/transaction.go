package worker

import (
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/store"
)

// transactionBuilder collects the items of one TransactWriteItems.
type transactionBuilder struct {
	items []types.TransactWriteItem
}

// put adds a Put of value, with its condition when cond is set.
func (builder *transactionBuilder) put(table string, value any, cond string, names map[string]string, vals map[string]types.AttributeValue) error {
	attrs, err := attributevalue.MarshalMap(value)
	if err != nil {
		return err
	}
	put := &types.Put{TableName: aws.String(table), Item: attrs}
	if cond != "" {
		put.ConditionExpression = aws.String(cond)
	}
	if len(names) > 0 {
		put.ExpressionAttributeNames = names
	}
	if len(vals) > 0 {
		put.ExpressionAttributeValues = vals
	}
	builder.items = append(builder.items, types.TransactWriteItem{Put: put})
	return nil
}

// putVersioned adds a Put conditioned on the item's absence (isNew) or on its previous version.
func (builder *transactionBuilder) putVersioned(table string, value any, isNew bool, prev int64) error {
	if isNew {
		return builder.put(table, value, "attribute_not_exists(pk)", nil, nil)
	}
	return builder.put(table, value, "#v = :v", map[string]string{"#v": "version"},
		map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(prev, 10)}})
}

// putClaim adds a claim's Put: on an absent item, or on an unclaimed identity item whose
// parkings are still the ones the plan read (so it adopted them all).
func (builder *transactionBuilder) putClaim(table string, claim claimWrite) error {
	if !claim.existed {
		return builder.put(table, claim.item, "attribute_not_exists(pk)", nil, nil)
	}
	if claim.pver == 0 {
		return builder.put(table, claim.item, "attribute_not_exists(contact_id) AND attribute_not_exists(pver)", nil, nil)
	}
	return builder.put(table, claim.item, "attribute_not_exists(contact_id) AND pver = :pv", nil,
		map[string]types.AttributeValue{":pv": &types.AttributeValueMemberN{Value: strconv.FormatInt(claim.pver, 10)}})
}

// markPending adds an Update recording a parked activity on an unclaimed identity (creating
// the item when absent), conditioned on the identity staying unclaimed.
func (builder *transactionBuilder) markPending(table string, mark pendingMark) {
	if mark.checkOnly {
		builder.items = append(builder.items, types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{
			TableName: aws.String(table), Key: key(mark.pk, store.SKIdent), ConditionExpression: aws.String("attribute_not_exists(contact_id)")}})
		return
	}
	builder.items = append(builder.items, types.TransactWriteItem{Update: &types.Update{
		TableName: aws.String(table), Key: key(mark.pk, store.SKIdent),
		UpdateExpression:    aws.String("ADD pending :a, pver :one"),
		ConditionExpression: aws.String("attribute_not_exists(contact_id)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":a": &types.AttributeValueMemberSS{Value: []string{mark.activityID}}, ":one": &types.AttributeValueMemberN{Value: "1"}},
	}})
}

// checkAbsent adds a ConditionCheck that the item is still absent.
func (builder *transactionBuilder) checkAbsent(table string, absent itemKey) {
	builder.items = append(builder.items, types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{
		TableName: aws.String(table), Key: key(absent.pk, absent.sk), ConditionExpression: aws.String("attribute_not_exists(pk)")}})
}

// transaction builds the TransactWriteItems of a plan: the ledger Put first (its cancellation
// reason is index 0), then records, claims, activities, audits and the absence checks.
func (p *plan) transaction(shared *deps) ([]types.TransactWriteItem, error) {
	var builder transactionBuilder
	if err := p.putLedger(&builder, shared); err != nil {
		return nil, err
	}
	crm := shared.cfg.CRMTable
	for _, record := range p.records {
		stored, err := record.rec.Stored()
		if err != nil {
			return nil, err
		}
		if err := builder.putVersioned(crm, stored, record.isNew, record.prev); err != nil {
			return nil, err
		}
	}
	for _, claim := range p.claims {
		if err := builder.putClaim(crm, claim); err != nil {
			return nil, err
		}
	}
	for _, mark := range p.marks {
		builder.markPending(crm, mark)
	}
	for _, activity := range p.activities {
		if err := builder.putVersioned(crm, activity.item, activity.isNew, activity.prev); err != nil {
			return nil, err
		}
	}
	for _, entry := range p.logs {
		if err := builder.put(crm, entry, "", nil, nil); err != nil {
			return nil, err
		}
	}
	audits, err := p.auditEvents()
	if err != nil {
		return nil, err
	}
	for _, entry := range audits {
		if err := builder.put(crm, entry, "", nil, nil); err != nil {
			return nil, err
		}
	}
	for _, absentKey := range p.absent {
		builder.checkAbsent(crm, absentKey)
	}
	if len(builder.items) > MaxTransactItems {
		return nil, permanent("event needs %d writes, more than one transaction holds (%d)", len(builder.items), MaxTransactItems)
	}
	return builder.items, nil
}

// auditEvents groups the plan's audited decisions into one item per record, in the order the
// records were first decided.
func (p *plan) auditEvents() ([]*store.AuditEventItem, error) {
	var items []*store.AuditEventItem
	decisions := map[*store.AuditEventItem][]store.AuditDecision{}
	byRecord := map[string]*store.AuditEventItem{}
	for _, entry := range p.audits {
		item := byRecord[entry.PK]
		if item == nil {
			item = &store.AuditEventItem{PK: entry.PK, SK: store.AuditEventSK(entry.OccurredAt, entry.EventKey) + p.auditSuffix,
				Entity: entry.Entity, RecordID: entry.RecordID, EventKey: entry.EventKey, Source: entry.Source, Actor: entry.Actor,
				OccurredAt: entry.OccurredAt, RecordedAt: entry.RecordedAt, PolicyVersion: entry.PolicyVersion,
				RerunBy: entry.RerunBy, RerunWhy: entry.RerunWhy}
			byRecord[entry.PK] = item
			items = append(items, item)
		}
		decisions[item] = append(decisions[item], store.AuditDecision{Field: entry.Field, Decision: entry.Decision, Rule: entry.Rule,
			Reason: entry.Reason, Proposed: entry.Proposed, Before: entry.Before, After: entry.After})
	}
	for _, item := range items {
		if err := item.SetDecisions(decisions[item]); err != nil {
			return nil, err
		}
	}
	return items, nil
}

// putLedger adds the ledger Put: a forced re-run is conditioned on the ledger item it read being
// unchanged, any other event on the ledger condition (absent, or its dedup window over).
func (p *plan) putLedger(builder *transactionBuilder, shared *deps) error {
	if p.ledgerPrev != "" {
		return builder.put(shared.cfg.LedgerTable, p.ledger, "recorded_at = :prev", nil,
			map[string]types.AttributeValue{":prev": &types.AttributeValueMemberS{Value: p.ledgerPrev}})
	}
	cond, vals := ledgerCondition(shared.now())
	return builder.put(shared.cfg.LedgerTable, p.ledger, cond, nil, vals)
}
