// Package reconcile owns crmsync's scheduled reconciliation jobs (design section 7): parity
// (daily), consistency (weekly) and mapping-review (monthly). Each run reads the CRM table, the
// ledger, the queues, the quarantine bucket and (parity) the vendors' list APIs; stores one
// report and its findings in the CRM table; emits EMF metrics in the CrmSync namespace with the
// dimension Job (JobHeartbeat, DriftItems, DriftPercent, MissingEvents, SlaBreached and the
// stuck-work counts) that the CloudWatch alarms of template.yaml watch; and compares the run's
// measures with the SLAs of config/reconcile.yaml.
//
// What each job repairs, and what it only reports:
//
//   - parity (a) recomputes every contact changed in the window from the ledger (the worker's
//     Rebuild: the current policy over the contact's applied events) and compares it with what
//     is stored. A difference is recorded as a field_drift finding, not rewritten: a record
//     edited behind the pipeline's back has no event to replay, and the policy cannot say
//     whether the edit or the ledger is right, so the finding names the command that rewrites
//     the record from the ledger after a human looked (crmsync rebuild --contact <id>).
//   - parity (b) lists the vendor items of the window (Twilio calls, Calendly invitees,
//     Typeform responses) and enqueues each one the ledger does not hold as a backfill event
//     through the ingest queue, ledger and policy (bounded per run) — the repair is automatic.
//   - parity (c) counts stuck work: DLQ depth, quarantined payloads, the ingest backlog, and
//     ledger items of the window that never finished (rejected, or flagged as a conflicting
//     payload).
//   - consistency moves unassociated activities under the contact that now owns one of their
//     identities (automatic, audited) and reports contacts without attribution, identities
//     shared by two contacts, activities whose deal belongs to another account, and calls
//     without a terminal status after 24 h.
//   - mapping-review reports vendor fields the ledger's events carried unmapped, policy fields
//     no event proposed, and the mapping and policy versions in use per connector.
//
// Storage (CRM table): the report of a run is pk RECONCILE#<job>, sk RUN#<run>; its findings
// are pk RECONCILE#<job>#RUN#<run>, sk FINDING#<n>. Both expire with the CRM table's TTL.
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/reconcile/check"
	"github.com/crmsync/crmsync/shared/worker"
)

// DynamoAPI is the part of the DynamoDB client the jobs use (*dynamodb.Client satisfies it).
type DynamoAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// SQSAPI is the part of the SQS client the jobs use: queue depths and backfill sends.
type SQSAPI interface {
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// S3API is the S3 call the quarantine count makes.
type S3API interface {
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// Worker is what the jobs need of the worker (*worker.Worker satisfies it).
type Worker interface {
	Rebuild(ctx context.Context, contactID string) (*worker.Rebuilt, error)
	Reassociate(ctx context.Context, activityID, key, why string) (worker.Reassociation, error)
}

// SecretSource returns a connector's secret by id (*secrets.Cache satisfies it).
type SecretSource interface {
	Get(ctx context.Context, id string) (connector.Secret, error)
}

// Source is one vendor parity can list.
type Source struct {
	// Name is the source name (twilio, calendly, typeform).
	Name string
	// Lister is the connector's list implementation.
	Lister connector.Lister
	// SecretID is the connector's secret (list credentials).
	SecretID string
	// API is the vendor API's base URL and HTTP client.
	API connector.API
}

// Config is a reconcile function's resources.
type Config struct {
	// Job is the function's own job (JOB); a request may name another.
	Job string
	// LedgerTable and CRMTable are the table names.
	LedgerTable string
	// CRMTable is the CRM table's name.
	CRMTable string
	// QueueURL is the ingest queue (backfill, backlog).
	QueueURL string
	// DLQURL is the ingest dead-letter queue.
	DLQURL string
	// Bucket is the quarantine bucket.
	Bucket string
}

// Deps are a runner's clients and settings.
type Deps struct {
	// DynamoDB reads the tables and stores the findings.
	DynamoDB DynamoAPI
	// SQS reads queue depths and sends backfill events.
	SQS SQSAPI
	// S3 counts quarantined payloads.
	S3 S3API
	// Worker recomputes contacts and re-associates activities.
	Worker Worker
	// Secrets reads the listable connectors' secrets.
	Secrets SecretSource
	// Sources are the listable vendors parity checks (those also configured in Settings).
	Sources []Source
	// Settings is config/reconcile.yaml; required.
	Settings *Settings
	// Policy is the ownership policy (attribution fields, mapping review); required.
	Policy *policy.Policy
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Log receives structured logs; discarded when nil.
	Log *slog.Logger
	// Metrics receives EMF lines (stdout in Lambda); discarded when nil.
	Metrics io.Writer
	// DeadlineMargin is how much time before the context's deadline a run stops taking new
	// items, checkpoints and stores its report; DefaultDeadlineMargin when zero or negative.
	DeadlineMargin time.Duration
}

// DefaultDeadlineMargin is the deadline margin when Deps names none: room, within the
// function's 300 s timeout, for the stuck-work counts, the findings and the report.
const DefaultDeadlineMargin = 30 * time.Second

// Runner runs reconcile jobs. It is safe for concurrent use.
type Runner struct {
	cfg     Config
	d       Deps
	now     func() time.Time
	log     *slog.Logger
	metrics *emf.Writer
	margin  time.Duration
}

// New returns a runner.
func New(cfg Config, d Deps) (*Runner, error) {
	switch {
	case d.Settings == nil || d.Policy == nil:
		return nil, errors.New("reconcile: Settings and Policy are required")
	case d.DynamoDB == nil || d.SQS == nil || d.S3 == nil || d.Worker == nil:
		return nil, errors.New("reconcile: DynamoDB, SQS, S3 and Worker are required")
	case cfg.LedgerTable == "" || cfg.CRMTable == "":
		return nil, errors.New("reconcile: LedgerTable and CRMTable are required")
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	margin := d.DeadlineMargin
	if margin <= 0 {
		margin = DefaultDeadlineMargin
	}
	return &Runner{cfg: cfg, d: d, now: now, log: log, metrics: emf.New(d.Metrics, now), margin: margin}, nil
}

// Request is a run's input: the schedule's Input ({"job": "parity"}), an EventBridge Scheduled
// Event (no job: the function's own), or the CLI's request.
type Request struct {
	// Job names the job; the function's own when empty.
	Job string `json:"job"`
	// Since is the window's start (RFC 3339); now - the job's lookback when empty.
	Since string `json:"since,omitempty"`
	// Until is the window's end (RFC 3339); now when empty.
	Until string `json:"until,omitempty"`
	// DryRun reports without repairing (no backfill, no re-association), stores nothing and
	// emits no metrics.
	DryRun bool `json:"dry_run,omitempty"`
}

// MaxReportFindings bounds the findings a report carries in its answer; MaxStoredFindings those
// stored per run. Counts always cover every finding.
const (
	MaxReportFindings = 200
	MaxStoredFindings = 1000
)

// Report is one run's result.
type Report struct {
	// Job is the job run.
	Job string `json:"job" dynamodbav:"job"`
	// RunID is the run's id: its start in RunLayout.
	RunID string `json:"run_id" dynamodbav:"run_id"`
	// StartedAt is when the run started.
	StartedAt time.Time `json:"started_at" dynamodbav:"started_at"`
	// FinishedAt is when it finished.
	FinishedAt time.Time `json:"finished_at" dynamodbav:"finished_at"`
	// Since is the window's start.
	Since time.Time `json:"since" dynamodbav:"since"`
	// Until is the window's end.
	Until time.Time `json:"until" dynamodbav:"until"`
	// DryRun is set when nothing was repaired or stored.
	DryRun bool `json:"dry_run,omitempty" dynamodbav:"dry_run,omitempty"`
	// Counts are the run's counts by name (see the job descriptions).
	Counts map[string]int `json:"counts" dynamodbav:"counts"`
	// DriftPercent is parity's share of checked contacts with drift, in percent.
	DriftPercent float64 `json:"drift_percent" dynamodbav:"drift_percent"`
	// Breaches are the SLAs breached ("measure=value>limit").
	Breaches []string `json:"breaches,omitempty" dynamodbav:"breaches,omitempty"`
	// SLABreached is set when any SLA was breached.
	SLABreached bool `json:"sla_breached" dynamodbav:"sla_breached"`
	// Overdue lists the jobs found overdue (parity only).
	Overdue []string `json:"overdue,omitempty" dynamodbav:"overdue,omitempty"`
	// Findings are the run's findings (at most MaxReportFindings; FindingsTotal counts all).
	Findings []check.Finding `json:"findings,omitempty" dynamodbav:"-"`
	// FindingsTotal counts every finding of the run.
	FindingsTotal int `json:"findings_total" dynamodbav:"findings_total"`
	// FindingsStored counts the findings stored under the run.
	FindingsStored int `json:"findings_stored" dynamodbav:"findings_stored"`
	// Partial is set when the run stopped near its deadline before finishing; Checkpoint says
	// where, and the job's next run without an explicit window continues from there.
	Partial bool `json:"partial,omitempty" dynamodbav:"partial,omitempty"`
	// Checkpoint is where a partial run stopped (nil when the run finished).
	Checkpoint *Checkpoint `json:"checkpoint,omitempty" dynamodbav:"checkpoint,omitempty"`
	// Continues is the partial run this run continued (its window, counts and checkpoint).
	Continues string `json:"continues,omitempty" dynamodbav:"continues,omitempty"`
}

// run is one job run in progress.
type run struct {
	rep      *Report
	findings []check.Finding
	measures map[string]float64
	overdue  map[string]bool // parity: each job's verdict, emitted as JobOverdue{Job}
	resume   Checkpoint      // where the continued run stopped (zero: from the start)
}

func (x *run) add(fs ...check.Finding) { x.findings = append(x.findings, fs...) }

// RunLayout formats a run id from its start time (UTC, milliseconds, sorts as time).
const RunLayout = "20060102T150405.000Z"

// Handle is the Lambda entry point: it runs the job the payload names (else the function's
// own). It accepts the schedule's Input ({"job": "parity"}) or an EventBridge Scheduled Event.
func (r *Runner) Handle(ctx context.Context, payload json.RawMessage) (Report, error) {
	var req Request
	_ = json.Unmarshal(payload, &req) // a Scheduled Event has no job: the function's own runs
	return r.Run(ctx, req)
}

// Run runs one job and returns its report (the CLI's `crmsync reconcile <job>` calls it).
func (r *Runner) Run(ctx context.Context, req Request) (Report, error) {
	job := req.Job
	if job == "" {
		job = r.cfg.Job
	}
	if !slices.Contains(Jobs, job) {
		return Report{}, fmt.Errorf("unknown job %q (want one of %v)", job, Jobs)
	}
	start := r.now().UTC()
	js := r.d.Settings.Job(job)
	since, until := start.Add(-js.Lookback), start
	var err error
	if req.Since != "" {
		if since, err = parseTime(req.Since); err != nil {
			return Report{}, fmt.Errorf("since: %w", err)
		}
	}
	if req.Until != "" {
		if until, err = parseTime(req.Until); err != nil {
			return Report{}, fmt.Errorf("until: %w", err)
		}
	}
	if !since.Before(until) {
		return Report{}, fmt.Errorf("empty window: since %s is not before until %s", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	x := &run{rep: &Report{Job: job, RunID: start.Format(RunLayout), StartedAt: start, Since: since, Until: until, DryRun: req.DryRun,
		Counts: map[string]int{}}, measures: map[string]float64{}}
	if req.Since == "" && req.Until == "" && !req.DryRun {
		if err := r.continueRun(ctx, x); err != nil {
			return *x.rep, err
		}
	}
	switch job {
	case JobParity:
		err = r.parity(ctx, x, req.DryRun)
	case JobConsistency:
		err = r.consistency(ctx, x, req.DryRun)
	case JobMappingReview:
		err = r.mappingReview(ctx, x)
	}
	if err == nil && job == JobParity {
		err = r.overdue(ctx, x) // cheap, and every parity run must judge the other jobs
	}
	if err == nil {
		err = r.stuck(ctx, x)
	}
	if err != nil {
		r.log.ErrorContext(ctx, "reconcile run failed", "job", job, "run", x.rep.RunID, "error", err.Error())
		return *x.rep, err
	}
	r.finish(x)
	if !req.DryRun { // a dry run neither stores nor emits: it must not satisfy a heartbeat alarm
		if err := r.store(ctx, x); err != nil {
			return *x.rep, err
		}
		r.emit(x)
	}
	r.log.InfoContext(ctx, "reconcile run finished", "job", job, "run", x.rep.RunID, "counts", x.rep.Counts,
		"breaches", x.rep.Breaches, "findings", x.rep.FindingsTotal, "partial", x.rep.Partial, "continues", x.rep.Continues)
	return *x.rep, nil
}

func parseTime(s string) (time.Time, error) {
	for _, l := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time or a date", s)
}

// finish computes the measures, the SLA verdict and the report's findings.
func (r *Runner) finish(x *run) {
	rep := x.rep
	sort.SliceStable(x.findings, func(i, j int) bool { return x.findings[i].Kind < x.findings[j].Kind })
	rep.FindingsTotal = len(x.findings)
	rep.Findings = x.findings[:min(len(x.findings), MaxReportFindings)]
	rep.Counts["drift_items"] += driftItems(x.findings) // carried across a continued run's parts
	rep.FinishedAt = r.now().UTC()
	if rep.Partial { // a cut-short run's counts are not the window's: no SLA verdict
		return
	}
	for k, v := range rep.Counts {
		x.measures[k] = float64(v)
	}
	x.measures["drift_percent"] = rep.DriftPercent
	rep.Breaches = check.Breaches(r.d.Settings.SLAs[rep.Job], x.measures)
	rep.SLABreached = len(rep.Breaches) > 0
}

// driftItems counts the findings that are drift (everything but informational version lists).
func driftItems(fs []check.Finding) int {
	n := 0
	for _, f := range fs {
		if f.Kind != check.KindVersions {
			n++
		}
	}
	return n
}

// metricCounts maps report counts to the metric names the alarms and the dashboard use.
var metricCounts = map[string]string{
	"missing_events":           "MissingEvents",
	"dlq_messages":             "DlqMessages",
	"quarantined_payloads":     "QuarantinedPayloads",
	"ingest_backlog":           "IngestBacklog",
	"rejected_events":          "RejectedEvents",
	"flagged_events":           "FlaggedEvents",
	"backfilled":               "Backfilled",
	"source_errors":            "SourceErrors",
	"contacts_checked":         "RecordsChecked",
	"reassociated":             "Reassociated",
	"unassociated_activities":  "UnassociatedActivities",
	"shared_identities":        "SharedIdentities",
	"deal_account_mismatches":  "DealAccountMismatches",
	"calls_not_terminal":       "CallsNotTerminal",
	"no_attribution":           "ContactsWithoutAttribution",
	"unmapped_fields":          "UnmappedFields",
	"policy_fields_never_seen": "PolicyFieldsNeverSeen",
}

// partialMetrics are the counts a partial run emits: snapshots of stuck work, true whenever
// taken (the window's counts wait for the run that completes it).
var partialMetrics = map[string]bool{"dlq_messages": true, "quarantined_payloads": true, "ingest_backlog": true}

// emit publishes the run's metrics. Every stored run, partial or not, emits JobHeartbeat (the
// job is alive and progressing) and JobPartial; only a complete run emits the SLA and drift
// measures and the window's counts, which cover every part of a continued run.
func (r *Runner) emit(x *run) {
	rep := x.rep
	ms := []emf.Metric{
		{Name: "JobHeartbeat", Value: 1, Unit: emf.Count},
		{Name: "JobPartial", Value: b2f(rep.Partial), Unit: emf.Count},
	}
	if !rep.Partial {
		ms = append(ms, emf.Metric{Name: "DriftItems", Value: float64(rep.Counts["drift_items"]), Unit: emf.Count},
			emf.Metric{Name: "SlaBreached", Value: b2f(rep.SLABreached), Unit: emf.Count})
		if rep.Job == JobParity {
			ms = append(ms, emf.Metric{Name: "DriftPercent", Value: rep.DriftPercent, Unit: emf.Percent})
		}
	}
	names := make([]string, 0, len(rep.Counts))
	for k := range rep.Counts {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if rep.Partial && !partialMetrics[k] {
			continue
		}
		if m, ok := metricCounts[k]; ok {
			ms = append(ms, emf.Metric{Name: m, Value: float64(rep.Counts[k]), Unit: emf.Count})
		}
	}
	r.metrics.Emit(map[string]string{"Job": rep.Job}, ms...)
	for _, job := range Jobs {
		if over, ok := x.overdue[job]; ok {
			r.metrics.Emit(map[string]string{"Job": job}, emf.Metric{Name: "JobOverdue", Value: b2f(over), Unit: emf.Count})
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
