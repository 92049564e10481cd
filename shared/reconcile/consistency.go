package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/reconcile/check"
	"github.com/crmsync/crmsync/shared/store"
)

// RepairKey is the key of a repair made by a job run: reconcile:{job}:{run}:{entity}:{id}.
// Audit entries of the repair carry it as their event key.
func RepairKey(job, runID, entity, id string) string {
	return "reconcile:" + job + ":" + runID + ":" + entity + ":" + id
}

// consistency runs the consistency job's checkpointable phases.
func (r *Runner) consistency(ctx context.Context, x *run, dryRun bool) error {
	return r.phases(ctx, x, []phase{
		{PhaseUnassociated, func(ctx context.Context, x *run) error { return r.unassociated(ctx, x, dryRun) }},
		{PhaseContacts, r.contactChecks},
	})
}

// unassociated retries every activity waiting for a contact, in activity id order after the
// checkpoint's: those whose identities a contact now owns move under it; the rest are reported.
// It stops (a partial run) when the deadline is near.
func (r *Runner) unassociated(ctx context.Context, x *run, dryRun bool) error {
	js := r.d.Settings.Job(JobConsistency)
	var waiting []store.ActivityItem
	// The index is sharded (store.UnassocKeys, the legacy key last): every shard is read.
	for _, shard := range store.UnassocKeys() {
		if len(waiting) >= js.MaxRecords {
			break
		}
		expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("unassoc").Equal(expression.Value(shard))).Build()
		if err != nil {
			return err
		}
		err = r.query(ctx, &dynamodb.QueryInput{TableName: aws.String(r.cfg.CRMTable), IndexName: aws.String(store.IndexUnassociated),
			KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values()}, 0,
			func(item map[string]types.AttributeValue) (bool, error) {
				var it store.ActivityItem
				if err := attributevalue.UnmarshalMap(item, &it); err != nil {
					return false, err
				}
				if it.MovedTo == "" {
					waiting = append(waiting, it)
				}
				return len(waiting) < js.MaxRecords, nil
			})
		if err != nil {
			return err
		}
	}
	now := r.now()
	x.rep.Counts["reassociated"] += 0
	x.rep.Counts["unassociated_activities"] += 0
	slices.SortFunc(waiting, func(a, b store.ActivityItem) int { return strings.Compare(a.ActivityID, b.ActivityID) })
	last := x.after(PhaseUnassociated)
	for i := range waiting {
		it := &waiting[i]
		if last != "" && it.ActivityID <= last {
			continue
		}
		if r.cut(ctx, x, PhaseUnassociated, last) {
			return nil
		}
		last = it.ActivityID
		x.rep.Counts["activities_checked"]++
		if f := check.CallNotTerminal(it, now, js.CallTerminalAfter); f != nil {
			x.rep.Counts["calls_not_terminal"]++
			x.add(*f)
		}
		if dryRun {
			x.rep.Counts["unassociated_activities"]++
			x.add(check.Finding{Kind: check.KindUnassociated, Entity: "activity", ID: it.ActivityID, Stored: strings.Join(it.Identities, " "),
				Detail: "waiting for a contact since " + it.OccurredAt, Repair: "dry run: crmsync reconcile consistency"})
			continue
		}
		res, err := r.d.Worker.Reassociate(ctx, it.ActivityID, RepairKey(JobConsistency, x.rep.RunID, "activity", it.ActivityID),
			"consistency job: a contact now owns one of the activity's identities")
		if err != nil {
			// A race with the worker; the next run retries. Report, do not fail the run.
			x.rep.Counts["reassociate_errors"]++
			x.add(check.Finding{Kind: check.KindUnassociated, Entity: "activity", ID: it.ActivityID, Detail: err.Error(),
				Repair: "crmsync reconcile consistency"})
			continue
		}
		if res.Moved {
			x.rep.Counts["reassociated"]++
			x.add(check.Finding{Kind: check.KindReassociated, Entity: "activity", ID: it.ActivityID, Expected: res.ContactID, Field: res.Via,
				Detail: "moved under the contact that owns " + res.Via, Repair: "repaired: crmsync contact get --id " + res.ContactID})
			continue
		}
		x.rep.Counts["unassociated_activities"]++
		x.add(check.Finding{Kind: check.KindUnassociated, Entity: "activity", ID: it.ActivityID, Stored: redactIdentities(it.Identities),
			Detail: res.Note + "; waiting since " + it.OccurredAt, Repair: "retried by every consistency run and by the next event that creates its contact"})
	}
	return nil
}

// redactIdentities keeps the kind of each identity and hides the rest (findings are read by ops
// tooling; the CRM holds the identities themselves).
func redactIdentities(ids []string) string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		kind, _, _ := strings.Cut(id, ":")
		out = append(out, kind)
	}
	return strings.Join(out, " ")
}

// contactChecks checks every contact changed in the window and its activities, in contact id
// order after the checkpoint's; it stops (a partial run) when the deadline is near.
func (r *Runner) contactChecks(ctx context.Context, x *run) error {
	js := r.d.Settings.Job(JobConsistency)
	attribution := check.AttributionFields(r.d.Policy)
	var ids []string
	err := r.changedContacts(ctx, x.rep.Since, x.rep.Until, func(id string, _ time.Time) (bool, error) {
		ids = append(ids, id)
		return len(ids) < js.MaxRecords, nil
	})
	if err != nil {
		return err
	}
	for _, k := range []string{"no_attribution", "shared_identities", "deal_account_mismatches", "calls_not_terminal"} {
		x.rep.Counts[k] += 0
	}
	dealAccounts := map[string]string{}
	now := r.now()
	last := x.after(PhaseContacts)
	for _, id := range ids {
		if last != "" && id <= last {
			continue
		}
		if r.cut(ctx, x, PhaseContacts, last) {
			return nil
		}
		last = id
		rec := &store.Record{}
		ok, err := r.getItem(ctx, r.cfg.CRMTable, crmKey(store.PK(store.Contact, id), store.SKProfile), rec)
		if err != nil {
			return fmt.Errorf("read contact %s: %w", id, err)
		}
		if !ok {
			continue
		}
		if err := rec.Unpack(); err != nil {
			return fmt.Errorf("read contact %s: %w", id, err)
		}
		x.rep.Counts["contacts_checked"]++
		if f := check.NoAttribution(rec, attribution); f != nil {
			x.rep.Counts["no_attribution"]++
			x.add(*f)
		}
		owners := map[string]string{}
		for _, ident := range rec.Identities {
			kind, val, _ := strings.Cut(ident, ":")
			pk := store.IdentEmailPK(val)
			if kind == "phone" {
				pk = store.IdentPhonePK(val)
			}
			var c store.IdentityClaim
			if _, err := r.getItem(ctx, r.cfg.CRMTable, crmKey(pk, store.SKIdent), &c); err != nil {
				return fmt.Errorf("read claim: %w", err)
			}
			owners[ident] = c.ContactID
		}
		if fs := check.SharedIdentities(rec, owners); len(fs) > 0 {
			x.rep.Counts["shared_identities"] += len(fs)
			x.add(fs...)
		}
		if err := r.activityChecks(ctx, x, rec, dealAccounts, now); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) activityChecks(ctx context.Context, x *run, rec *store.Record, dealAccounts map[string]string, now time.Time) error {
	js := r.d.Settings.Job(JobConsistency)
	expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("pk").Equal(expression.Value(rec.PK)).
		And(expression.Key("sk").BeginsWith(store.PrefixActivity))).Build()
	if err != nil {
		return err
	}
	return r.query(ctx, &dynamodb.QueryInput{TableName: aws.String(r.cfg.CRMTable), KeyConditionExpression: expr.KeyCondition(),
		ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values()}, 0,
		func(item map[string]types.AttributeValue) (bool, error) {
			var it store.ActivityItem
			if err := attributevalue.UnmarshalMap(item, &it); err != nil {
				return false, err
			}
			x.rep.Counts["activities_checked"]++
			if f := check.CallNotTerminal(&it, now, js.CallTerminalAfter); f != nil {
				x.rep.Counts["calls_not_terminal"]++
				x.add(*f)
			}
			if it.DealID == "" {
				return true, nil
			}
			acct, ok := dealAccounts[it.DealID]
			if !ok {
				var deal store.Record
				if _, err := r.getItem(ctx, r.cfg.CRMTable, crmKey(store.PK(store.Deal, it.DealID), store.SKProfile), &deal); err != nil {
					return false, fmt.Errorf("read deal: %w", err)
				}
				acct = deal.AccountID
				dealAccounts[it.DealID] = acct
			}
			if f := check.DealAccountMismatch(&it, acct); f != nil {
				x.rep.Counts["deal_account_mismatches"]++
				x.add(*f)
			}
			return true, nil
		})
}

// mappingReview tallies the window's ledger items per source (BySource index).
func (r *Runner) mappingReview(ctx context.Context, x *run) error {
	rv := check.NewReview(r.d.Policy)
	err := r.ledgerWindow(ctx, x.rep.Since, x.rep.Until, nil, nil, func(it store.LedgerItem) error {
		var fields map[string]map[string]string
		if doc, err := it.EventJSON(); err == nil && doc != "" {
			var ev canonical.Event
			if json.Unmarshal([]byte(doc), &ev) == nil {
				fields = ev.Fields
			}
		}
		rv.Add(it.Source, it.Key, it.MappingVersion, it.PolicyVersion, it.Unmapped, fields)
		return nil
	})
	if err != nil {
		return err
	}
	x.add(rv.Findings()...)
	for k, v := range rv.Counts() {
		x.rep.Counts[k] = v
	}
	return nil
}
