// Package alarms owns crmsync's CloudWatch alarm definitions as code can read them, and their
// evaluation outside CloudWatch so an alarm can be rehearsed locally (design sections 8, 9):
// the definitions come from template.yaml (through tools/samtemplate) — metric, namespace,
// dimensions, statistic, period, threshold, comparison, evaluation periods, datapoints to alarm,
// missing-data treatment, and the metric math expressions the template uses — and the
// evaluation is pure: datapoints in, state transitions out, following CloudWatch's rules (M out
// of N periods breaching → ALARM; missing data treated as the alarm says). The local stack
// (tools/localcloud) feeds it the functions' EMF metrics and samples of the AWS metrics.
//
// Every alarm's AlarmDescription names its runbook, docs/runbooks/<name>.md; the name is the
// alarm's name here, in `crmsync status` and in the local transition log.
package alarms

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/alarmstate"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// RunbookDir is where runbooks live, relative to the repository root.
const RunbookDir = alarmstate.RunbookDir

// RunbookOf returns the runbook path an alarm description names and its name (the file's base
// name without .md); both empty when it names none.
func RunbookOf(description string) (path, name string) { return alarmstate.RunbookOf(description) }

// Comparison operators CloudWatch alarms use.
const (
	GreaterThanThreshold          = "GreaterThanThreshold"
	GreaterThanOrEqualToThreshold = "GreaterThanOrEqualToThreshold"
	LessThanThreshold             = "LessThanThreshold"
	LessThanOrEqualToThreshold    = "LessThanOrEqualToThreshold"
)

// Missing-data treatments.
const (
	MissingBreaching    = "breaching"
	MissingNotBreaching = "notBreaching"
	MissingIgnore       = "ignore"
	MissingMissing      = "missing"
)

// MetricStat is one metric and how it is aggregated per period.
type MetricStat struct {
	// Namespace is the metric's namespace (CrmSync, AWS/SQS, AWS/Lambda).
	Namespace string `json:"namespace"`
	// Name is the metric's name.
	Name string `json:"metric"`
	// Dimensions are the metric's exact dimensions (none for a rollup).
	Dimensions map[string]string `json:"dimensions,omitempty"`
	// Stat is Sum, Average, Maximum, Minimum, SampleCount or pNN (p99, p50.5).
	Stat string `json:"stat"`
	// Period is the aggregation period as declared (unscaled).
	Period time.Duration `json:"period"`
}

// String writes the metric as Namespace/Name{dims} stat/period.
func (m MetricStat) String() string {
	keys := make([]string, 0, len(m.Dimensions))
	for k := range m.Dimensions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var dims []string
	for _, k := range keys {
		dims = append(dims, k+"="+m.Dimensions[k])
	}
	return fmt.Sprintf("%s/%s{%s} %s/%s", m.Namespace, m.Name, strings.Join(dims, ","), m.Stat, m.Period)
}

// Query is one entry of a metric math alarm's Metrics: a metric (Stat) or an expression over
// the other entries' ids.
type Query struct {
	// ID names the entry in expressions.
	ID string `json:"id"`
	// Stat is the entry's metric, for a metric entry.
	Stat *MetricStat `json:"stat,omitempty"`
	// Expression is the entry's metric math, for an expression entry.
	Expression string `json:"expression,omitempty"`
	// Label is the entry's label.
	Label string `json:"label,omitempty"`
	// ReturnData marks the entry the alarm compares with its threshold.
	ReturnData bool `json:"return_data"`
}

// Alarm is one AWS::CloudWatch::Alarm of the template.
type Alarm struct {
	// LogicalID is the template's logical id.
	LogicalID string `json:"logical_id"`
	// Name is the runbook's name (docs/runbooks/<Name>.md), else the logical id.
	Name string `json:"name"`
	// Runbook is the runbook path the description names ("" if none).
	Runbook string `json:"runbook,omitempty"`
	// Description is the AlarmDescription.
	Description string `json:"description"`
	// Metric is the alarm's metric (single-metric alarms); nil for metric math alarms.
	Metric *MetricStat `json:"metric,omitempty"`
	// Queries are a metric math alarm's entries; exactly one returns data.
	Queries []Query `json:"queries,omitempty"`
	// Threshold is what the value is compared with.
	Threshold float64 `json:"threshold"`
	// Comparison is the ComparisonOperator (GreaterThanThreshold, ...).
	Comparison string `json:"comparison"`
	// EvaluationPeriods is N (M of the last N periods breaching → ALARM).
	EvaluationPeriods int `json:"evaluation_periods"`
	// DatapointsToAlarm is M.
	DatapointsToAlarm int `json:"datapoints_to_alarm"`
	// TreatMissingData is breaching, notBreaching, ignore or missing.
	TreatMissingData string `json:"treat_missing_data"`
	// Period is the evaluated period (the metric's, or the returned expression's metrics').
	Period time.Duration `json:"period"`
	// AlarmActions are the targets notified on ALARM (resolved when a resolver was given).
	AlarmActions []string `json:"alarm_actions,omitempty"`
	// OKActions are the targets notified on OK.
	OKActions []string `json:"ok_actions,omitempty"`
}

// Resolver turns the template's resource tokens into physical values (samtemplate.Resolve over
// a provisioned stack); nil leaves them as they are.
type Resolver func(string) (string, error)

// FromTemplate reads every AWS::CloudWatch::Alarm of the template, sorted by name.
func FromTemplate(t *samtemplate.Template, resolve Resolver) ([]Alarm, error) {
	if resolve == nil {
		resolve = func(s string) (string, error) { return s, nil }
	}
	var out []Alarm
	for _, id := range t.OfType(samtemplate.TypeAlarm) {
		a, err := parseAlarm(id, t.Resources[id].Properties, resolve)
		if err != nil {
			return nil, fmt.Errorf("alarm %s: %w", id, err)
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func parseAlarm(id string, p map[string]any, resolve Resolver) (Alarm, error) {
	a := Alarm{LogicalID: id, Description: samtemplate.Str(p["AlarmDescription"]), Comparison: samtemplate.Str(p["ComparisonOperator"]),
		EvaluationPeriods: samtemplate.Num(p["EvaluationPeriods"], 1), TreatMissingData: samtemplate.Str(p["TreatMissingData"])}
	a.Runbook, a.Name = RunbookOf(a.Description)
	if a.Name == "" {
		a.Name = id
	}
	a.DatapointsToAlarm = samtemplate.Num(p["DatapointsToAlarm"], a.EvaluationPeriods)
	if a.TreatMissingData == "" {
		a.TreatMissingData = MissingMissing
	}
	th, err := number(p["Threshold"])
	if err != nil {
		return a, fmt.Errorf("Threshold: %w", err)
	}
	a.Threshold = th
	switch a.Comparison {
	case GreaterThanThreshold, GreaterThanOrEqualToThreshold, LessThanThreshold, LessThanOrEqualToThreshold:
	default:
		return a, fmt.Errorf("unsupported ComparisonOperator %q", a.Comparison)
	}
	switch a.TreatMissingData {
	case MissingBreaching, MissingNotBreaching, MissingIgnore, MissingMissing:
	default:
		return a, fmt.Errorf("unsupported TreatMissingData %q", a.TreatMissingData)
	}
	if a.DatapointsToAlarm < 1 || a.DatapointsToAlarm > a.EvaluationPeriods {
		return a, fmt.Errorf("DatapointsToAlarm %d outside 1..EvaluationPeriods (%d)", a.DatapointsToAlarm, a.EvaluationPeriods)
	}
	for _, k := range []string{"AlarmActions", "OKActions"} {
		for _, v := range samtemplate.List(p[k]) {
			s, err := resolve(samtemplate.Str(v))
			if err != nil {
				return a, fmt.Errorf("%s: %w", k, err)
			}
			if k == "AlarmActions" {
				a.AlarmActions = append(a.AlarmActions, s)
			} else {
				a.OKActions = append(a.OKActions, s)
			}
		}
	}
	if ms := samtemplate.List(p["Metrics"]); len(ms) > 0 {
		returned := 0
		for _, m := range ms {
			mm, _ := m.(map[string]any)
			q := Query{ID: samtemplate.Str(mm["Id"]), Expression: samtemplate.Str(mm["Expression"]), Label: samtemplate.Str(mm["Label"]), ReturnData: true}
			if rd, ok := mm["ReturnData"].(bool); ok {
				q.ReturnData = rd
			}
			if st, ok := mm["MetricStat"].(map[string]any); ok {
				met, _ := st["Metric"].(map[string]any)
				s, err := metricStat(met, samtemplate.Str(st["Stat"]), st["Period"], resolve)
				if err != nil {
					return a, fmt.Errorf("metric %s: %w", q.ID, err)
				}
				q.Stat = &s
			} else if q.Expression == "" {
				return a, fmt.Errorf("metric %s: neither MetricStat nor Expression", q.ID)
			} else if _, err := ParseExpr(q.Expression); err != nil {
				return a, fmt.Errorf("metric %s: %w", q.ID, err)
			}
			if q.ReturnData {
				returned++
			}
			a.Queries = append(a.Queries, q)
		}
		if returned != 1 {
			return a, fmt.Errorf("%d metrics return data, want exactly 1", returned)
		}
		for _, q := range a.Queries {
			if q.Stat != nil && (a.Period == 0 || q.Stat.Period < a.Period) {
				a.Period = q.Stat.Period
			}
		}
		if a.Period == 0 {
			return a, fmt.Errorf("metric math without metrics")
		}
		return a, nil
	}
	stat := samtemplate.Str(p["Statistic"])
	if stat == "" {
		stat = samtemplate.Str(p["ExtendedStatistic"])
	}
	dims := map[string]any{"Namespace": p["Namespace"], "MetricName": p["MetricName"], "Dimensions": p["Dimensions"]}
	s, err := metricStat(dims, stat, p["Period"], resolve)
	if err != nil {
		return a, err
	}
	a.Metric, a.Period = &s, s.Period
	return a, nil
}

func metricStat(m map[string]any, stat string, period any, resolve Resolver) (MetricStat, error) {
	s := MetricStat{Namespace: samtemplate.Str(m["Namespace"]), Name: samtemplate.Str(m["MetricName"]), Stat: stat,
		Period: time.Duration(samtemplate.Num(period, 0)) * time.Second}
	if s.Namespace == "" || s.Name == "" {
		return s, fmt.Errorf("no namespace or metric name")
	}
	if s.Period <= 0 {
		return s, fmt.Errorf("no period")
	}
	if _, err := aggregate(s.Stat, nil); err != nil {
		return s, err
	}
	for _, d := range samtemplate.List(m["Dimensions"]) {
		dm, _ := d.(map[string]any)
		v, err := resolve(samtemplate.Str(dm["Value"]))
		if err != nil {
			return s, fmt.Errorf("dimension %s: %w", samtemplate.Str(dm["Name"]), err)
		}
		if s.Dimensions == nil {
			s.Dimensions = map[string]string{}
		}
		s.Dimensions[samtemplate.Str(dm["Name"])] = v
	}
	return s, nil
}

func number(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case string:
		return strconv.ParseFloat(x, 64)
	}
	return 0, fmt.Errorf("not a number: %v", v)
}
