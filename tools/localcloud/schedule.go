package localcloud

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Expr is a parsed EventBridge schedule expression: rate(...) or the six-field cron(...).
type Expr struct {
	src   string
	every time.Duration
	// cron fields: minutes, hours, day-of-month, month, day-of-week (0=SUN), year; nil = any.
	min, hour, dom, mon, dow, year map[int]bool
	lastDOM                        bool
}

// String returns the expression as written.
func (e *Expr) String() string { return e.src }

// ParseSchedule parses rate(N unit) and cron(min hour dom month dow year) expressions.
func ParseSchedule(s string) (*Expr, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "rate(") && strings.HasSuffix(s, ")"):
		f := strings.Fields(s[5 : len(s)-1])
		if len(f) != 2 {
			return nil, fmt.Errorf("schedule %q: want rate(N unit)", s)
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("schedule %q: bad count", s)
		}
		unit := map[string]time.Duration{"minute": time.Minute, "minutes": time.Minute, "hour": time.Hour, "hours": time.Hour,
			"day": 24 * time.Hour, "days": 24 * time.Hour}[f[1]]
		if unit == 0 {
			return nil, fmt.Errorf("schedule %q: unit must be minute(s), hour(s) or day(s)", s)
		}
		return &Expr{src: s, every: time.Duration(n) * unit}, nil
	case strings.HasPrefix(s, "cron(") && strings.HasSuffix(s, ")"):
		f := strings.Fields(s[5 : len(s)-1])
		if len(f) != 6 {
			return nil, fmt.Errorf("schedule %q: cron wants 6 fields", s)
		}
		e := &Expr{src: s}
		var err error
		months := []string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}
		days := []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}
		if e.min, err = cronField(f[0], 0, 59, nil, 0); err != nil {
			return nil, fmt.Errorf("schedule %q minutes: %w", s, err)
		}
		if e.hour, err = cronField(f[1], 0, 23, nil, 0); err != nil {
			return nil, fmt.Errorf("schedule %q hours: %w", s, err)
		}
		if f[2] == "L" {
			e.lastDOM = true
		} else if e.dom, err = cronField(f[2], 1, 31, nil, 0); err != nil {
			return nil, fmt.Errorf("schedule %q day-of-month: %w", s, err)
		}
		if e.mon, err = cronField(f[3], 1, 12, months, 1); err != nil {
			return nil, fmt.Errorf("schedule %q month: %w", s, err)
		}
		// EventBridge numbers days of week 1-7 from Sunday; store 0-6 like time.Weekday.
		if e.dow, err = cronField(f[4], 1, 7, days, 1); err != nil {
			return nil, fmt.Errorf("schedule %q day-of-week: %w", s, err)
		}
		if e.dow != nil {
			shifted := map[int]bool{}
			for d := range e.dow {
				shifted[d-1] = true
			}
			e.dow = shifted
		}
		if e.year, err = cronField(f[5], 1970, 2199, nil, 0); err != nil {
			return nil, fmt.Errorf("schedule %q year: %w", s, err)
		}
		if (f[2] == "?") == (f[4] == "?") {
			return nil, fmt.Errorf("schedule %q: exactly one of day-of-month and day-of-week must be ?", s)
		}
		return e, nil
	}
	return nil, fmt.Errorf("schedule %q: want rate(...) or cron(...)", s)
}

func cronField(f string, lo, hi int, names []string, base int) (map[int]bool, error) {
	if f == "*" || f == "?" {
		return nil, nil
	}
	val := func(s string) (int, error) {
		for i, n := range names {
			if strings.EqualFold(s, n) {
				return i + base, nil
			}
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%q out of range %d-%d", s, lo, hi)
		}
		return n, nil
	}
	out := map[int]bool{}
	for _, part := range strings.Split(f, ",") {
		step := 1
		if i := strings.Index(part, "/"); i >= 0 {
			n, err := strconv.Atoi(part[i+1:])
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("bad step in %q", part)
			}
			step, part = n, part[:i]
		}
		from, to := lo, hi
		switch {
		case part == "*":
		case strings.Contains(part, "-"):
			ab := strings.SplitN(part, "-", 2)
			var err error
			if from, err = val(ab[0]); err != nil {
				return nil, err
			}
			if to, err = val(ab[1]); err != nil {
				return nil, err
			}
		default:
			v, err := val(part)
			if err != nil {
				return nil, err
			}
			from = v
			if step == 1 {
				to = v
			}
		}
		for v := from; v <= to; v += step {
			out[v] = true
		}
	}
	return out, nil
}

func in(set map[int]bool, v int) bool { return set == nil || set[v] }

// Next returns the first firing time strictly after t (UTC), or the zero time if none within
// five years.
func (e *Expr) Next(t time.Time) time.Time {
	t = t.UTC()
	if e.every > 0 {
		return t.Add(e.every)
	}
	c := t.Truncate(time.Minute).Add(time.Minute)
	end := t.AddDate(5, 0, 0)
	for c.Before(end) {
		if !in(e.year, c.Year()) || !in(e.mon, int(c.Month())) {
			c = time.Date(c.Year(), c.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, 1, 0)
			continue
		}
		dayOK := in(e.dom, c.Day()) && in(e.dow, int(c.Weekday()))
		if e.lastDOM {
			dayOK = c.AddDate(0, 0, 1).Day() == 1
		}
		if !dayOK {
			c = time.Date(c.Year(), c.Month(), c.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, 1)
			continue
		}
		if !in(e.hour, c.Hour()) {
			c = time.Date(c.Year(), c.Month(), c.Day(), c.Hour(), 0, 0, 0, time.UTC).Add(time.Hour)
			continue
		}
		if !in(e.min, c.Minute()) {
			c = c.Add(time.Minute)
			continue
		}
		return c
	}
	return time.Time{}
}

// ScheduledRule is one schedule bound to a function.
type ScheduledRule struct {
	Name     string
	Function string
	Expr     *Expr
	Input    string
}

// Payload is what EventBridge sends: the rule's Input when set, else a Scheduled Event.
func (r ScheduledRule) Payload(at time.Time, region string) []byte {
	if r.Input != "" {
		return []byte(r.Input)
	}
	b, _ := json.Marshal(map[string]any{
		"version": "0", "id": RequestID(), "detail-type": "Scheduled Event", "source": "aws.events",
		"account": AccountID, "time": at.UTC().Format(time.RFC3339), "region": region,
		"resources": []string{"arn:aws:events:" + region + ":" + AccountID + ":rule/" + r.Name}, "detail": map[string]any{},
	})
	return b
}

// Scheduler fires rules at their times.
type Scheduler struct {
	Rules   []ScheduledRule
	Invoker Invoker
	Region  string
	Log     *slog.Logger
	Now     func() time.Time
}

// Run fires each rule at its times until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	now := s.Now
	if now == nil {
		now = time.Now
	}
	for _, r := range s.Rules {
		go func(r ScheduledRule) {
			for {
				next := r.Expr.Next(now())
				if next.IsZero() {
					return
				}
				s.Log.Info("schedule armed", "rule", r.Name, "function", r.Function, "next", next.Format(time.RFC3339))
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(next)):
					s.Fire(ctx, r, next)
				}
			}
		}(r)
	}
	<-ctx.Done()
}

// Fire invokes a rule's function now.
func (s *Scheduler) Fire(ctx context.Context, r ScheduledRule, at time.Time) ([]byte, error) {
	return s.Invoker.Invoke(ctx, r.Function, r.Payload(at, s.Region))
}
