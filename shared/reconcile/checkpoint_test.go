package reconcile_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/shared/wiring"
	wiredreconcile "github.com/crmsync/crmsync/shared/wiring/reconcile"
	"github.com/crmsync/crmsync/shared/worker"
)

// fakeClock is a runner clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// slowWorker records every contact rebuilt and activity re-associated, and lets each call
// take step on the fake clock.
type slowWorker struct {
	reconcile.Worker
	clock *fakeClock
	step  time.Duration

	mu         sync.Mutex
	rebuilt    []string
	reassocted []string
}

func (w *slowWorker) Rebuild(ctx context.Context, id string) (*worker.Rebuilt, error) {
	w.mu.Lock()
	w.rebuilt = append(w.rebuilt, id)
	w.mu.Unlock()
	w.clock.Advance(w.step)
	return w.Worker.Rebuild(ctx, id)
}

func (w *slowWorker) Reassociate(ctx context.Context, id, key, why string) (worker.Reassociation, error) {
	w.mu.Lock()
	w.reassocted = append(w.reassocted, id)
	w.mu.Unlock()
	w.clock.Advance(w.step)
	return w.Worker.Reassociate(ctx, id, key, why)
}

// deadlineCtx reports a deadline on the fake clock without ever being cancelled (the AWS calls
// run on real time).
type deadlineCtx struct {
	context.Context
	at time.Time
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.at, true }

// slowRunner builds a runner over the stack's resources whose clock is clock and whose worker
// takes step per call.
func (s *stack) slowRunner(clock *fakeClock, step, margin time.Duration) (*reconcile.Runner, *slowWorker) {
	s.t.Helper()
	getenv := func(k string) string { return s.env[k] }
	settings, err := wiredreconcile.LoadSettings("")
	if err != nil {
		s.t.Fatal(err)
	}
	pol, err := wiring.PolicyFromEnv(getenv)
	if err != nil {
		s.t.Fatal(err)
	}
	w := &slowWorker{Worker: s.worker, clock: clock, step: step}
	r, err := reconcile.New(reconcile.Config{Job: reconcile.JobParity, LedgerTable: getenv("LEDGER_TABLE"), CRMTable: getenv("CRM_TABLE"),
		QueueURL: getenv("INGEST_QUEUE_URL"), DLQURL: getenv("DLQ_URL"), Bucket: getenv("QUARANTINE_BUCKET")},
		reconcile.Deps{DynamoDB: s.ddb, SQS: s.sqs, S3: s3.NewFromConfig(s.aws, func(o *s3.Options) { o.UsePathStyle = true }),
			Worker: w, Settings: settings, Policy: pol, Now: clock.Now, Metrics: s.metrics, DeadlineMargin: margin})
	if err != nil {
		s.t.Fatal(err)
	}
	return r, w
}

// A parity run whose deadline allows only part of its contacts stops before the deadline and
// stores a partial report with a checkpoint (a heartbeat and a partial count, no drift
// measures); the next scheduled run continues the same window from the checkpoint, so across
// the runs every contact is rebuilt exactly once and the final report covers all of them.
func TestParityCheckpointsNearItsDeadlineAndContinues(t *testing.T) {
	s := newStack(t, 0)
	ctx := context.Background()
	body, ct := sample(t, "typeform")
	const contacts = 5
	for i := range contacts {
		edited := strings.NewReplacer("ada@example.com", fmt.Sprintf("u%d@example.com", i),
			"01JP2F4QGQ8JV0N7T6QX4D7M0S", fmt.Sprintf("01JP2F4QGQ8JV0N7T6QX4D7M%d", 10+i),
			"a3a12ec67a1365927098a606107fac15", fmt.Sprintf("a3a12ec67a1365927098a606107fac%d", 20+i),
			"+14155550123", fmt.Sprintf("+1415555010%d", i)).Replace(string(body))
		for _, ev := range s.parse("typeform", []byte(edited), ct) {
			s.apply(&ev)
		}
	}
	const step, margin = 10 * time.Second, 30 * time.Second
	clock := &fakeClock{t: time.Now().Add(5 * time.Minute).UTC()}
	r, w := s.slowRunner(clock, step, margin)

	// Room for three rebuilds before the margin: the run stops before the fourth.
	deadline := clock.Now().Add(margin + 2*step + step/2)
	first, err := r.Run(deadlineCtx{ctx, deadline}, reconcile.Request{Job: reconcile.JobParity})
	if err != nil {
		t.Fatal(err)
	}
	if !clock.Now().Before(deadline) || !first.FinishedAt.Before(deadline) {
		t.Errorf("returned at %s, deadline %s", clock.Now(), deadline)
	}
	done := slices.Clone(w.rebuilt)
	if !first.Partial || first.Checkpoint == nil || first.Checkpoint.Phase != reconcile.PhaseInternal || len(done) != 3 ||
		first.Checkpoint.After != done[2] || !slices.IsSorted(done) || first.Counts["contacts_checked"] != 3 {
		t.Fatalf("first run: partial %v, checkpoint %+v, rebuilt %v, counts %v", first.Partial, first.Checkpoint, done, first.Counts)
	}
	latest, err := r.LatestReport(ctx, reconcile.JobParity)
	if err != nil || latest == nil || latest.RunID != first.RunID || !latest.Partial || latest.Checkpoint == nil || *latest.Checkpoint != *first.Checkpoint {
		t.Fatalf("stored report = %+v, %v", latest, err)
	}
	if v := s.metrics.metric("JobHeartbeat", "Job", "parity"); !slices.Equal(v, []float64{1}) {
		t.Errorf("a partial run's JobHeartbeat = %v", v)
	}
	if v := s.metrics.metric("JobPartial", "Job", "parity"); !slices.Equal(v, []float64{1}) {
		t.Errorf("JobPartial = %v", v)
	}
	if v := s.metrics.metric("DriftPercent", "Job", "parity"); len(v) != 0 {
		t.Errorf("a partial run emitted DriftPercent %v", v)
	}

	// The next run (no deadline, no explicit window) continues from the checkpoint.
	clock.Advance(24 * time.Hour)
	final, err := r.Run(ctx, reconcile.Request{Job: reconcile.JobParity})
	if err != nil {
		t.Fatal(err)
	}
	all := slices.Clone(w.rebuilt)
	sort.Strings(all)
	if final.Partial || final.Checkpoint != nil || final.Continues != first.RunID || !final.Since.Equal(first.Since) || !final.Until.Equal(first.Until) {
		t.Fatalf("final run: partial %v, checkpoint %+v, continues %q, window %s..%s", final.Partial, final.Checkpoint, final.Continues, final.Since, final.Until)
	}
	if len(all) != contacts || len(slices.Compact(slices.Clone(all))) != contacts {
		t.Fatalf("contacts rebuilt across the runs: %v (want each of %d once)", w.rebuilt, contacts)
	}
	if final.Counts["contacts_checked"] != contacts || final.Counts["contacts_drifted"] != 0 {
		t.Errorf("final counts %v", final.Counts)
	}
	if v := s.metrics.metric("DriftPercent", "Job", "parity"); !slices.Equal(v, []float64{0}) {
		t.Errorf("DriftPercent = %v", v)
	}
	if v := s.metrics.metric("JobPartial", "Job", "parity"); !slices.Equal(v, []float64{1, 0}) {
		t.Errorf("JobPartial = %v", v)
	}
	// A complete report is not continued: the run after it starts a new window.
	clock.Advance(time.Hour)
	w.rebuilt = nil
	next, err := r.Run(ctx, reconcile.Request{Job: reconcile.JobParity})
	if err != nil || next.Continues != "" || next.Partial || next.Since.Equal(first.Since) {
		t.Fatalf("run after a complete one: %+v, %v", next, err)
	}
}

// A consistency run cut short while re-associating waiting activities continues from the last
// activity it retried: each activity is retried exactly once across the runs.
func TestConsistencyCheckpointsNearItsDeadlineAndContinues(t *testing.T) {
	s := newStack(t, 0)
	ctx := context.Background()
	now := time.Now().UTC()
	const activities = 4
	for i := range activities {
		addr := fmt.Sprintf("w%d@acme.com", i)
		ev := &canonical.Event{Key: fmt.Sprintf("mailgun:ev-w%d", i), Source: "mailgun", Kind: canonical.KindEmailEvent, OccurredAt: now.Add(-time.Hour),
			ReceivedAt: now, GroupKey: "email:" + addr, Subject: canonical.Person{Emails: []string{addr}},
			Activity: &canonical.Activity{ID: fmt.Sprintf("email:<m%d@us.com>", i), Type: "email", Status: "delivered"}, MappingVersion: "mailgun/1",
			PayloadHash: fmt.Sprintf("h%d", i)}
		if res := s.apply(ev); res.ContactID != "" {
			t.Fatalf("expected an unassociated activity: %+v", res)
		}
	}
	const step, margin = 10 * time.Second, 30 * time.Second
	clock := &fakeClock{t: time.Now().Add(5 * time.Minute).UTC()}
	r, w := s.slowRunner(clock, step, margin)
	deadline := clock.Now().Add(margin + step + step/2) // room for two
	first, err := r.Run(deadlineCtx{ctx, deadline}, reconcile.Request{Job: reconcile.JobConsistency})
	if err != nil {
		t.Fatal(err)
	}
	done := slices.Clone(w.reassocted)
	if !clock.Now().Before(deadline) || !first.Partial || first.Checkpoint == nil || first.Checkpoint.Phase != reconcile.PhaseUnassociated ||
		len(done) != 2 || first.Checkpoint.After != done[1] {
		t.Fatalf("first run: partial %v, checkpoint %+v, retried %v", first.Partial, first.Checkpoint, done)
	}
	clock.Advance(time.Hour)
	final, err := r.Run(ctx, reconcile.Request{Job: reconcile.JobConsistency})
	if err != nil {
		t.Fatal(err)
	}
	all := slices.Clone(w.reassocted)
	slices.Sort(all)
	if final.Partial || final.Continues != first.RunID || len(all) != activities || len(slices.Compact(slices.Clone(all))) != activities {
		t.Fatalf("final run: partial %v, continues %q, retried across the runs %v", final.Partial, final.Continues, w.reassocted)
	}
	if final.Counts["unassociated_activities"] != activities || final.Counts["activities_checked"] != activities {
		t.Errorf("final counts %v", final.Counts)
	}
}
