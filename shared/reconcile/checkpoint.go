package reconcile

import (
	"context"
	"maps"
	"slices"
	"time"
)

// Checkpoint is where a run cut short by its deadline stopped: the phase it was in and the last
// item of that phase it finished (items are walked in sorted order, so everything up to After
// is done). Phases before Phase are done; an empty After means none of Phase's items are.
type Checkpoint struct {
	// Phase is the phase to continue (see the Phase constants).
	Phase string `json:"phase" dynamodbav:"phase"`
	// After is the last item of Phase finished (a contact, activity or source id).
	After string `json:"after,omitempty" dynamodbav:"after,omitempty"`
}

// The phases a run can be cut short in and continued from, per job in order. The mapping
// review is a set of queries with no per-item calls; it is not checkpointed.
const (
	// PhaseInternal is parity (a): contacts rebuilt, by contact id.
	PhaseInternal = "internal"
	// PhaseSources is parity (b): vendor sources listed, by source name (in configured order).
	PhaseSources = "sources"
	// PhaseUnfinished is parity (c): the window's rejected and flagged ledger items.
	PhaseUnfinished = "unfinished"
	// PhaseUnassociated is consistency's re-association of waiting activities, by activity id.
	PhaseUnassociated = "unassociated"
	// PhaseContacts is consistency's contact checks, by contact id.
	PhaseContacts = "contacts"
)

var jobPhases = map[string][]string{
	JobParity:      {PhaseInternal, PhaseSources, PhaseUnfinished},
	JobConsistency: {PhaseUnassociated, PhaseContacts},
}

// phase is one checkpointable step of a job.
type phase struct {
	name string
	fn   func(context.Context, *run) error
}

// continueRun makes x continue the job's latest report when that run was cut short (and is not
// older than the job's lookback): its window, its counts and its checkpoint.
func (r *Runner) continueRun(ctx context.Context, x *run) error {
	if _, ok := jobPhases[x.rep.Job]; !ok {
		return nil
	}
	prev, err := r.LatestReport(ctx, x.rep.Job)
	if err != nil {
		return err
	}
	if prev == nil || !prev.Partial || prev.Checkpoint == nil ||
		prev.StartedAt.Before(x.rep.StartedAt.Add(-r.d.Settings.Job(x.rep.Job).Lookback)) {
		return nil
	}
	x.rep.Since, x.rep.Until, x.rep.Continues = prev.Since, prev.Until, prev.RunID
	x.rep.Counts = maps.Clone(prev.Counts)
	if x.rep.Counts == nil {
		x.rep.Counts = map[string]int{}
	}
	x.resume = *prev.Checkpoint
	r.log.InfoContext(ctx, "reconcile run continues a partial run", "job", x.rep.Job, "run", x.rep.RunID,
		"continues", prev.RunID, "phase", prev.Checkpoint.Phase, "after", prev.Checkpoint.After)
	return nil
}

// phases runs a job's phases in order, skipping those the continued run finished, and stops at
// the first one that cuts the run short.
func (r *Runner) phases(ctx context.Context, x *run, ps []phase) error {
	order := jobPhases[x.rep.Job]
	resume := slices.Index(order, x.resume.Phase)
	for _, p := range ps {
		if slices.Index(order, p.name) < resume {
			continue
		}
		if r.cut(ctx, x, p.name, x.after(p.name)) {
			return nil
		}
		if err := p.fn(ctx, x); err != nil {
			return err
		}
		if x.rep.Partial {
			return nil
		}
	}
	return nil
}

// after is the cursor of a phase: the last item the continued run finished in it ("" = none).
func (x *run) after(phase string) string {
	if x.resume.Phase == phase {
		return x.resume.After
	}
	return ""
}

// cut reports whether the run must stop before its next item of phase (the context's deadline
// is within the runner's margin); if so it marks the run partial at that item, last being the
// last item of phase finished.
func (r *Runner) cut(ctx context.Context, x *run, phase, last string) bool {
	if !r.near(ctx, r.margin) {
		return false
	}
	x.rep.Partial = true
	x.rep.Checkpoint = &Checkpoint{Phase: phase, After: last}
	r.log.WarnContext(ctx, "reconcile run cut short near its deadline", "job", x.rep.Job, "run", x.rep.RunID,
		"phase", phase, "after", last)
	return true
}

// near reports whether the context's deadline is less than margin away on the runner's clock.
func (r *Runner) near(ctx context.Context, margin time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && !r.now().Add(margin).Before(dl)
}
