package reconcile

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/reconcile/check"
	"github.com/crmsync/crmsync/shared/store"
)

// Retention is how long reports and findings are kept (the CRM table's TTL).
const Retention = store.DefaultRetention

// ReportPK is the partition of a job's reports: RECONCILE#<job>.
func ReportPK(job string) string { return "RECONCILE#" + job }

// ReportSK is the sort key of one run's report: RUN#<run>.
func ReportSK(run string) string { return "RUN#" + run }

// FindingsPK is the partition of one run's findings: RECONCILE#<job>#RUN#<run>.
func FindingsPK(job, run string) string { return ReportPK(job) + "#" + ReportSK(run) }

// reportItem is a report as stored.
type reportItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	Report
	Entity    string `dynamodbav:"entity"`
	ExpiresAt int64  `dynamodbav:"expires_at"`
}

// findingItem is a finding as stored.
type findingItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	check.Finding
	Job       string `dynamodbav:"job"`
	RunID     string `dynamodbav:"run_id"`
	ExpiresAt int64  `dynamodbav:"expires_at"`
}

// store writes the run's findings (at most MaxStoredFindings), then its report. Findings stop
// when the context's deadline is within half the runner's margin, so the report (which counts
// the findings stored) is always written: a missing report is what the heartbeat alarm and
// the overdue check see.
func (r *Runner) store(ctx context.Context, x *run) error {
	rep := x.rep
	exp := rep.StartedAt.Add(Retention).Unix()
	n := min(len(x.findings), MaxStoredFindings)
	for i := 0; i < n; i++ {
		if r.near(ctx, r.margin/2) {
			r.log.WarnContext(ctx, "findings not all stored: deadline near", "job", rep.Job, "run", rep.RunID, "stored", i, "findings", n)
			n = i
			break
		}
		it := findingItem{PK: FindingsPK(rep.Job, rep.RunID), SK: fmt.Sprintf("FINDING#%05d", i), Finding: x.findings[i],
			Job: rep.Job, RunID: rep.RunID, ExpiresAt: exp}
		if err := r.put(ctx, it); err != nil {
			return fmt.Errorf("store finding: %w", err)
		}
	}
	rep.FindingsStored = n
	if err := r.put(ctx, reportItem{PK: ReportPK(rep.Job), SK: ReportSK(rep.RunID), Report: *rep, Entity: "reconcile_report", ExpiresAt: exp}); err != nil {
		return fmt.Errorf("store report: %w", err)
	}
	return nil
}

func (r *Runner) put(ctx context.Context, v any) error {
	av, err := attributevalue.MarshalMap(v)
	if err != nil {
		return err
	}
	_, err = r.d.DynamoDB.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(r.cfg.CRMTable), Item: av})
	return err
}

// query runs a query page by page (at most maxPages; 0 = all) and hands each item to fn; fn
// returns false to stop.
func (r *Runner) query(ctx context.Context, in *dynamodb.QueryInput, maxPages int, fn func(map[string]types.AttributeValue) (bool, error)) error {
	p := dynamodb.NewQueryPaginator(r.d.DynamoDB, in)
	for n := 0; p.HasMorePages() && (maxPages <= 0 || n < maxPages); n++ {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("query %s %s: %w", aws.ToString(in.TableName), aws.ToString(in.IndexName), err)
		}
		for _, it := range out.Items {
			more, err := fn(it)
			if err != nil || !more {
				return err
			}
		}
	}
	return nil
}

// LatestReport returns a job's latest stored report (without findings), or nil when the job
// never stored one.
func (r *Runner) LatestReport(ctx context.Context, job string) (*Report, error) {
	reps, err := r.Reports(ctx, job, 1)
	if err != nil || len(reps) == 0 {
		return nil, err
	}
	return &reps[0], nil
}

// Reports returns a job's latest stored reports, newest first (at most limit).
func (r *Runner) Reports(ctx context.Context, job string, limit int) ([]Report, error) {
	return r.reports(ctx, job, limit, false)
}

func (r *Runner) reports(ctx context.Context, job string, limit int, oldestFirst bool) ([]Report, error) {
	expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("pk").Equal(expression.Value(ReportPK(job))).
		And(expression.Key("sk").BeginsWith("RUN#"))).Build()
	if err != nil {
		return nil, err
	}
	var out []Report
	err = r.query(ctx, &dynamodb.QueryInput{TableName: aws.String(r.cfg.CRMTable), KeyConditionExpression: expr.KeyCondition(),
		ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(), ScanIndexForward: aws.Bool(oldestFirst),
		Limit: aws.Int32(int32(max(limit, 1)))}, 1, func(item map[string]types.AttributeValue) (bool, error) {
		var it reportItem
		if err := attributevalue.UnmarshalMap(item, &it); err != nil {
			return false, err
		}
		out = append(out, it.Report)
		return len(out) < limit, nil
	})
	return out, err
}

// Findings returns the findings stored under one run of a job.
func (r *Runner) Findings(ctx context.Context, job, runID string) ([]check.Finding, error) {
	expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("pk").Equal(expression.Value(FindingsPK(job, runID)))).Build()
	if err != nil {
		return nil, err
	}
	var out []check.Finding
	err = r.query(ctx, &dynamodb.QueryInput{TableName: aws.String(r.cfg.CRMTable), KeyConditionExpression: expr.KeyCondition(),
		ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values()}, 0, func(item map[string]types.AttributeValue) (bool, error) {
		var it findingItem
		if err := attributevalue.UnmarshalMap(item, &it); err != nil {
			return false, err
		}
		out = append(out, it.Finding)
		return true, nil
	})
	return out, err
}

// ledgerWindow calls fn with every ledger item of the policy's sources recorded inside [since,
// until], through the ledger's BySource index, source by source; filter and projection, when
// set, narrow what is read.
func (r *Runner) ledgerWindow(ctx context.Context, since, until time.Time, filter *expression.ConditionBuilder,
	projection *expression.ProjectionBuilder, fn func(store.LedgerItem) error) error {
	for _, src := range r.d.Policy.Sources() {
		b := expression.NewBuilder().WithKeyCondition(expression.Key("source").Equal(expression.Value(src)).
			And(expression.Key("recorded_at").Between(expression.Value(store.FormatTime(since)), expression.Value(store.FormatTime(until)))))
		if filter != nil {
			b = b.WithFilter(*filter)
		}
		if projection != nil {
			b = b.WithProjection(*projection)
		}
		expr, err := b.Build()
		if err != nil {
			return err
		}
		err = r.query(ctx, &dynamodb.QueryInput{TableName: aws.String(r.cfg.LedgerTable), IndexName: aws.String(store.IndexBySource),
			KeyConditionExpression: expr.KeyCondition(), FilterExpression: expr.Filter(), ProjectionExpression: expr.Projection(),
			ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values()}, 0,
			func(item map[string]types.AttributeValue) (bool, error) {
				var it store.LedgerItem
				if err := attributevalue.UnmarshalMap(item, &it); err != nil {
					return false, err
				}
				return true, fn(it)
			})
		if err != nil {
			return err
		}
	}
	return nil
}

// changedContacts calls fn, in contact id order, with every contact an event recorded inside
// [since, until) wrote — the ledger items of the window (the ledger's BySource index, source by
// source) name the contact each event was applied to — and with the latest recording time of
// those events; fn returns false to stop. The CRM table keeps no index of its records' change
// times: every profile write would pay for one (a moved index entry is a delete and a put), and
// the ledger already lists what the pipeline changed. What the pipeline did not change (an
// import, a hand edit) has no ledger item and is not found here.
func (r *Runner) changedContacts(ctx context.Context, since, until time.Time, fn func(id string, latest time.Time) (bool, error)) error {
	latest := map[string]time.Time{}
	note := func(id, at string) {
		if id == "" {
			return
		}
		t, err := store.ParseTime(at)
		if err != nil {
			// An unparsable time counts as recent: the contact is left to settle, not skipped.
			t = until
		}
		if t.After(latest[id]) {
			latest[id] = t
		}
	}
	projection := expression.NamesList(expression.Name("pk"), expression.Name("outcome"), expression.Name("contact_id"),
		expression.Name("applications"), expression.Name("recorded_at"))
	err := r.ledgerWindow(ctx, since, until, nil, &projection, func(it store.LedgerItem) error {
		if it.Outcome == store.Applied {
			note(it.ContactID, it.RecordedAt)
		}
		for _, app := range it.Applications {
			if app.Wrote {
				note(app.ContactID, app.At)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(latest))
	for id := range latest {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		more, err := fn(id, latest[id])
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// getItem reads one item of a table into out; false when absent.
func (r *Runner) getItem(ctx context.Context, table string, key map[string]types.AttributeValue, out any) (bool, error) {
	o, err := r.d.DynamoDB.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key})
	if err != nil {
		return false, err
	}
	if len(o.Item) == 0 {
		return false, nil
	}
	return true, attributevalue.UnmarshalMap(o.Item, out)
}

func crmKey(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: pk}, "sk": &types.AttributeValueMemberS{Value: sk}}
}

func ledgerKey(key string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: key}}
}
