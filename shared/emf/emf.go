// Package emf owns crmsync's metrics: CloudWatch Embedded Metric Format records written as one
// JSON line each to the function's stdout, where Lambda's log pipeline turns them into metrics in
// the CrmSync namespace. The local stack reads the same lines to evaluate alarms.
package emf

import (
	"encoding/json"
	"io"
	"slices"
	"sort"
	"sync"
	"time"
)

// Namespace is the CloudWatch namespace of every crmsync metric.
const Namespace = "CrmSync"

// Units used by crmsync metrics.
const (
	Count        = "Count"
	Milliseconds = "Milliseconds"
	Percent      = "Percent"
	None         = "None"
)

// Metric is one named value.
type Metric struct {
	Name  string
	Value float64
	Unit  string
}

// Writer writes EMF records. It is safe for concurrent use.
//
// Between Hold and the matching Release it aggregates instead of writing: records with the same
// dimensions are merged into one, counts summed and other values kept as a list (EMF accepts up
// to MaxValues values per metric), so a batch of events costs one record per dimension set, not
// one per event.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
	// holds counts open Holds; pending is what they aggregated, by dimensions, in first-seen order.
	holds   int
	pending []*aggregate
}

// MaxValues is the most values one EMF record may carry for one metric.
const MaxValues = 100

// aggregate is the merged record of one dimension set while the Writer holds.
type aggregate struct {
	key    string
	dims   map[string]string
	order  []string // metric names in first-seen order
	units  map[string]string
	sums   map[string]float64   // Count metrics
	values map[string][]float64 // other metrics
}

// New returns a Writer to w (os.Stdout in Lambda). A nil w discards records.
func New(w io.Writer, now func() time.Time) *Writer {
	if now == nil {
		now = time.Now
	}
	return &Writer{w: w, now: now}
}

type metricDef struct {
	Name string `json:"Name"`
	Unit string `json:"Unit,omitempty"`
}

type directive struct {
	Namespace  string      `json:"Namespace"`
	Dimensions [][]string  `json:"Dimensions"`
	Metrics    []metricDef `json:"Metrics"`
}

type meta struct {
	Timestamp         int64       `json:"Timestamp"`
	CloudWatchMetrics []directive `json:"CloudWatchMetrics"`
}

// ConnectorDimension names the connector a record is about. It is always written into the record
// (Logs Insights groups by it: `stats sum(Received) by Connector`), but published as a metric
// dimension only for the metrics PerConnector names: each published dimension set is a metric
// series billed every month it has data, and a volume metric per connector multiplies the series
// by the number of connectors for figures the logs already give.
const ConnectorDimension = "Connector"

// PerConnector reports whether a metric is published per connector as well as in total: the
// failure counts alarmed per connector (template.yaml's AuthFailures* and EnqueueFailures*
// alarms). They have data only while a connector fails, so their series cost nothing in a
// healthy month.
func PerConnector(metric string) bool {
	return metric == "AuthFailures" || metric == "EnqueueFailures"
}

// DimensionSets returns the EMF dimension sets a metric recorded with these dimension names is
// published under; names are sorted within each set. Without ConnectorDimension that is the
// names themselves. With it, the metric is published without the connector and in total (e.g.
// Processed{Outcome} and Processed{}), and, when PerConnector(metric), first with the connector
// too (AuthFailures{Connector} and AuthFailures{}), so alarms watch totals without SEARCH.
func DimensionSets(names []string, metric string) [][]string {
	keys := append(make([]string, 0, len(names)), names...)
	sort.Strings(keys)
	i := sort.SearchStrings(keys, ConnectorDimension)
	if i == len(keys) || keys[i] != ConnectorDimension {
		return [][]string{keys}
	}
	var sets [][]string
	if PerConnector(metric) {
		sets = append(sets, keys)
	}
	rest := append(append([]string(nil), keys[:i]...), keys[i+1:]...)
	if len(rest) > 0 {
		sets = append(sets, rest)
	}
	return append(sets, []string{})
}

// Hold starts aggregating (see Writer); every Hold needs its Release.
func (w *Writer) Hold() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.holds++
	w.mu.Unlock()
}

// Release ends a Hold; the last open one writes what was aggregated, one record per
// dimension set (split when a metric has more than MaxValues values).
func (w *Writer) Release() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.holds > 0 {
		w.holds--
	}
	if w.holds > 0 {
		return
	}
	pending := w.pending
	w.pending = nil
	for _, a := range pending {
		w.writeAggregate(a)
	}
}

// writeAggregate writes one aggregated record, and more while values remain. Callers hold mu.
func (w *Writer) writeAggregate(a *aggregate) {
	for first := true; ; first = false {
		var metrics []Metric
		values := map[string][]float64{}
		more := false
		for _, name := range a.order {
			if sum, ok := a.sums[name]; ok {
				if first {
					metrics = append(metrics, Metric{Name: name, Value: sum, Unit: a.units[name]})
				}
				continue
			}
			vs := a.values[name]
			if len(vs) == 0 {
				continue
			}
			n := min(len(vs), MaxValues)
			values[name], a.values[name] = vs[:n], vs[n:]
			more = more || len(vs) > n
			metrics = append(metrics, Metric{Name: name, Unit: a.units[name]})
		}
		if len(metrics) > 0 {
			w.write(a.dims, metrics, values)
		}
		if !more {
			return
		}
	}
}

// Emit writes one record: the metrics with the given dimensions (e.g. Connector=twilio),
// published under DimensionSets of those dimensions. While the Writer holds, the record is
// merged into its dimension set's aggregate instead.
func (w *Writer) Emit(dims map[string]string, metrics ...Metric) {
	if w == nil || w.w == nil || len(metrics) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.holds > 0 {
		w.merge(dims, metrics)
		return
	}
	w.write(dims, metrics, nil)
}

// merge adds metrics to the aggregate of dims. Callers hold mu.
func (w *Writer) merge(dims map[string]string, metrics []Metric) {
	keys := make([]string, 0, len(dims))
	for k := range dims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	key := ""
	for _, k := range keys {
		key += k + "=" + dims[k] + "\x00"
	}
	var a *aggregate
	for _, p := range w.pending {
		if p.key == key {
			a = p
			break
		}
	}
	if a == nil {
		copied := make(map[string]string, len(dims))
		for k, v := range dims {
			copied[k] = v
		}
		a = &aggregate{key: key, dims: copied, units: map[string]string{}, sums: map[string]float64{}, values: map[string][]float64{}}
		w.pending = append(w.pending, a)
	}
	for _, m := range metrics {
		if _, seen := a.units[m.Name]; !seen {
			a.order = append(a.order, m.Name)
			a.units[m.Name] = m.Unit
		}
		if m.Unit == Count {
			a.sums[m.Name] += m.Value
		} else {
			a.values[m.Name] = append(a.values[m.Name], m.Value)
		}
	}
}

// write writes one record; a metric listed in values carries that list instead of its Value.
// Callers hold mu.
func (w *Writer) write(dims map[string]string, metrics []Metric, values map[string][]float64) {
	rec := map[string]any{}
	keys := make([]string, 0, len(dims))
	for k, v := range dims {
		keys = append(keys, k)
		rec[k] = v
	}
	// One directive per distinct list of dimension sets, in the metrics' order.
	var directives []directive
	for _, m := range metrics {
		sets := DimensionSets(keys, m.Name)
		at := slices.IndexFunc(directives, func(d directive) bool {
			return slices.EqualFunc(d.Dimensions, sets, slices.Equal[[]string])
		})
		if at < 0 {
			directives = append(directives, directive{Namespace: Namespace, Dimensions: sets})
			at = len(directives) - 1
		}
		directives[at].Metrics = append(directives[at].Metrics, metricDef{Name: m.Name, Unit: m.Unit})
		if vs, ok := values[m.Name]; ok {
			rec[m.Name] = vs
		} else {
			rec[m.Name] = m.Value
		}
	}
	rec["_aws"] = meta{Timestamp: w.now().UnixMilli(), CloudWatchMetrics: directives}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	_, _ = w.w.Write(append(b, '\n'))
}

// Datum is one metric value read back from an EMF record.
type Datum struct {
	Namespace  string
	Name       string
	Unit       string
	Value      float64
	Dimensions map[string]string
	Time       time.Time
}

// Parse reads the metric values of one log line; lines that are not EMF records yield nothing.
func Parse(line []byte) []Datum {
	var rec map[string]json.RawMessage
	if json.Unmarshal(line, &rec) != nil || rec["_aws"] == nil {
		return nil
	}
	var m meta
	if json.Unmarshal(rec["_aws"], &m) != nil {
		return nil
	}
	var out []Datum
	for _, d := range m.CloudWatchMetrics {
		for _, dimset := range d.Dimensions {
			dims := map[string]string{}
			for _, k := range dimset {
				var v string
				_ = json.Unmarshal(rec[k], &v)
				dims[k] = v
			}
			for _, md := range d.Metrics {
				var vs []float64
				var v float64
				if json.Unmarshal(rec[md.Name], &v) == nil {
					vs = []float64{v}
				} else if json.Unmarshal(rec[md.Name], &vs) != nil {
					continue
				}
				for _, v := range vs {
					out = append(out, Datum{Namespace: d.Namespace, Name: md.Name, Unit: md.Unit, Value: v, Dimensions: dims,
						Time: time.UnixMilli(m.Timestamp)})
				}
			}
		}
	}
	return out
}
