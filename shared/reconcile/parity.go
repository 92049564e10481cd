package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/reconcile/check"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/worker"
)

// SettleRecent is how recently a record may have changed and still be skipped by parity's
// recomputation: a record still being written is left for the next run. (The recomputation,
// Worker.Rebuild, finds its events through strongly consistent reads and folds them in the order
// the worker decided them, with the same decide package, so it does not wait for an index.)
const SettleRecent = time.Minute

// ReconcileRunKey is the ExternalIDs key a backfill event carries: which run enqueued it.
const ReconcileRunKey = "reconcile_run"

// equivalenceSpan is how far from a listed item's time parity looks for a delivered event of
// the same activity (a Twilio terminal callback's Timestamp and the call's end_time differ by
// seconds; a day covers clock and retry skew).
const equivalenceSpan = 24 * time.Hour

// parity runs parity's checkpointable phases; Run adds the overdue check to every parity run.
func (r *Runner) parity(ctx context.Context, x *run, dryRun bool) error {
	return r.phases(ctx, x, []phase{
		{PhaseInternal, r.parityInternal},
		{PhaseSources, func(ctx context.Context, x *run) error { return r.paritySources(ctx, x, dryRun) }},
		{PhaseUnfinished, r.unfinished},
	})
}

// parityInternal recomputes the window's changed contacts from the ledger, in contact id order
// after the checkpoint's, and records each field that differs; it stops (a partial run) when
// the deadline is near.
func (r *Runner) parityInternal(ctx context.Context, x *run) error {
	ids, err := r.parityContacts(ctx, x)
	if err != nil {
		return err
	}
	last := x.after(PhaseInternal)
	for _, id := range ids {
		if id <= last && last != "" {
			continue
		}
		if r.cut(ctx, x, PhaseInternal, last) {
			break
		}
		if err := r.parityContact(ctx, x, id); err != nil {
			return err
		}
		last = id
	}
	x.rep.DriftPercent = check.DriftPercent(x.rep.Counts["contacts_drifted"], x.rep.Counts["contacts_checked"])
	return nil
}

// parityContacts walks the contacts the window's events wrote (their counts describe the whole
// window, so a continued run sets them again) and returns the ones to rebuild, sorted.
func (r *Runner) parityContacts(ctx context.Context, x *run) ([]string, error) {
	js := r.d.Settings.Job(JobParity)
	recent := r.now().Add(-SettleRecent)
	changed := 0
	delete(x.rep.Counts, "contacts_settling") // counted again by this walk
	delete(x.rep.Counts, "contacts_over_bound")
	var ids []string
	err := r.changedContacts(ctx, x.rep.Since, x.rep.Until, func(id string, latest time.Time) (bool, error) {
		changed++
		if latest.After(recent) {
			// Written in the last moments: its later events may still be on their way.
			x.rep.Counts["contacts_settling"]++
			return true, nil
		}
		if len(ids) >= js.MaxRecords {
			x.rep.Counts["contacts_over_bound"]++
			return true, nil
		}
		ids = append(ids, id)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	x.rep.Counts["records_changed"] = changed
	x.rep.Counts["contacts_checked"] += 0
	x.rep.Counts["contacts_drifted"] += 0
	return ids, nil
}

// parityContact rebuilds one contact and compares it with the stored record.
func (r *Runner) parityContact(ctx context.Context, x *run, id string) error {
	rb, err := r.d.Worker.Rebuild(ctx, id)
	if errors.Is(err, worker.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", id, err)
	}
	var rec store.Record
	ok, err := r.getItem(ctx, r.cfg.CRMTable, crmKey(store.PK(store.Contact, id), store.SKProfile), &rec)
	if err != nil {
		return fmt.Errorf("read contact %s: %w", id, err)
	}
	if !ok {
		return nil
	}
	if err := rec.Unpack(); err != nil {
		return fmt.Errorf("read contact %s: %w", id, err)
	}
	x.rep.Counts["contacts_checked"]++
	if fs := check.CompareFields(id, rec.Fields, rb.Fields); len(fs) > 0 {
		x.rep.Counts["contacts_drifted"]++
		x.add(fs...)
		x.rep.Counts["field_drift"] += len(fs)
	}
	return nil
}

// paritySources lists each configured source's window (up to now - its settle time) and
// backfills what the ledger lacks, within the job's per-run bound; sources are checkpointed
// in their configured order.
func (r *Runner) paritySources(ctx context.Context, x *run, dryRun bool) error {
	budget := r.d.Settings.Job(JobParity).MaxBackfill - x.rep.Counts["backfilled"]
	x.rep.Counts["missing_events"] += 0
	x.rep.Counts["source_errors"] += 0
	last := x.after(PhaseSources)
	skip := last != "" && slices.ContainsFunc(r.d.Sources, func(s Source) bool { return s.Name == last })
	for _, src := range r.d.Sources {
		if skip {
			skip = src.Name != last
			continue
		}
		if r.cut(ctx, x, PhaseSources, last) {
			return nil
		}
		last = src.Name
		ss, ok := r.d.Settings.Sources[src.Name]
		if !ok {
			continue
		}
		until := x.rep.Until
		if settled := r.now().Add(-ss.Settle); settled.Before(until) {
			until = settled
		}
		if !x.rep.Since.Before(until) {
			continue
		}
		res, err := r.backfill(ctx, src, x.rep.Since, until, budget, dryRun, x.rep.RunID)
		if err != nil {
			x.rep.Counts["source_errors"]++
			x.add(check.Finding{Kind: check.KindSourceError, Entity: "connector", ID: src.Name, Source: src.Name, Detail: err.Error(),
				Repair: "check the " + src.Name + " secret's list credentials, then crmsync backfill --source " + src.Name + " --since " + x.rep.Since.Format(time.RFC3339)})
			r.log.WarnContext(ctx, "source not listed", "source", src.Name, "error", err.Error())
			continue
		}
		budget -= len(res.Enqueued)
		x.rep.Counts["listed_items"] += res.Listed
		x.rep.Counts["missing_events"] += len(res.Missing)
		x.rep.Counts["backfilled"] += len(res.Enqueued)
		x.rep.Counts["backfill_over_bound"] += res.OverBound
		for _, m := range res.missing {
			repair := "backfilled: enqueued to the ingest queue (same queue, ledger and policy as a webhook)"
			switch {
			case dryRun:
				repair = "dry run: crmsync backfill --source " + src.Name + " --since " + x.rep.Since.Format(time.RFC3339)
			case !slices.Contains(res.Enqueued, m.Key):
				repair = "not enqueued (per-run bound): crmsync backfill --source " + src.Name + " --since " + x.rep.Since.Format(time.RFC3339)
			}
			x.add(check.MissingEvent(m, repair))
		}
	}
	return nil
}

// BackfillResult is what one source's backfill found and did.
type BackfillResult struct {
	// Source is the source listed.
	Source string `json:"source"`
	// Since is the window's start.
	Since time.Time `json:"since"`
	// Until is the window's end.
	Until time.Time `json:"until"`
	// Listed counts the vendor items of the window.
	Listed int `json:"listed"`
	// Delivered counts those the ledger holds (by key, or an equivalent event).
	Delivered int `json:"delivered"`
	// Missing are the keys of the items the ledger lacks.
	Missing []string `json:"missing"`
	// Enqueued are the keys enqueued (all of Missing unless a dry run or over the bound).
	Enqueued []string `json:"enqueued"`
	// OverBound counts missing items left for a later run.
	OverBound int `json:"over_bound"`
	// DryRun is set when nothing was enqueued on purpose.
	DryRun bool `json:"dry_run,omitempty"`

	missing []*canonical.Event
}

// Backfill lists one source's vendor items in [since, until) and enqueues each one the ledger
// does not hold — by key, or as an equivalent delivered event (same activity and status, see
// check.Equivalent) — to the ingest queue, at most max (0 = the parity job's bound). It is what
// parity does per source, without the settle delay; `crmsync backfill` calls it.
func (r *Runner) Backfill(ctx context.Context, source string, since, until time.Time, max int, dryRun bool) (BackfillResult, error) {
	i := slices.IndexFunc(r.d.Sources, func(s Source) bool { return s.Name == source })
	if i < 0 {
		names := make([]string, 0, len(r.d.Sources))
		for _, s := range r.d.Sources {
			names = append(names, s.Name)
		}
		return BackfillResult{Source: source}, fmt.Errorf("source %q cannot be listed (listable: %v)", source, names)
	}
	if max <= 0 {
		max = r.d.Settings.Job(JobParity).MaxBackfill
	}
	if until.IsZero() {
		until = r.now()
	}
	return r.backfill(ctx, r.d.Sources[i], since, until, max, dryRun, "backfill-"+r.now().UTC().Format(RunLayout))
}

func (r *Runner) backfill(ctx context.Context, src Source, since, until time.Time, max int, dryRun bool, runID string) (BackfillResult, error) {
	res := BackfillResult{Source: src.Name, Since: since, Until: until, DryRun: dryRun}
	var sec connector.Secret
	if src.SecretID != "" {
		if r.d.Secrets == nil {
			return res, errors.New("no secret source configured")
		}
		s, err := r.d.Secrets.Get(ctx, src.SecretID)
		if err != nil {
			return res, err
		}
		sec = s
	}
	evs, err := src.Lister.List(ctx, since, until, sec, src.API)
	if err != nil {
		return res, err
	}
	res.Listed = len(evs)
	var send []canonical.Event
	for i := range evs {
		ev := &evs[i]
		ok, err := r.delivered(ctx, ev)
		if err != nil {
			return res, err
		}
		if ok {
			res.Delivered++
			continue
		}
		res.Missing = append(res.Missing, ev.Key)
		res.missing = append(res.missing, ev)
		switch {
		case dryRun:
		case len(send) >= max:
			res.OverBound++
		default:
			ev.ReceivedAt = r.now().UTC()
			if ev.ExternalIDs == nil {
				ev.ExternalIDs = map[string]string{}
			}
			ev.ExternalIDs[ReconcileRunKey] = runID
			send = append(send, *ev)
		}
	}
	if err := r.enqueue(ctx, send); err != nil {
		return res, err
	}
	for _, ev := range send {
		res.Enqueued = append(res.Enqueued, ev.Key)
	}
	if len(send) > 0 {
		r.log.InfoContext(ctx, "backfill enqueued", "source", src.Name, "events", len(send), "run", runID)
		r.metrics.Emit(map[string]string{"Connector": src.Name}, emf.Metric{Name: "Backfilled", Value: float64(len(send)), Unit: emf.Count})
	}
	return res, nil
}

// delivered reports whether the ledger holds a listed event: its key, or an equivalent event
// (same activity in the same status) of its group near its time.
func (r *Runner) delivered(ctx context.Context, ev *canonical.Event) (bool, error) {
	var it store.LedgerItem
	ok, err := r.getItem(ctx, r.cfg.LedgerTable, ledgerKey(ev.Key), &it)
	if err != nil || ok {
		return ok, err
	}
	if ev.GroupKey == "" || ev.Activity == nil {
		return false, nil
	}
	expr, err := expression.NewBuilder().WithKeyCondition(expression.Key("group_key").Equal(expression.Value(ev.GroupKey)).
		And(expression.Key("occurred_at").Between(expression.Value(store.FormatTime(ev.OccurredAt.Add(-equivalenceSpan))),
			expression.Value(store.FormatTime(ev.OccurredAt.Add(equivalenceSpan)))))).Build()
	if err != nil {
		return false, err
	}
	found := false
	err = r.query(ctx, &dynamodb.QueryInput{TableName: aws.String(r.cfg.LedgerTable), IndexName: aws.String(store.IndexByGroup),
		KeyConditionExpression: expr.KeyCondition(), ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values()}, 0,
		func(item map[string]types.AttributeValue) (bool, error) {
			var li store.LedgerItem
			if err := attributevalue.UnmarshalMap(item, &li); err != nil {
				return true, err
			}
			doc, err := li.EventJSON()
			if err != nil || doc == "" {
				return true, nil //nolint:nilerr // an unreadable stored event is not a match
			}
			d, err := canonical.Unmarshal([]byte(doc))
			if err != nil {
				return true, nil //nolint:nilerr // an unreadable stored event is not a match
			}
			found = check.Equivalent(ev, d)
			return !found, nil
		})
	return found, err
}

// enqueue sends backfill events to the ingest queue exactly as the webhook functions do:
// MessageDeduplicationId = sha256(key), MessageGroupId = sha256(group key), ten per batch.
func (r *Runner) enqueue(ctx context.Context, evs []canonical.Event) error {
	if len(evs) == 0 {
		return nil
	}
	if r.cfg.QueueURL == "" {
		return errors.New("backfill: no ingest queue configured")
	}
	for start := 0; start < len(evs); start += 10 {
		end := min(start+10, len(evs))
		entries := make([]sqstypes.SendMessageBatchRequestEntry, 0, end-start)
		for i := start; i < end; i++ {
			body, err := evs[i].Marshal()
			if err != nil {
				return err
			}
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(body)),
				MessageDeduplicationId: aws.String(evs[i].DedupID()), MessageGroupId: aws.String(evs[i].GroupID())})
		}
		out, err := r.d.SQS.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(r.cfg.QueueURL), Entries: entries})
		if err != nil {
			return fmt.Errorf("backfill: send batch: %w", err)
		}
		if len(out.Failed) > 0 {
			return fmt.Errorf("backfill: SQS refused %d of %d events (%s)", len(out.Failed), len(entries), aws.ToString(out.Failed[0].Message))
		}
	}
	return nil
}

// overdue reports (and has emit publish JobOverdue for) every job whose latest report is older than its
// interval plus grace. A job that never ran is measured from the first parity report.
func (r *Runner) overdue(ctx context.Context, x *run) error {
	var first time.Time
	if reps, err := r.reports(ctx, JobParity, 1, true); err != nil {
		return err
	} else if len(reps) > 0 {
		first = reps[0].StartedAt
	}
	now := r.now()
	x.overdue = map[string]bool{}
	for _, job := range Jobs {
		var last time.Time
		if job == JobParity {
			last = now // this run
		} else if rep, err := r.LatestReport(ctx, job); err != nil {
			return err
		} else if rep != nil {
			last = rep.StartedAt
		}
		js := r.d.Settings.Job(job)
		over := check.Overdue(last, first, now, js.Interval, r.d.Settings.Grace)
		if over {
			x.rep.Overdue = append(x.rep.Overdue, job)
			lastText := "never"
			if !last.IsZero() {
				lastText = last.Format(time.RFC3339)
			}
			x.add(check.Finding{Kind: check.KindJobOverdue, Entity: "job", ID: job, Stored: lastText,
				Expected: "a run every " + js.Interval.String(), Detail: "the job has not stored a report within its interval plus grace",
				Repair: "crmsync reconcile " + job + "; then check its schedule and function errors"})
		}
		x.overdue[job] = over
	}
	x.rep.Counts["jobs_overdue"] = len(x.rep.Overdue)
	return nil
}
