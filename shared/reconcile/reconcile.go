// Package reconcile owns crmsync's scheduled reconciliation jobs (parity daily, consistency weekly,
// mapping-review monthly): each run emits a heartbeat metric, checks its findings and returns a
// report with counts. This package holds the job runner and the stuck-work checks every job
// shares (dead-letter queue depth, quarantined payloads).
package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/emf"
)

// Jobs are the reconcile jobs, by name.
var Jobs = []string{"parity", "consistency", "mapping-review"}

// SQSAPI is the SQS call the stuck-work check makes.
type SQSAPI interface {
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
}

// S3API is the S3 call the quarantine count makes.
type S3API interface {
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// Config is a reconcile function's configuration.
type Config struct {
	Job      string // the function's own job (JOB); a payload {"job": ...} may name another
	QueueURL string
	DLQURL   string
	Bucket   string
}

// Runner runs jobs.
type Runner struct {
	cfg     Config
	sqs     SQSAPI
	s3      S3API
	now     func() time.Time
	log     *slog.Logger
	metrics *emf.Writer
}

// New returns a runner.
func New(cfg Config, q SQSAPI, b S3API, now func() time.Time, log *slog.Logger, m *emf.Writer) *Runner {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{cfg: cfg, sqs: q, s3: b, now: now, log: log, metrics: m}
}

// Request is the schedule's input.
type Request struct {
	Job   string `json:"job"`
	Since string `json:"since,omitempty"`
}

// Report is one run's result.
type Report struct {
	Job        string         `json:"job"`
	RunID      string         `json:"run_id"`
	StartedAt  time.Time      `json:"started_at"`
	FinishedAt time.Time      `json:"finished_at"`
	Counts     map[string]int `json:"counts"`
}

// Handle runs the job the payload names (else the configured one). It accepts the schedule's
// Input ({"job": "parity"}) or an EventBridge Scheduled Event.
func (r *Runner) Handle(ctx context.Context, payload json.RawMessage) (Report, error) {
	var req Request
	_ = json.Unmarshal(payload, &req)
	job := req.Job
	if job == "" {
		job = r.cfg.Job
	}
	known := false
	for _, j := range Jobs {
		known = known || j == job
	}
	if !known {
		return Report{}, fmt.Errorf("unknown job %q (want one of %v)", job, Jobs)
	}
	start := r.now().UTC()
	rep := Report{Job: job, RunID: job + ":" + start.Format("20060102T150405Z"), StartedAt: start, Counts: map[string]int{}}
	dlq, err := r.queueDepth(ctx, r.cfg.DLQURL)
	if err != nil {
		return rep, err
	}
	rep.Counts["dlq_messages"] = dlq
	q, err := r.quarantined(ctx)
	if err != nil {
		return rep, err
	}
	rep.Counts["quarantined_payloads"] = q
	rep.FinishedAt = r.now().UTC()
	r.metrics.Emit(map[string]string{"Job": job},
		emf.Metric{Name: "JobHeartbeat", Value: 1, Unit: emf.Count},
		emf.Metric{Name: "DlqMessages", Value: float64(dlq), Unit: emf.Count},
		emf.Metric{Name: "QuarantinedPayloads", Value: float64(q), Unit: emf.Count})
	r.log.InfoContext(ctx, "reconcile run finished", "job", job, "run", rep.RunID, "counts", rep.Counts)
	return rep, nil
}

func (r *Runner) queueDepth(ctx context.Context, url string) (int, error) {
	if url == "" {
		return 0, nil
	}
	out, err := r.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		return 0, fmt.Errorf("queue depth: %w", err)
	}
	a, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	b, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return a + b, nil
}

func (r *Runner) quarantined(ctx context.Context) (int, error) {
	if r.cfg.Bucket == "" {
		return 0, nil
	}
	n := 0
	p := s3.NewListObjectsV2Paginator(r.s3, &s3.ListObjectsV2Input{Bucket: aws.String(r.cfg.Bucket), Prefix: aws.String("quarantine/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("count quarantine: %w", err)
		}
		n += len(page.Contents)
	}
	return n, nil
}
