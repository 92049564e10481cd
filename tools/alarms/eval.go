package alarms

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crmsync/crmsync/shared/alarmstate"
)

// Datapoint is one metric value at a time (an EMF datum, an SQS or Lambda sample).
type Datapoint struct {
	// Namespace, Name and Dimensions identify the metric.
	Namespace string
	// Name is the metric's name.
	Name string
	// Dimensions are the metric's dimensions.
	Dimensions map[string]string
	// Value is the datapoint's value.
	Value float64
	// Time is when it was recorded.
	Time time.Time
}

// Store holds recent datapoints for evaluation. It is safe for concurrent use.
type Store struct {
	// Retention is how long datapoints are kept (older ones are dropped on Add); 0 keeps all.
	// Metrics registered with Keep use their own retention instead.
	Retention time.Duration

	mu     sync.RWMutex
	points map[string][]Datapoint // by metric identity, in arrival order
	keep   map[string]time.Duration
}

// metricKey identifies a metric as CloudWatch does: namespace, name and the exact dimensions.
func metricKey(ns, name string, dims map[string]string) string {
	keys := make([]string, 0, len(dims))
	for k := range dims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(ns + "\x00" + name)
	for _, k := range keys {
		b.WriteString("\x00" + k + "=" + dims[k])
	}
	return b.String()
}

// Keep restricts the store to the metrics the alarms read: once any metric is registered, only
// registered metrics are stored, each for the longest retention registered for it (a busy local
// stack emits far more datapoints than its alarms look at).
func (s *Store) Keep(m MetricStat, retention time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keep == nil {
		s.keep = map[string]time.Duration{}
	}
	k := metricKey(m.Namespace, m.Name, m.Dimensions)
	s.keep[k] = max(s.keep[k], retention)
}

// KeepFor registers every metric the alarms read, each kept for its alarms' evaluation range
// (periods scaled as the evaluator scales them) plus slack.
func (s *Store) KeepFor(e *Evaluator, slack time.Duration) {
	for _, a := range e.Alarms {
		span := e.LocalPeriod(a.Period)*time.Duration(a.EvaluationPeriods+1) + slack
		if a.Metric != nil {
			s.Keep(*a.Metric, span)
		}
		for _, q := range a.Queries {
			if q.Stat != nil {
				s.Keep(*q.Stat, span)
			}
		}
	}
}

// Add records datapoints.
func (s *Store) Add(ds ...Datapoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.points == nil {
		s.points = map[string][]Datapoint{}
	}
	for _, d := range ds {
		k := metricKey(d.Namespace, d.Name, d.Dimensions)
		retention := s.Retention
		if s.keep != nil {
			r, ok := s.keep[k]
			if !ok {
				continue
			}
			retention = r
		}
		pts := append(s.points[k], d)
		if retention > 0 {
			cut := d.Time.Add(-retention)
			if i := sort.Search(len(pts), func(i int) bool { return !pts[i].Time.Before(cut) }); i > 0 {
				pts = append([]Datapoint(nil), pts[i:]...)
			}
		}
		s.points[k] = pts
	}
}

// Values returns the values of a metric with timestamps in [from, to).
func (s *Store) Values(m MetricStat, from, to time.Time) []float64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []float64
	for _, d := range s.points[metricKey(m.Namespace, m.Name, m.Dimensions)] {
		if !d.Time.Before(from) && d.Time.Before(to) {
			out = append(out, d.Value)
		}
	}
	return out
}

// aggregate applies a statistic to a period's values; with nil values it only validates stat.
func aggregate(stat string, vals []float64) (Value, error) {
	var pct float64
	switch {
	case stat == "Sum", stat == "Average", stat == "Maximum", stat == "Minimum", stat == "SampleCount":
	case strings.HasPrefix(stat, "p"):
		p, err := strconv.ParseFloat(stat[1:], 64)
		if err != nil || p < 0 || p > 100 {
			return Missing, fmt.Errorf("unsupported statistic %q", stat)
		}
		pct = p
	default:
		return Missing, fmt.Errorf("unsupported statistic %q", stat)
	}
	if len(vals) == 0 {
		return Missing, nil
	}
	switch stat {
	case "Sum":
		return Num(sum(vals)), nil
	case "Average":
		return Num(sum(vals) / float64(len(vals))), nil
	case "Maximum":
		return Num(maxOf(vals)), nil
	case "Minimum":
		return Num(minOf(vals)), nil
	case "SampleCount":
		return Num(float64(len(vals))), nil
	}
	s := append([]float64(nil), vals...)
	sort.Float64s(s)
	i := int(math.Ceil(pct/100*float64(len(s)))) - 1
	return Num(s[max(0, min(i, len(s)-1))]), nil
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t
}

func maxOf(v []float64) float64 {
	m := v[0]
	for _, x := range v[1:] {
		m = math.Max(m, x)
	}
	return m
}

func minOf(v []float64) float64 {
	m := v[0]
	for _, x := range v[1:] {
		m = math.Min(m, x)
	}
	return m
}

// State is an alarm state (alarmstate.State).
type State = alarmstate.State

// The alarm states.
const (
	OK               = alarmstate.OK
	Alarming         = alarmstate.Alarming
	InsufficientData = alarmstate.InsufficientData
)

// Status is one alarm's current state (alarmstate.Status).
type Status = alarmstate.Status

// Transition is an alarm changing state.
type Transition struct {
	// Alarm is the alarm's name, LogicalID its logical id.
	Alarm     string `json:"alarm"`
	LogicalID string `json:"logical_id"` // the template's logical id
	// From and To are the states before and after.
	From State `json:"from"`
	To   State `json:"to"` // the new state
	// Reason explains the new state.
	Reason string `json:"reason"`
	// Runbook is the runbook's path.
	Runbook string `json:"runbook"`
	// At is when the change was evaluated.
	At time.Time `json:"at"`
	// Actions are the alarm's AlarmActions (to ALARM) or OKActions (to OK).
	Actions []string `json:"actions,omitempty"`
}

// Evaluator evaluates alarms over a Store. It is safe for concurrent use.
type Evaluator struct {
	// Alarms are the alarms evaluated.
	Alarms []Alarm
	// Store holds the datapoints.
	Store *Store
	// Scale multiplies every period (locally, e.g. 1/6: a 60 s period is evaluated on 10 s
	// windows); 0 or 1 evaluates real periods.
	Scale float64
	// MinPeriod is the shortest evaluated period after scaling (default 1 s).
	MinPeriod time.Duration
	// Since, when set, is when data collection began: a period that started before it has no
	// history rather than missing data, and never breaches (a local stack that just started
	// does not report its heartbeat alarms as breaching for the days before it existed).
	Since time.Time

	mu     sync.Mutex
	status map[string]*Status
}

// LocalPeriod returns the period an alarm is evaluated on (scaled).
func (e *Evaluator) LocalPeriod(p time.Duration) time.Duration {
	if e.Scale > 0 && e.Scale != 1 {
		p = time.Duration(float64(p) * e.Scale)
	}
	floor := e.MinPeriod
	if floor <= 0 {
		floor = time.Second
	}
	return max(p, floor)
}

// Evaluate evaluates every alarm at now and returns the state changes (an alarm's first
// evaluation is a change from INSUFFICIENT_DATA, as when CloudWatch creates it).
func (e *Evaluator) Evaluate(now time.Time) []Transition {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.status == nil {
		e.status = map[string]*Status{}
	}
	var out []Transition
	for i := range e.Alarms {
		a := &e.Alarms[i]
		st, ok := e.status[a.Name]
		if !ok {
			st = &Status{Name: a.Name, LogicalID: a.LogicalID, State: InsufficientData, Runbook: a.Runbook, Since: now,
				Condition: condition(a), Period: e.LocalPeriod(a.Period).String()}
			e.status[a.Name] = st
		}
		state, reason, latest := e.evaluate(a, st.State, now)
		st.Reason, st.Value = reason, latest
		if state == st.State {
			continue
		}
		t := Transition{Alarm: a.Name, LogicalID: a.LogicalID, From: st.State, To: state, Reason: reason, Runbook: a.Runbook, At: now}
		switch state {
		case Alarming:
			t.Actions = a.AlarmActions
		case OK:
			t.Actions = a.OKActions
		}
		st.State, st.Since = state, now
		out = append(out, t)
	}
	return out
}

// States returns every alarm's current status, sorted by name (alarms not evaluated yet are
// INSUFFICIENT_DATA).
func (e *Evaluator) States() []Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Status, 0, len(e.Alarms))
	for i := range e.Alarms {
		a := &e.Alarms[i]
		if st, ok := e.status[a.Name]; ok {
			cp := *st
			out = append(out, cp)
			continue
		}
		out = append(out, Status{Name: a.Name, LogicalID: a.LogicalID, State: InsufficientData, Runbook: a.Runbook,
			Condition: condition(a), Period: e.LocalPeriod(a.Period).String(), Reason: "not evaluated yet"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func condition(a *Alarm) string {
	op := map[string]string{GreaterThanThreshold: ">", GreaterThanOrEqualToThreshold: ">=", LessThanThreshold: "<", LessThanOrEqualToThreshold: "<="}[a.Comparison]
	what := ""
	if a.Metric != nil {
		what = a.Metric.String()
	} else {
		for _, q := range a.Queries {
			if q.ReturnData {
				what = q.Expression
			}
		}
	}
	return fmt.Sprintf("%s %s %g for %d of %d periods (missing data: %s)", what, op, a.Threshold, a.DatapointsToAlarm, a.EvaluationPeriods, a.TreatMissingData)
}

// PeriodValue computes an alarm's value for the period [from, to).
func (e *Evaluator) PeriodValue(a *Alarm, from, to time.Time) Value {
	stat := func(m MetricStat) Value {
		v, _ := aggregate(m.Stat, e.Store.Values(m, from, to))
		return v
	}
	if a.Metric != nil {
		return stat(*a.Metric)
	}
	vars := map[string]Value{}
	for _, q := range a.Queries {
		if q.Stat != nil {
			vars[q.ID] = stat(*q.Stat)
		}
	}
	// Expressions may refer to earlier expressions: evaluate in declaration order.
	var out Value
	for _, q := range a.Queries {
		if q.Expression == "" {
			continue
		}
		ex, err := ParseExpr(q.Expression)
		if err != nil {
			return Missing
		}
		vars[q.ID] = ex.Eval(vars)
		if q.ReturnData {
			out = vars[q.ID]
		}
	}
	for _, q := range a.Queries {
		if q.ReturnData && q.Stat != nil {
			out = vars[q.ID]
		}
	}
	return out
}

func breaches(a *Alarm, v float64) bool {
	switch a.Comparison {
	case GreaterThanThreshold:
		return v > a.Threshold
	case GreaterThanOrEqualToThreshold:
		return v >= a.Threshold
	case LessThanThreshold:
		return v < a.Threshold
	case LessThanOrEqualToThreshold:
		return v <= a.Threshold
	}
	return false
}

// evaluate applies CloudWatch's rule to the last EvaluationPeriods periods ending at now: ALARM
// when at least DatapointsToAlarm of them breach (missing periods counted as the alarm's
// TreatMissingData says; periods before Since never breach), INSUFFICIENT_DATA when every
// period is missing and missing data is "missing", the current state when every period is
// missing and missing data is "ignore", else OK.
func (e *Evaluator) evaluate(a *Alarm, cur State, now time.Time) (State, string, *float64) {
	p := e.LocalPeriod(a.Period)
	breaching, present := 0, 0
	var vals []string
	var latest *float64
	for i := 0; i < a.EvaluationPeriods; i++ {
		to := now.Add(-time.Duration(i) * p)
		if !e.Since.IsZero() && to.Add(-p).Before(e.Since) {
			vals = append(vals, "·") // before data collection began
			continue
		}
		v := e.PeriodValue(a, to.Add(-p), to)
		if !v.OK {
			vals = append(vals, "-")
			if a.TreatMissingData == MissingBreaching {
				breaching++
			}
			continue
		}
		if i == 0 {
			x := v.V
			latest = &x
		}
		present++
		vals = append(vals, strconv.FormatFloat(v.V, 'g', 6, 64))
		if breaches(a, v.V) {
			breaching++
		}
	}
	// Newest last, as CloudWatch writes its reasons.
	for i, j := 0, len(vals)-1; i < j; i, j = i+1, j-1 {
		vals[i], vals[j] = vals[j], vals[i]
	}
	reason := fmt.Sprintf("%d of %d periods of %s breaching (need %d): [%s]", breaching, a.EvaluationPeriods, p, a.DatapointsToAlarm, strings.Join(vals, " "))
	switch {
	case breaching >= a.DatapointsToAlarm:
		return Alarming, reason, latest
	case present == 0 && a.TreatMissingData == MissingMissing:
		return InsufficientData, reason + "; no data", latest
	case present == 0 && a.TreatMissingData == MissingIgnore:
		return cur, reason + "; no data (ignored)", latest
	}
	return OK, reason, latest
}
