package reconcile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The reconcile jobs.
const (
	JobParity        = "parity"
	JobConsistency   = "consistency"
	JobMappingReview = "mapping-review"
)

// Jobs are the reconcile jobs, by name.
var Jobs = []string{JobParity, JobConsistency, JobMappingReview}

// Listable are the sources whose vendors can list past items (parity b).
var Listable = []string{"twilio", "calendly", "typeform", "mailgun"}

// JobSettings are one job's window and bounds.
type JobSettings struct {
	// Lookback is the window's length when the request names no since.
	Lookback time.Duration
	// Interval is the expected time between runs (the schedule's period).
	Interval time.Duration
	// MaxRecords bounds the contacts one run checks (parity a, consistency).
	MaxRecords int
	// MaxBackfill bounds the missing vendor items one run enqueues (parity b).
	MaxBackfill int
	// CallTerminalAfter is how long a call may go without a terminal status (consistency).
	CallTerminalAfter time.Duration
}

// SourceSettings are one listable source's settings.
type SourceSettings struct {
	// Settle is how long after an item's time parity waits before checking it, so a delivery
	// still inside the vendor's own retry period is not backfilled.
	Settle time.Duration
}

// Settings is config/reconcile.yaml, parsed and validated.
type Settings struct {
	// Version is the file's declared version.
	Version string
	// Jobs are the per-job settings, by job name (every job has an entry).
	Jobs map[string]JobSettings
	// Grace is how late a job may be before it counts as overdue.
	Grace time.Duration
	// Sources are the listable sources parity checks, by name.
	Sources map[string]SourceSettings
	// SLAs are each job's limits, by job then measure.
	SLAs map[string]map[string]float64
}

// Job returns a job's settings.
func (s *Settings) Job(name string) JobSettings { return s.Jobs[name] }

type rawJob struct {
	Lookback          string `yaml:"lookback"`
	Interval          string `yaml:"interval"`
	MaxRecords        int    `yaml:"max_records"`
	MaxBackfill       int    `yaml:"max_backfill"`
	CallTerminalAfter string `yaml:"call_terminal_after"`
}

type rawSettings struct {
	Version string                             `yaml:"version"`
	Jobs    map[string]rawJob                  `yaml:"jobs"`
	Grace   string                             `yaml:"grace"`
	Sources map[string]struct{ Settle string } `yaml:"sources"`
	SLAs    map[string]map[string]float64      `yaml:"slas"`
}

// ParseDuration reads a Go duration (90m, 72h) or a whole number of days (8d).
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q is not a whole number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration (e.g. 90m, 72h, 8d)", s)
	}
	return d, nil
}

// LoadConfig reads and parses a reconcile settings file.
func LoadConfig(path string) (*Settings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

// ParseConfig parses config/reconcile.yaml; name is used in error messages.
func ParseConfig(name string, data []byte) (*Settings, error) {
	var raw rawSettings
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, a...)...))
	}
	dur := func(path, v string, required bool) time.Duration {
		if strings.TrimSpace(v) == "" {
			if required {
				bad("%s: required", path)
			}
			return 0
		}
		d, err := ParseDuration(v)
		if err != nil {
			bad("%s: %v", path, err)
		}
		return d
	}
	s := &Settings{Version: raw.Version, Jobs: map[string]JobSettings{}, Sources: map[string]SourceSettings{}, SLAs: map[string]map[string]float64{}}
	if s.Version == "" {
		bad("version: required")
	}
	for name := range raw.Jobs {
		if !slices.Contains(Jobs, name) {
			bad("jobs.%s: unknown job (want one of %v)", name, Jobs)
		}
	}
	for _, job := range Jobs {
		rj, ok := raw.Jobs[job]
		if !ok {
			bad("jobs.%s: missing", job)
			continue
		}
		js := JobSettings{
			Lookback: dur("jobs."+job+".lookback", rj.Lookback, true), Interval: dur("jobs."+job+".interval", rj.Interval, true),
			MaxRecords: rj.MaxRecords, MaxBackfill: rj.MaxBackfill, CallTerminalAfter: dur("jobs."+job+".call_terminal_after", rj.CallTerminalAfter, false),
		}
		if rj.MaxRecords < 0 || rj.MaxBackfill < 0 {
			bad("jobs.%s: bounds must not be negative", job)
		}
		if js.MaxRecords == 0 {
			js.MaxRecords = 1000
		}
		if js.MaxBackfill == 0 {
			js.MaxBackfill = 500
		}
		if js.CallTerminalAfter == 0 {
			js.CallTerminalAfter = 24 * time.Hour
		}
		s.Jobs[job] = js
	}
	s.Grace = dur("grace", raw.Grace, false)
	for src, ss := range raw.Sources {
		if !slices.Contains(Listable, src) {
			bad("sources.%s: not a listable source (want one of %v)", src, Listable)
			continue
		}
		s.Sources[src] = SourceSettings{Settle: dur("sources."+src+".settle", ss.Settle, false)}
	}
	for job, limits := range raw.SLAs {
		if !slices.Contains(Jobs, job) {
			bad("slas.%s: unknown job", job)
			continue
		}
		for m, v := range limits {
			if v < 0 {
				bad("slas.%s.%s: must not be negative", job, m)
			}
		}
		s.SLAs[job] = limits
	}
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, errors.Join(errs...)
	}
	return s, nil
}
