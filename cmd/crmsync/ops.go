package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/alarmstate"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/dlq"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/wiring"
	wiredreconcile "github.com/crmsync/crmsync/shared/wiring/reconcile"
)

// reconcilerFor builds the reconcile runner exactly as the reconcile function is built. In AWS it
// reads the deployed parity function's environment (so the CLI lists the same vendor APIs with the
// same secrets); locally it points the listable sources at the local stack's vendor fakes.
func reconcilerFor(cmd *cobra.Command, ref *stackRef) (*reconcile.Runner, error) {
	if err := ref.require("LedgerTable", "CrmTable", "IngestQueue", "IngestDLQ", "QuarantineBucket"); err != nil {
		return nil, err
	}
	env := map[string]string{"LEDGER_TABLE": ref.LedgerTable, "CRM_TABLE": ref.CrmTable, "INGEST_QUEUE_URL": ref.IngestQueueURL,
		"DLQ_URL": ref.DLQURL, "QUARANTINE_BUCKET": ref.QuarantineBucket}
	if ref.Local {
		for _, s := range wiredreconcile.Sources {
			if sec, ok := ref.Resources[secretLogicalID(s.Name)]; ok {
				env[s.SecretVar] = sec.Ref
			}
			if prefix, ok := localVendorFakes[s.BaseURLVar]; ok {
				env[s.BaseURLVar] = ref.APIBase + "/_vendor/" + prefix
			}
		}
	} else {
		name, err := ref.Function("ReconcileParityFunction")
		if err != nil {
			return nil, err
		}
		out, err := lambda.NewFromConfig(ref.AWS).GetFunctionConfiguration(cmd.Context(), &lambda.GetFunctionConfigurationInput{FunctionName: aws.String(name)})
		if err != nil {
			return nil, fmt.Errorf("read %s's configuration: %w", name, err)
		}
		if out.Environment != nil {
			for k, v := range out.Environment.Variables {
				if _, set := env[k]; !set && k != "JOB" {
					env[k] = v
				}
			}
		}
	}
	return wiredreconcile.New(wiring.Env{Getenv: func(k string) string { return env[k] }, AWS: ref.AWS,
		Log: slog.New(slog.DiscardHandler), Stdout: io.Discard})
}

// localVendorFakes maps the reconcile function's vendor API base URL variables to the local
// stack's vendor fakes, served at <api>/_vendor/<prefix> (held equal to the local stack's own map
// by a test).
var localVendorFakes = map[string]string{
	"TWILIO_API_BASE_URL":   "twilio",
	"CALENDLY_API_BASE_URL": "calendly",
	"MAILGUN_API_BASE_URL":  "mailgun",
	"TYPEFORM_API_BASE_URL": "typeform",
}

func newReconcileCmd() *cobra.Command {
	var since, until string
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "reconcile <parity|consistency|mapping-review>",
		Short: "Run a reconciliation job now, as its scheduled function would, and print its report",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := reconcile.Request{Job: args[0], DryRun: dryRun}
			now := time.Now()
			if since != "" {
				t, err := parseSince(since, now)
				if err != nil {
					return err
				}
				req.Since = t.UTC().Format(time.RFC3339)
			}
			if until != "" {
				t, err := parseSince(until, now)
				if err != nil {
					return fmt.Errorf("--until: %w", err)
				}
				req.Until = t.UTC().Format(time.RFC3339)
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			r, err := reconcilerFor(cmd, ref)
			if err != nil {
				return err
			}
			rep, err := r.Run(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			printReport(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "window start: a duration ago (24h, 7d) or an RFC 3339 time (default: the job's lookback)")
	f.StringVar(&until, "until", "", "window end (default now)")
	f.BoolVar(&dryRun, "dry-run", false, "report without repairing or storing anything")
	f.BoolVar(&asJSON, "json", false, "print the run's report as JSON (job, run_id, counts, drift_percent, breaches, findings...)")
	return cmd
}

func printReport(w io.Writer, rep reconcile.Report) {
	fmt.Fprintf(w, "%s run %s (%s → %s)\n", rep.Job, rep.RunID, rep.Since.Format(time.RFC3339), rep.Until.Format(time.RFC3339))
	keys := make([]string, 0, len(rep.Counts))
	for k := range rep.Counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	for _, k := range keys {
		fmt.Fprintf(tw, "  %s\t%d\n", k, rep.Counts[k])
	}
	_ = tw.Flush()
	if rep.SLABreached {
		fmt.Fprintf(w, "  SLA breached: %s\n", strings.Join(rep.Breaches, ", "))
	}
	for _, f := range rep.Findings {
		b, _ := json.Marshal(f)
		fmt.Fprintf(w, "  finding %s\n", b)
	}
}

func newBackfillCmd() *cobra.Command {
	var source, since, until string
	var max int
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "backfill --source <twilio|calendly|typeform|mailgun> --since <t> [--until <t>]",
		Short: "List the vendor's items in a window and enqueue those the ledger lacks",
		Long: `Backfill lists the vendor's items through the connector's list method and enqueues each one the
ledger lacks, through the same queue, ledger and policy as a webhook delivery. It is safe to
interrupt and re-run: the ledger and the queue's deduplication ids are its checkpoint, so items
enqueued or applied by an earlier run are not enqueued or applied again. --max bounds one run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if source == "" || since == "" {
				return fmt.Errorf("--source and --since are required")
			}
			now := time.Now()
			from, err := parseSince(since, now)
			if err != nil {
				return err
			}
			to := now
			if until != "" {
				if to, err = parseSince(until, now); err != nil {
					return fmt.Errorf("--until: %w", err)
				}
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			r, err := reconcilerFor(cmd, ref)
			if err != nil {
				return err
			}
			res, err := backfillSliced(cmd, r, source, from, to, max, dryRun, asJSON)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			verb := "enqueued"
			if dryRun {
				verb = "would enqueue"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s → %s: %d listed, %d already delivered, %d missing; %s %d\n", source,
				res.Since.Format(time.RFC3339), res.Until.Format(time.RFC3339), res.Listed, res.Delivered, len(res.Missing), verb, len(res.Enqueued))
			for _, k := range res.Enqueued {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", k)
			}
			if left := len(res.Missing) - len(res.Enqueued); left > 0 && !dryRun {
				fmt.Fprintf(cmd.OutOrStdout(), "%d left beyond this run's bound: run the same command again to continue\n", left)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&source, "source", "", "the connector to list: twilio, calendly, typeform or mailgun")
	f.StringVar(&since, "since", "", "window start: a duration ago (24h, 7d) or an RFC 3339 time")
	f.StringVar(&until, "until", "", "window end (default now)")
	f.IntVar(&max, "max", 0, "enqueue at most this many in this run (0 = the configured bound)")
	f.BoolVar(&dryRun, "dry-run", false, "list what is missing; enqueue nothing")
	f.BoolVar(&asJSON, "json", false, "print {source, since, until, listed, delivered, missing: [keys], ...}")
	return cmd
}

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect the dead-letter queue and move its messages back to the ingest queue"}
	var listJSON bool
	var listMax int
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead-lettered messages (key, source, group, receives) without consuming them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			if err := ref.require("IngestDLQ"); err != nil {
				return err
			}
			client := sqs.NewFromConfig(ref.AWS)
			waiting, _, err := queueCounts(cmd.Context(), client, ref.DLQURL)
			if err != nil {
				return err
			}
			res, err := dlq.List(cmd.Context(), client, ref.DLQURL, dlq.Options{Max: listMax})
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(cmd.OutOrStdout(), res.Messages)
			}
			printDLQ(cmd.OutOrStdout(), res.Messages)
			noteHidden(cmd.OutOrStdout(), len(res.Messages), waiting, listMax)
			return nil
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print [{message_id, key, source, group_id, dedup_id, sent_at, receives}]")
	list.Flags().IntVar(&listMax, "max", 0, "at most this many (0 = all)")
	var dryRun, asJSON bool
	var max int
	redrive := &cobra.Command{
		Use:   "redrive [--dry-run] [--max N]",
		Short: "Move DLQ messages back to the ingest queue, keeping their group ids (order) and event keys (idempotency)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			if err := ref.require("IngestDLQ", "IngestQueue"); err != nil {
				return err
			}
			waiting, _, err := queueCounts(cmd.Context(), sqs.NewFromConfig(ref.AWS), ref.DLQURL)
			if err != nil {
				return err
			}
			res, err := redrive(cmd, ref, dryRun, max, asJSON)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			printDLQ(cmd.OutOrStdout(), res.Messages)
			if dryRun {
				noteHidden(cmd.OutOrStdout(), len(res.Messages), waiting, max)
				fmt.Fprintf(cmd.OutOrStdout(), "dry run: would move %d message(s); nothing moved\n", len(res.Messages))
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "moved %d message(s) back to the ingest queue\n", res.Moved)
			}
			return nil
		},
	}
	redrive.Flags().BoolVar(&dryRun, "dry-run", false, "list what would move; move nothing")
	redrive.Flags().IntVar(&max, "max", 0, "move at most this many (0 = all)")
	redrive.Flags().BoolVar(&asJSON, "json", false, "print {messages: [...], moved, dry_run}")
	cmd.AddCommand(list, redrive)
	return cmd
}

// noteHidden says when a listing shows fewer messages than the DLQ holds: the DLQ is FIFO, and
// SQS hands out no further message of a group while one of it is in flight, so a listing (which
// only holds messages, never deletes them) sees the first messages of each group. A redrive
// deletes as it goes and so moves every message.
func noteHidden(w io.Writer, listed, waiting, max int) {
	if listed >= waiting || (max > 0 && listed >= max) {
		return
	}
	fmt.Fprintf(w, "listed %d of the %d messages waiting: SQS hands out no further message of a FIFO group while one of it is "+
		"being listed, so later messages of a group stay hidden; `crmsync dlq redrive` moves them all\n", listed, waiting)
}

// redriveChunk is how many messages one redrive step moves (one SQS batch).
const redriveChunk = 10

// redrive moves DLQ messages back in steps of redriveChunk, reporting progress against the
// DLQ's depth; a dry run lists in one step (listing makes the messages visible again).
func redrive(cmd *cobra.Command, ref *stackRef, dryRun bool, max int, quiet bool) (dlq.Result, error) {
	client := sqs.NewFromConfig(ref.AWS)
	if dryRun {
		return dlq.Redrive(cmd.Context(), client, ref.DLQURL, ref.IngestQueueURL, dlq.Options{DryRun: true, Max: max})
	}
	visible, inflight, err := queueCounts(cmd.Context(), client, ref.DLQURL)
	if err != nil {
		return dlq.Result{}, err
	}
	total := visible + inflight
	if max > 0 && max < total {
		total = max
	}
	bar := newProgress(cmd, "dlq redrive", total, quiet || total <= redriveChunk)
	defer bar.Finish()
	var all dlq.Result
	for max <= 0 || all.Moved < max {
		n := redriveChunk
		if max > 0 {
			n = min(n, max-all.Moved)
		}
		res, err := dlq.Redrive(cmd.Context(), client, ref.DLQURL, ref.IngestQueueURL, dlq.Options{Max: n})
		all.Messages = append(all.Messages, res.Messages...)
		all.Moved += res.Moved
		bar.Add(res.Moved)
		if err != nil {
			return all, err
		}
		if res.Moved < n {
			break
		}
	}
	return all, nil
}

// backfillSliced runs a backfill over [from, to) in up to 24 slices of at least an hour, so a
// long window reports progress slice by slice. The bound (--max, else the parity job's
// max_backfill) holds for the whole run: once it is reached the remaining slices are only
// listed, their missing items counted over the bound, as one unsliced run would.
func backfillSliced(cmd *cobra.Command, r *reconcile.Runner, source string, from, to time.Time, bound int, dryRun, quiet bool) (reconcile.BackfillResult, error) {
	n := min(max(int(to.Sub(from)/time.Hour), 0), 24)
	if n < 2 {
		return r.Backfill(cmd.Context(), source, from, to, bound, dryRun)
	}
	if bound <= 0 {
		settings, err := wiredreconcile.LoadSettings("")
		if err != nil {
			return reconcile.BackfillResult{}, err
		}
		bound = settings.Job(reconcile.JobParity).MaxBackfill
	}
	size := to.Sub(from) / time.Duration(n)
	all := reconcile.BackfillResult{Source: source, Since: from, Until: to, DryRun: dryRun, Missing: []string{}, Enqueued: []string{}}
	bar := newProgress(cmd, "backfill "+source, n, quiet)
	defer bar.Finish()
	for i := 0; i < n; i++ {
		start, end := from.Add(time.Duration(i)*size), from.Add(time.Duration(i+1)*size)
		if i == n-1 {
			end = to
		}
		left := bound - len(all.Enqueued)
		listOnly := dryRun || (bound > 0 && left <= 0)
		res, err := r.Backfill(cmd.Context(), source, start, end, max(left, 1), listOnly)
		if err != nil {
			return all, fmt.Errorf("backfill %s → %s: %w", start.Format(time.RFC3339), end.Format(time.RFC3339), err)
		}
		all.Listed += res.Listed
		all.Delivered += res.Delivered
		all.Missing = append(all.Missing, res.Missing...)
		all.Enqueued = append(all.Enqueued, res.Enqueued...)
		if listOnly && !dryRun {
			all.OverBound += len(res.Missing)
		} else {
			all.OverBound += res.OverBound
		}
		bar.Add(1)
	}
	return all, nil
}

func printDLQ(w io.Writer, ms []dlq.Message) {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSOURCE\tGROUP\tRECEIVES\tSENT")
	for _, m := range ms {
		g := m.GroupID
		if len(g) > 12 {
			g = g[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", m.Key, m.Source, g, m.Receives, m.SentAt.Format(time.RFC3339))
	}
	_ = tw.Flush()
}

// statusReport is the JSON shape of `crmsync status`.
type statusReport struct {
	Stack  string `json:"stack"`
	Local  bool   `json:"local"`
	Ingest struct {
		Messages        int      `json:"messages"`
		InFlight        int      `json:"in_flight"`
		OldestAgeSecond *float64 `json:"oldest_age_seconds"` // null when unknown
	} `json:"ingest_queue"`
	DLQMessages int                       `json:"dlq_messages"`
	Outcomes24h map[string]map[string]int `json:"outcomes_24h"` // source → outcome → count
	// Rejected are the latest REJECTED events of the last 24 h (at most maxRejectedShown), newest
	// first, with the reason each was refused: what `crmsync replay <key>` re-runs after a fix.
	Rejected    []rejectedEvent       `json:"rejected_24h"`
	Quarantined int                   `json:"quarantined"`
	Jobs        map[string]*jobStatus `json:"jobs"`
	Alarms      []alarmstate.Status   `json:"alarms"`
}

// rejectedEvent is one REJECTED ledger entry as status shows it.
type rejectedEvent struct {
	Key        string `json:"key"`
	Source     string `json:"source"`
	Reason     string `json:"reason"`
	RecordedAt string `json:"recorded_at"`
}

// maxRejectedShown bounds the rejections status lists.
const maxRejectedShown = 10

type jobStatus struct {
	LastRun     string         `json:"last_run,omitempty"`
	FinishedAt  *time.Time     `json:"finished_at,omitempty"`
	Counts      map[string]int `json:"counts,omitempty"`
	SLABreached bool           `json:"sla_breached"`
}

func queueCounts(ctx context.Context, client *sqs.Client, url string) (visible, inflight int, err error) {
	out, err := client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		return 0, 0, fmt.Errorf("queue attributes: %w", err)
	}
	visible, _ = strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	inflight, _ = strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return visible, inflight, nil
}

func newStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "What is stuck and why: queue depth and age, DLQ, outcomes per connector, quarantine, jobs, alarms",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			if err := ref.require("IngestQueue", "IngestDLQ", "LedgerTable", "QuarantineBucket"); err != nil {
				return err
			}
			st := statusReport{Stack: ref.Name, Local: ref.Local, Outcomes24h: map[string]map[string]int{}, Jobs: map[string]*jobStatus{}}
			q := sqs.NewFromConfig(ref.AWS)
			if st.Ingest.Messages, st.Ingest.InFlight, err = queueCounts(ctx, q, ref.IngestQueueURL); err != nil {
				return err
			}
			v, f, err := queueCounts(ctx, q, ref.DLQURL)
			if err != nil {
				return err
			}
			st.DLQMessages = v + f
			if !ref.Local {
				st.Ingest.OldestAgeSecond = oldestAge(ctx, ref)
			}
			since := time.Now().Add(-24 * time.Hour)
			for _, src := range append(registry.Names(), "crm", "reconcile") {
				items, err := ledgerBySource(cmd, ref, src, since, "")
				if err != nil {
					return err
				}
				for _, it := range items {
					if st.Outcomes24h[src] == nil {
						st.Outcomes24h[src] = map[string]int{}
					}
					st.Outcomes24h[src][it.Outcome]++
					if it.Outcome == store.Rejected {
						st.Rejected = append(st.Rejected, rejectedEvent{Key: it.Key, Source: src, Reason: it.Reason, RecordedAt: it.RecordedAt})
					}
				}
			}
			sort.Slice(st.Rejected, func(i, j int) bool { return st.Rejected[i].RecordedAt > st.Rejected[j].RecordedAt })
			st.Rejected = st.Rejected[:min(len(st.Rejected), maxRejectedShown)]
			qs, err := listQuarantine(ctx, ref)
			if err != nil {
				return err
			}
			st.Quarantined = len(qs)
			if r, err := reconcilerFor(cmd, ref); err == nil {
				for _, job := range reconcile.Jobs {
					js := &jobStatus{}
					st.Jobs[job] = js
					rep, err := r.LatestReport(ctx, job)
					if err != nil {
						return err
					}
					if rep != nil {
						fin := rep.FinishedAt
						js.LastRun, js.FinishedAt, js.Counts, js.SLABreached = rep.RunID, &fin, rep.Counts, rep.SLABreached
					}
				}
			}
			if st.Alarms, err = alarmStates(ctx, ref); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), &st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {stack, local, ingest_queue: {messages, in_flight, oldest_age_seconds}, dlq_messages, outcomes_24h, quarantined, jobs, alarms}")
	return cmd
}

// oldestAge reads the ingest queue's ApproximateAgeOfOldestMessage from CloudWatch (AWS only).
func oldestAge(ctx context.Context, ref *stackRef) *float64 {
	name := ref.IngestQueueURL[strings.LastIndex(ref.IngestQueueURL, "/")+1:]
	now := time.Now()
	out, err := cloudwatch.NewFromConfig(ref.AWS).GetMetricStatistics(ctx, &cloudwatch.GetMetricStatisticsInput{
		Namespace: aws.String("AWS/SQS"), MetricName: aws.String("ApproximateAgeOfOldestMessage"),
		Dimensions: []cwtypes.Dimension{{Name: aws.String("QueueName"), Value: aws.String(name)}},
		StartTime:  aws.Time(now.Add(-10 * time.Minute)), EndTime: aws.Time(now), Period: aws.Int32(60),
		Statistics: []cwtypes.Statistic{cwtypes.StatisticMaximum}})
	if err != nil || len(out.Datapoints) == 0 {
		return nil
	}
	sort.Slice(out.Datapoints, func(i, j int) bool {
		return aws.ToTime(out.Datapoints[i].Timestamp).After(aws.ToTime(out.Datapoints[j].Timestamp))
	})
	return out.Datapoints[0].Maximum
}

// alarmStates reads the alarms: the local stack's evaluator, or CloudWatch's alarms of the stack.
func alarmStates(ctx context.Context, ref *stackRef) ([]alarmstate.Status, error) {
	if ref.Local {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref.APIBase+"/_local/alarms", nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("local alarms: %w", err)
		}
		defer resp.Body.Close()
		var v struct {
			Alarms []alarmstate.Status `json:"alarms"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			return nil, fmt.Errorf("local alarms: %w", err)
		}
		return v.Alarms, nil
	}
	var names []string
	for id, r := range ref.Resources {
		if r.Type == "AWS::CloudWatch::Alarm" || strings.HasSuffix(id, "Alarm") {
			names = append(names, r.Ref)
		}
	}
	var out []alarmstate.Status
	cw := cloudwatch.NewFromConfig(ref.AWS)
	for i := 0; i < len(names); i += 100 {
		page, err := cw.DescribeAlarms(ctx, &cloudwatch.DescribeAlarmsInput{AlarmNames: names[i:min(i+100, len(names))]})
		if err != nil {
			return nil, fmt.Errorf("describe alarms: %w", err)
		}
		for _, a := range page.MetricAlarms {
			runbook, _ := alarmstate.RunbookOf(aws.ToString(a.AlarmDescription))
			out = append(out, alarmstate.Status{Name: aws.ToString(a.AlarmName), State: alarmstate.State(a.StateValue),
				Reason: aws.ToString(a.StateReason), Runbook: runbook,
				Since: aws.ToTime(a.StateUpdatedTimestamp)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func printStatus(w io.Writer, st *statusReport) {
	where := "AWS"
	if st.Local {
		where = "local"
	}
	fmt.Fprintf(w, "stack %s (%s)\n", st.Stack, where)
	age := "unknown"
	if st.Ingest.OldestAgeSecond != nil {
		age = fmt.Sprintf("%.0fs", *st.Ingest.OldestAgeSecond)
	}
	fmt.Fprintf(w, "ingest queue: %d waiting, %d in flight, oldest %s\n", st.Ingest.Messages, st.Ingest.InFlight, age)
	fmt.Fprintf(w, "dead-letter queue: %d\n", st.DLQMessages)
	fmt.Fprintf(w, "quarantined payloads: %d\n", st.Quarantined)
	fmt.Fprintln(w, "ledger outcomes, last 24 h:")
	srcs := make([]string, 0, len(st.Outcomes24h))
	for s := range st.Outcomes24h {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	for _, s := range srcs {
		var parts []string
		for _, o := range []string{"APPLIED", "NOOP", "REJECTED", "QUARANTINED"} {
			if n := st.Outcomes24h[s][o]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", o, n))
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\n", s, strings.Join(parts, ", "))
	}
	_ = tw.Flush()
	if len(st.Rejected) > 0 {
		fmt.Fprintln(w, "rejected, latest first (fix the cause, then crmsync replay <key>):")
		for _, r := range st.Rejected {
			fmt.Fprintf(w, "  %s  %s  %s\n", r.RecordedAt, r.Key, r.Reason)
		}
	}
	fmt.Fprintln(w, "reconcile jobs:")
	for _, job := range reconcile.Jobs {
		js := st.Jobs[job]
		switch {
		case js == nil || js.LastRun == "":
			fmt.Fprintf(w, "  %s: never run\n", job)
		default:
			fmt.Fprintf(w, "  %s: last run %s, SLA breached: %v\n", job, js.LastRun, js.SLABreached)
		}
	}
	fmt.Fprintln(w, "alarms:")
	for _, a := range st.Alarms {
		fmt.Fprintf(w, "  %-40s %-17s %s\n", a.Name, a.State, a.Runbook)
	}
}
