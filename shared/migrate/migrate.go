// Package migrate owns the one-shot migrations of a deployed stack's tables from an earlier
// crmsync data model. Most changes of the data model need none: today's code reads every shape
// older code wrote beside its own (packed and plain documents, per-field and per-event audit
// items, legacy index keys). A step here exists only where an old item would do harm if left as
// it is. Every step is a dry run unless asked to write, idempotent (a second run finds nothing to
// do) and resumable (a run cut short returns the token to continue from).
package migrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// StepForeverTTL is the step that removes the expiry from ledger items of dedup-forever sources.
// Code before data model v2 gave every ledger item a 400-day TTL (expires_at), so a source whose
// dedup window is forever (Typeform, by default) silently stopped deduplicating its events after
// 400 days; today's worker writes those items without one, and this step removes it from the
// items written before.
const StepForeverTTL = "ledger-forever-ttl"

// API is the part of the DynamoDB client a migration uses.
type API interface {
	Scan(ctx context.Context, in *dynamodb.ScanInput, o ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
}

// Options are one run of a step.
type Options struct {
	// LedgerTable is the ledger table's name.
	LedgerTable string
	// Apply writes the changes; without it the run only counts what it would change.
	Apply bool
	// From is the token a partial run returned (Report.Next); "" starts at the beginning.
	From string
	// MaxPages stops the run after this many scan pages (0: run to the end).
	MaxPages int
	// PageSize is the most items one scan page reads (0: DynamoDB's 1 MB pages).
	PageSize int32
}

// Report is what a run found and did.
type Report struct {
	// Step is the step run.
	Step string `json:"step"`
	// DryRun is set when nothing was written.
	DryRun bool `json:"dry_run"`
	// Scanned counts the items read.
	Scanned int `json:"scanned"`
	// Matched counts the items the step applies to.
	Matched int `json:"matched"`
	// Changed counts the items rewritten (0 in a dry run).
	Changed int `json:"changed"`
	// Skipped counts matched items that changed under the run (their condition no longer held).
	Skipped int `json:"skipped"`
	// Examples are the keys of the first matched items.
	Examples []string `json:"examples,omitempty"`
	// Next is the token to continue a run cut short by MaxPages ("" when the table is done).
	Next string `json:"next,omitempty"`
}

// maxExamples is how many matched keys a report lists.
const maxExamples = 5

// ForeverTTL runs StepForeverTTL: every ledger item marked dedup_forever that still carries
// expires_at loses it, on the condition that it is still marked.
func ForeverTTL(ctx context.Context, api API, opts Options) (*Report, error) {
	if opts.LedgerTable == "" {
		return nil, errors.New("migrate: no ledger table")
	}
	rep := &Report{Step: StepForeverTTL, DryRun: !opts.Apply}
	filter := expression.Name("dedup_forever").Equal(expression.Value(true)).And(expression.AttributeExists(expression.Name("expires_at")))
	scanExpr, err := expression.NewBuilder().WithFilter(filter).WithProjection(expression.NamesList(expression.Name("pk"))).Build()
	if err != nil {
		return nil, err
	}
	cond, err := expression.NewBuilder().WithCondition(expression.Name("dedup_forever").Equal(expression.Value(true))).
		WithUpdate(expression.Remove(expression.Name("expires_at"))).Build()
	if err != nil {
		return nil, err
	}
	in := &dynamodb.ScanInput{TableName: aws.String(opts.LedgerTable), FilterExpression: scanExpr.Filter(),
		ProjectionExpression: scanExpr.Projection(), ExpressionAttributeNames: scanExpr.Names(),
		ExpressionAttributeValues: scanExpr.Values(), ConsistentRead: aws.Bool(true)}
	if opts.PageSize > 0 {
		in.Limit = aws.Int32(opts.PageSize)
	}
	if opts.From != "" {
		in.ExclusiveStartKey = map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: opts.From}}
	}
	start := opts.From // where the page being worked on began
	for pages := 0; ; pages++ {
		if opts.MaxPages > 0 && pages == opts.MaxPages {
			return rep, nil
		}
		out, err := api.Scan(ctx, in)
		if err != nil {
			return rep, fmt.Errorf("scan %s: %w", opts.LedgerTable, err)
		}
		rep.Scanned += int(out.ScannedCount)
		for _, item := range out.Items {
			key, _ := item["pk"].(*types.AttributeValueMemberS)
			if key == nil {
				continue
			}
			rep.Matched++
			if len(rep.Examples) < maxExamples {
				rep.Examples = append(rep.Examples, key.Value)
			}
			if !opts.Apply {
				continue
			}
			_, err := api.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(opts.LedgerTable),
				Key: map[string]types.AttributeValue{"pk": key}, UpdateExpression: cond.Update(), ConditionExpression: cond.Condition(),
				ExpressionAttributeNames: cond.Names(), ExpressionAttributeValues: cond.Values()})
			var failed *types.ConditionalCheckFailedException
			switch {
			case errors.As(err, &failed):
				rep.Skipped++
			case err != nil:
				rep.Next = start // this page again: what it already changed no longer matches
				return rep, fmt.Errorf("remove expires_at from %s: %w", key.Value, err)
			default:
				rep.Changed++
			}
		}
		rep.Next = ""
		if len(out.LastEvaluatedKey) == 0 {
			return rep, nil
		}
		last, _ := out.LastEvaluatedKey["pk"].(*types.AttributeValueMemberS)
		if last == nil {
			return rep, errors.New("migrate: scan page ended on an item without a pk")
		}
		rep.Next, start = last.Value, last.Value
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}
