// Package emf owns crmsync's metrics: CloudWatch Embedded Metric Format records written as one
// JSON line each to the function's stdout, where Lambda's log pipeline turns them into metrics in
// the CrmSync namespace. The local stack reads the same lines to evaluate alarms.
package emf

import (
	"encoding/json"
	"io"
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
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
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

// RollupDimension is the dimension metrics are also aggregated over: a record whose dimensions
// include it is published with its dimensions, again without RollupDimension, and once more
// with no dimension at all (e.g. Processed{Connector,Outcome}, Processed{Outcome} and
// Processed{}), so alarms and dashboards can watch totals without SEARCH expressions.
const RollupDimension = "Connector"

// DimensionSets returns the EMF dimension sets a record with these dimension names is published
// under (see RollupDimension); names are sorted within each set.
func DimensionSets(names []string) [][]string {
	keys := append(make([]string, 0, len(names)), names...)
	sort.Strings(keys)
	sets := [][]string{keys}
	i := sort.SearchStrings(keys, RollupDimension)
	if i == len(keys) || keys[i] != RollupDimension {
		return sets
	}
	rest := append(append([]string(nil), keys[:i]...), keys[i+1:]...)
	if len(rest) > 0 {
		sets = append(sets, rest)
	}
	return append(sets, []string{})
}

// Emit writes one record: the metrics with the given dimensions (e.g. Connector=twilio),
// published under DimensionSets of those dimensions.
func (w *Writer) Emit(dims map[string]string, metrics ...Metric) {
	if w == nil || w.w == nil || len(metrics) == 0 {
		return
	}
	rec := map[string]any{}
	keys := make([]string, 0, len(dims))
	for k, v := range dims {
		keys = append(keys, k)
		rec[k] = v
	}
	d := directive{Namespace: Namespace, Dimensions: DimensionSets(keys)}
	for _, m := range metrics {
		d.Metrics = append(d.Metrics, metricDef{Name: m.Name, Unit: m.Unit})
		rec[m.Name] = m.Value
	}
	rec["_aws"] = meta{Timestamp: w.now().UnixMilli(), CloudWatchMetrics: []directive{d}}
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
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
				var v float64
				if json.Unmarshal(rec[md.Name], &v) != nil {
					continue
				}
				out = append(out, Datum{Namespace: d.Namespace, Name: md.Name, Unit: md.Unit, Value: v, Dimensions: dims,
					Time: time.UnixMilli(m.Timestamp)})
			}
		}
	}
	return out
}
