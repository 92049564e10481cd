package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// progress reports a long command's advance on stderr: a bar with counts and ETA on a terminal,
// a plain line at every tenth (and at the end) otherwise, nothing with --json. Every long
// command (backfill, dlq redrive, replay, rebuild) uses it; the zero of quiet is a no-op.
type progress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer // plain lines; nil when quiet or on a terminal
	label string
	total int
	done  int
	step  int // next plain-line threshold
	start time.Time
}

// newProgress starts a progress report of total steps for cmd; quiet (--json) reports nothing.
func newProgress(cmd *cobra.Command, label string, total int, quiet bool) *progress {
	p := &progress{label: label, total: total, start: time.Now()}
	if quiet || total <= 0 {
		return p
	}
	w := cmd.ErrOrStderr()
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		return p
	}
	p.w = w
	p.step = max(1, total/10)
	return p
}

// Add advances the report by n steps.
func (p *progress) Add(n int) {
	if n <= 0 {
		return
	}
	p.done += n
	switch {
	case p.bar != nil:
		_ = p.bar.Add(n)
	case p.w != nil && (p.done >= p.step || p.done >= p.total):
		eta := ""
		if p.done < p.total {
			left := time.Duration(float64(time.Since(p.start)) / float64(p.done) * float64(p.total-p.done))
			eta = fmt.Sprintf(", ETA %s", left.Round(time.Second))
		}
		fmt.Fprintf(p.w, "%s: %d/%d%s\n", p.label, min(p.done, p.total), p.total, eta)
		for p.step <= p.done {
			p.step += max(1, p.total/10)
		}
	}
}

// Finish ends the report (clearing the bar on a terminal).
func (p *progress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
