package alarms

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

func dlqAlarm() Alarm {
	return Alarm{LogicalID: "DlqNotEmptyAlarm", Name: "dlq-not-empty", Runbook: "docs/runbooks/dlq-not-empty.md",
		Metric:    &MetricStat{Namespace: "AWS/SQS", Name: "ApproximateNumberOfMessagesVisible", Dimensions: map[string]string{"QueueName": "dlq"}, Stat: "Maximum", Period: time.Minute},
		Threshold: 0, Comparison: GreaterThanThreshold, EvaluationPeriods: 1, DatapointsToAlarm: 1, TreatMissingData: MissingNotBreaching,
		Period: time.Minute, AlarmActions: []string{"topic"}, OKActions: []string{"topic"}}
}

func depth(v float64, at time.Time) Datapoint {
	return Datapoint{Namespace: "AWS/SQS", Name: "ApproximateNumberOfMessagesVisible", Dimensions: map[string]string{"QueueName": "dlq"}, Value: v, Time: at}
}

func TestSingleMetricTransitions(t *testing.T) {
	st := &Store{}
	e := &Evaluator{Alarms: []Alarm{dlqAlarm()}, Store: st}
	// No data, notBreaching: OK from the first evaluation.
	tr := e.Evaluate(t0)
	if len(tr) != 1 || tr[0].From != InsufficientData || tr[0].To != OK {
		t.Fatalf("first evaluation = %+v", tr)
	}
	st.Add(depth(0, t0.Add(10*time.Second)), depth(1, t0.Add(20*time.Second)))
	tr = e.Evaluate(t0.Add(30 * time.Second))
	if len(tr) != 1 || tr[0].To != Alarming || tr[0].Runbook != "docs/runbooks/dlq-not-empty.md" || tr[0].Actions[0] != "topic" {
		t.Fatalf("after a message = %+v", tr)
	}
	if tr := e.Evaluate(t0.Add(40 * time.Second)); len(tr) != 0 {
		t.Fatalf("no change expected: %+v", tr)
	}
	// The message leaves; once the period no longer holds the 1, the alarm is OK again.
	st.Add(depth(0, t0.Add(50*time.Second)))
	if tr := e.Evaluate(t0.Add(70 * time.Second)); len(tr) != 0 {
		t.Fatalf("period still holds the 1: %+v", tr)
	}
	tr = e.Evaluate(t0.Add(81 * time.Second))
	if len(tr) != 1 || tr[0].From != Alarming || tr[0].To != OK {
		t.Fatalf("after the redrive = %+v", tr)
	}
	s := e.States()
	if len(s) != 1 || s[0].State != OK || s[0].Value == nil || *s[0].Value != 0 || s[0].Runbook == "" {
		t.Errorf("states = %+v", s)
	}
}

func TestMOfNAndMissingData(t *testing.T) {
	heartbeat := func(treat string) Alarm {
		return Alarm{Name: "hb", Metric: &MetricStat{Namespace: "CrmSync", Name: "JobHeartbeat", Dimensions: map[string]string{"Job": "parity"}, Stat: "Sum", Period: time.Hour},
			Threshold: 1, Comparison: LessThanThreshold, EvaluationPeriods: 3, DatapointsToAlarm: 3, TreatMissingData: treat, Period: time.Hour}
	}
	beat := func(at time.Time) Datapoint {
		return Datapoint{Namespace: "CrmSync", Name: "JobHeartbeat", Dimensions: map[string]string{"Job": "parity"}, Value: 1, Time: at}
	}
	for _, tc := range []struct {
		name  string
		treat string
		beats []time.Time
		want  State
	}{
		{"breaching, never ran", MissingBreaching, nil, Alarming},
		{"breaching, ran 2h ago", MissingBreaching, []time.Time{t0.Add(-150 * time.Minute)}, OK},
		{"breaching, ran 4h ago", MissingBreaching, []time.Time{t0.Add(-4 * time.Hour)}, Alarming},
		{"missing, never ran", MissingMissing, nil, InsufficientData},
		{"notBreaching, never ran", MissingNotBreaching, nil, OK},
		{"ignore keeps state", MissingIgnore, nil, InsufficientData},
	} {
		st := &Store{}
		for _, b := range tc.beats {
			st.Add(beat(b))
		}
		e := &Evaluator{Alarms: []Alarm{heartbeat(tc.treat)}, Store: st}
		e.Evaluate(t0)
		if got := e.States()[0].State; got != tc.want {
			t.Errorf("%s: state %s, want %s (%s)", tc.name, got, tc.want, e.States()[0].Reason)
		}
	}
	// A stack that started an hour ago has no history before: the heartbeat alarm waits for
	// three periods of its own.
	e := &Evaluator{Alarms: []Alarm{heartbeat(MissingBreaching)}, Store: &Store{}, Since: t0.Add(-time.Hour)}
	e.Evaluate(t0)
	if s := e.States()[0]; s.State != OK {
		t.Errorf("just started: %s (%s)", s.State, s.Reason)
	}
	e.Evaluate(t0.Add(2*time.Hour + time.Minute))
	if s := e.States()[0]; s.State != Alarming {
		t.Errorf("three hours without a heartbeat: %s (%s)", s.State, s.Reason)
	}
	// Two of three breaching periods with DatapointsToAlarm 2.
	a := Alarm{Name: "m", Metric: &MetricStat{Namespace: "N", Name: "M", Stat: "Sum", Period: time.Minute}, Threshold: 5,
		Comparison: GreaterThanThreshold, EvaluationPeriods: 3, DatapointsToAlarm: 2, TreatMissingData: MissingNotBreaching, Period: time.Minute}
	st := &Store{}
	for _, p := range []struct {
		v  float64
		at time.Duration
	}{{9, -170 * time.Second}, {1, -100 * time.Second}, {3, -30 * time.Second}, {4, -20 * time.Second}} {
		st.Add(Datapoint{Namespace: "N", Name: "M", Value: p.v, Time: t0.Add(p.at)})
	}
	e = &Evaluator{Alarms: []Alarm{a}, Store: st}
	e.Evaluate(t0)
	if s := e.States()[0]; s.State != Alarming {
		t.Errorf("9, 1, 3+4: %s (%s)", s.State, s.Reason)
	}
}

func TestScale(t *testing.T) {
	e := &Evaluator{Scale: 1.0 / 6}
	if got := e.LocalPeriod(time.Minute); got != 10*time.Second {
		t.Errorf("60s scaled = %s", got)
	}
	if got := (&Evaluator{Scale: 0.001}).LocalPeriod(time.Minute); got != time.Second {
		t.Errorf("floor = %s", got)
	}
	if got := (&Evaluator{}).LocalPeriod(time.Hour); got != time.Hour {
		t.Errorf("unscaled = %s", got)
	}
	// Scaled alarms read scaled windows: a datapoint 5 s ago falls in a 10 s window.
	st := &Store{}
	st.Add(depth(2, t0.Add(-5*time.Second)))
	ev := &Evaluator{Alarms: []Alarm{dlqAlarm()}, Store: st, Scale: 1.0 / 6}
	ev.Evaluate(t0)
	if ev.States()[0].State != Alarming {
		t.Errorf("scaled: %+v", ev.States()[0])
	}
}

func TestRetryRateMath(t *testing.T) {
	a := Alarm{Name: "retry-rate", Threshold: 5, Comparison: GreaterThanThreshold, EvaluationPeriods: 1, DatapointsToAlarm: 1,
		TreatMissingData: MissingNotBreaching, Period: 5 * time.Minute, Queries: []Query{
			{ID: "processed", Stat: &MetricStat{Namespace: "CrmSync", Name: "Processed", Stat: "Sum", Period: 5 * time.Minute}},
			{ID: "retried", Stat: &MetricStat{Namespace: "CrmSync", Name: "Processed", Dimensions: map[string]string{"Outcome": "RETRY"}, Stat: "Sum", Period: 5 * time.Minute}},
			{ID: "reattempts", Stat: &MetricStat{Namespace: "CrmSync", Name: "Retries", Stat: "Sum", Period: 5 * time.Minute}},
			{ID: "rate", Expression: "IF(processed >= 20, 100 * (FILL(retried, 0) + FILL(reattempts, 0)) / processed, 0)", ReturnData: true},
		}}
	add := func(st *Store, name string, dims map[string]string, v float64, n int) {
		for i := 0; i < n; i++ {
			st.Add(Datapoint{Namespace: "CrmSync", Name: name, Dimensions: dims, Value: v, Time: t0.Add(-time.Minute)})
		}
	}
	for _, tc := range []struct {
		name                         string
		processed, retried, attempts int
		want                         State
		value                        float64
	}{
		{"quiet", 0, 0, 0, OK, -1},
		{"too few to judge", 10, 5, 0, OK, 0},
		{"2 of 40", 40, 2, 0, OK, 5},
		{"3 of 40", 40, 2, 1, Alarming, 7.5},
	} {
		st := &Store{}
		add(st, "Processed", nil, 1, tc.processed)
		add(st, "Processed", map[string]string{"Outcome": "RETRY"}, 1, tc.retried)
		add(st, "Retries", nil, 1, tc.attempts)
		e := &Evaluator{Alarms: []Alarm{a}, Store: st}
		e.Evaluate(t0)
		s := e.States()[0]
		if s.State != tc.want || (tc.value >= 0 && (s.Value == nil || *s.Value != tc.value)) || (tc.value < 0 && s.Value != nil) {
			t.Errorf("%s: %s value %v (%s)", tc.name, s.State, s.Value, s.Reason)
		}
	}
}

func TestExpressions(t *testing.T) {
	vars := map[string]Value{"a": Num(4), "b": Num(2), "z": Missing}
	for _, tc := range []struct {
		expr string
		want Value
	}{
		{"a + b * 3", Num(10)},
		{"(a + b) * 3", Num(18)},
		{"-a + 1", Num(-3)},
		{"a / 0", Missing},
		{"a + z", Missing},
		{"FILL(z, 7) + 1", Num(8)},
		{"IF(a > b, a, b)", Num(4)},
		{"IF(a < b, a)", Missing},
		{"IF(z > 1, 1, 2)", Missing},
		{"MAX([a, b, z])", Num(4)},
		{"SUM(a, b)", Num(6)},
		{"AVG([a, b])", Num(3)},
		{"MIN([z])", Missing},
		{"ABS(b - a)", Num(2)},
		{"a >= 4 AND b != 2", Num(0)},
		{"a >= 4 OR b != 2", Num(1)},
		{"1.5e1", Num(15)},
	} {
		e, err := ParseExpr(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if got := e.Eval(vars); got != tc.want {
			t.Errorf("%s = %+v, want %+v", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{"", "a +", "SEARCH('{x}', 'Sum', 300)", "FILL(a)", "(a", "a b", "MAX([a, b)"} {
		if _, err := ParseExpr(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestStatistics(t *testing.T) {
	vals := []float64{5, 1, 3, 2, 4}
	for stat, want := range map[string]float64{"Sum": 15, "Average": 3, "Maximum": 5, "Minimum": 1, "SampleCount": 5, "p50": 3, "p99": 5, "p20": 1} {
		if got, err := aggregate(stat, vals); err != nil || got != Num(want) {
			t.Errorf("%s = %v, %v; want %v", stat, got, err, want)
		}
	}
	if _, err := aggregate("Median", nil); err == nil {
		t.Error("unknown statistic accepted")
	}
}

func TestStoreKeepsOnlyWhatAlarmsRead(t *testing.T) {
	st := &Store{}
	e := &Evaluator{Alarms: []Alarm{dlqAlarm()}, Store: st, Scale: 1.0 / 6}
	st.KeepFor(e, 0)
	st.Add(depth(1, t0), Datapoint{Namespace: "CrmSync", Name: "Received", Value: 1, Time: t0})
	if len(st.points) != 1 {
		t.Fatalf("stored %d metrics, want only the alarm's", len(st.points))
	}
	// Kept for (1 + 1) scaled periods: 20 s.
	st.Add(depth(2, t0.Add(15*time.Second)), depth(3, t0.Add(25*time.Second)))
	if got := st.Values(*dlqAlarm().Metric, t0.Add(-time.Hour), t0.Add(time.Hour)); len(got) != 2 || got[0] != 2 {
		t.Errorf("values = %v, want the two within 20 s of the latest", got)
	}
}
