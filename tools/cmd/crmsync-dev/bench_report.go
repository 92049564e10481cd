package main

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/tools/costmodel"
)

// goBenchResult is one line of `go test -bench -benchmem` output.
type goBenchResult struct {
	Pkg, Name string
	N         int
	Metrics   map[string]float64 // by unit: ns/op, B/op, allocs/op, ns/event
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

func parseGoBench(s string) []goBenchResult {
	var out []goBenchResult
	pkg := ""
	for _, line := range strings.Split(s, "\n") {
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		r := goBenchResult{Pkg: pkg, Name: m[1], N: n, Metrics: map[string]float64{}}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				r.Metrics[f[i+1]] = v
			}
		}
		out = append(out, r)
	}
	return out
}

func findBench(rs []goBenchResult, name string) (goBenchResult, bool) {
	for _, r := range rs {
		if r.Name == name {
			return r, true
		}
	}
	return goBenchResult{}, false
}

// ---------------------------------------------------------------------------- targets

// Targets from the design brief (section 11).
const (
	targetDupWrites      = 0.0
	targetDupReads       = 1.0
	targetCallTx         = 1
	targetCallWrites     = 6.0
	targetSQSPerEvent    = 1.3
	targetWebhookMicros  = 50.0
	targetWebhookAllocs  = 150.0
	targetBootstrapBytes = 15 << 20
	targetUSDPerMillion  = 5.0
)

// Targets of the data model v2 issue (#14): the reference event's billed units including index
// propagation, a no-op, reads per applied event, the typical mix per event, the share of
// transactions canceled by a concurrent event, the EMF metric series and log bytes of the typical
// mix, and the all-in cost per million events.
const (
	targetCallBilled      = 7.0
	targetNoopWrites      = 2.0
	targetAppliedReads    = 3.0
	targetMixWrites       = 10.0
	targetCanceledShare   = 0.05
	targetMetricSeries    = 20.0
	targetLogBytes        = 600.0
	targetAllInPerMillion = 9.0
)

// readRequests counts a usage's DynamoDB read requests.
func readRequests(u costmodel.Usage) int {
	n := 0
	for _, op := range []string{"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"} {
		n += u.Count("DynamoDB", op)
	}
	return n
}

func verdict(got, limit float64, unit string) string {
	if got <= limit+1e-9 {
		return "met"
	}
	if limit == 0 {
		return fmt.Sprintf("**missed** by %s %s", num(got), unit)
	}
	return fmt.Sprintf("**missed** by %s %s (%.1f×)", num(got-limit), unit, got/limit)
}

func num(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e9:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case math.Abs(v) >= 0.01:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func usd(v float64) string {
	if v >= 0.01 || v == 0 {
		return fmt.Sprintf("$%.2f", v)
	}
	return fmt.Sprintf("$%.4f", v)
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

// scenario finds a cost scenario by name prefix.
func scenario(r *benchResults, prefix string) (costScenario, bool) {
	for _, s := range r.Cost {
		if strings.HasPrefix(s.Name, prefix) {
			return s, true
		}
	}
	return costScenario{}, false
}

// typicalWebhook weighs the per-connector webhook benchmarks by the load mix's deliveries.
func typicalWebhook(r *benchResults) (micros, allocs float64, ok bool) {
	if r.Load == nil && r.Webhooks == nil {
		return 0, 0, false
	}
	mix := r.Webhooks
	if mix == nil {
		mix = r.Load
	}
	total := 0
	for name, n := range mix.ByConnector {
		b, found := findBench(r.GoBench, "BenchmarkWebhook/"+name)
		if !found {
			continue
		}
		micros += b.Metrics["ns/op"] / 1000 * float64(n)
		allocs += b.Metrics["allocs/op"] * float64(n)
		total += n
	}
	if total == 0 {
		return 0, 0, false
	}
	return micros / float64(total), allocs / float64(total), true
}

// ---------------------------------------------------------------------------- model of AWS latency

// Lambda compute in AWS is modelled from the counted calls: each call's typical in-region
// latency (assumed, not measured here) plus crmsync's own CPU time from the Go benchmarks.
var assumedLatencyMs = map[string]float64{
	"DynamoDB GetItem": 5, "DynamoDB Query": 8, "DynamoDB PutItem": 8, "DynamoDB UpdateItem": 8,
	"DynamoDB TransactWriteItems": 20, "SQS SendMessageBatch": 15, "Secrets Manager GetSecretValue": 20,
	"S3 PutObject": 30,
}

// assumedHydrationMs is a vendor API call (Graph, Meta) the worker makes for a thin notification.
const assumedHydrationMs = 150.0

// modelledLambda returns the e2e run's Lambda usage with durations modelled for AWS.
func modelledLambda(r *benchResults) []costmodel.LambdaUse {
	l := r.Load
	if l == nil {
		return nil
	}
	workerCPU, webhookCPU := 0.5, 0.15 // ms, fallbacks
	if b, ok := findBench(r.GoBench, "BenchmarkApply/call-status-update"); ok {
		workerCPU = b.Metrics["ns/op"] / 1e6
	}
	if us, _, ok := typicalWebhook(r); ok {
		webhookCPU = us / 1000
	}
	var out []costmodel.LambdaUse
	for _, f := range l.Lambda {
		m := f
		if f.Function == "WorkerFunction" {
			t := float64(l.Events) * workerCPU
			for op, n := range l.Usage.Calls {
				if op.Service == "DynamoDB" {
					t += float64(n) * assumedLatencyMs[op.String()]
				}
			}
			t += float64(l.ByConnector["msgraph"]+l.ByConnector["meta-leads"]) * assumedHydrationMs
			m.BilledMs = t + float64(f.Invocations) // rounding up each invocation
		} else {
			m.BilledMs = float64(f.Invocations) * math.Ceil(webhookCPU+assumedLatencyMs["SQS SendMessageBatch"])
			if f.Function == "WebhookMailgunFunction" {
				m.BilledMs += float64(f.Invocations) * assumedLatencyMs["DynamoDB PutItem"]
			}
		}
		out = append(out, m)
	}
	return out
}

// fixedMonthly are costs that do not scale with events.
type fixedCost struct {
	What string
	USD  float64
	How  string
}

func fixedMonthly(r *benchResults) []fixedCost {
	secrets := 7.0
	out := []fixedCost{
		{"Secrets Manager secrets", secrets * costmodel.SecretsManagerSecretMonth.USD, "7 connector secrets × $0.40"},
		{"Secrets Manager reads at the cache TTL", 9 * 12 * 24 * 30 * costmodel.SecretsManagerAPICalls.USD / costmodel.SecretsManagerAPICalls.Per,
			"9 secret reads (7 webhooks, worker's 2 hydration secrets) per warm container every 5 min, one container each"},
		{"SQS polling of an idle queue", 5 * 3 * 60 * 24 * 30 * costmodel.SQSFIFORequests.USD / costmodel.SQSFIFORequests.Per,
			"assumed 5 event source mapping pollers, one 20 s long poll each"},
	}
	if r.Load != nil && r.Load.MetricSeries > 0 {
		out = append(out, fixedCost{"CloudWatch custom metrics", float64(r.Load.MetricSeries) * costmodel.CloudWatchCustomMetric.USD,
			fmt.Sprintf("%d EMF metric series seen in the end-to-end run × $0.30", r.Load.MetricSeries)})
	}
	return out
}

// ---------------------------------------------------------------------------- report

func renderReport(r *benchResults) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# crmsync benchmarks\n\n")
	w("Generated by `%s` on %s (took %s). Every figure below comes from that run; re-run it to refresh them.\n\n",
		r.Command, r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Took.Round(time.Second))
	m := r.Machine
	w("| machine | |\n|---|---|\n| CPUs (`nproc`) | %d |\n| CPU model | %s |\n| Go | %s |\n| OS/arch | %s/%s |\n| AWS emulator | %s |\n\n",
		m.CPUs, m.CPUModel, m.GoVersion, m.OS, m.Arch, m.Moto)
	w("`make bench` runs the Go benchmarks (`go test -run '^$' -bench . -benchmem` on shared/ingest, shared/decide, " +
		"shared/association, shared/worker), builds the deployed bootstraps (`make dist`, linux/arm64), then " +
		"`crmsync-dev bench`, which starts moto and the local stack from template.yaml and measures the rest.\n\n")

	r.renderTargets(w)
	r.renderFindings(w)
	r.renderCost(w)
	r.renderLoad(w)
	r.renderMoney(w)
	r.renderGoBench(w)
	r.renderCold(w)
	r.renderMethod(w)
	return b.String()
}

type writer func(format string, a ...any)

func (r *benchResults) renderTargets(w writer) {
	w("## Targets\n\n| target (design §11) | measured | limit | verdict |\n|---|---|---|---|\n")
	if d, ok := scenario(r, "redelivery after"); ok {
		u := d.Usage.DynamoDB
		w("| duplicate (caught by the worker): write units | %s WRU | 0 | %s |\n", num(u.WriteTotal()), verdict(u.WriteTotal(), targetDupWrites, "WRU"))
		w("| duplicate: reads | %d read (%s RRU) | 1 | %s |\n", d.Usage.Count("DynamoDB", "GetItem")+d.Usage.Count("DynamoDB", "Query"), num(u.Read),
			verdict(float64(d.Usage.Count("DynamoDB", "GetItem")+d.Usage.Count("DynamoDB", "Query")), targetDupReads, "reads"))
	}
	if c, ok := scenario(r, "call-status update"); ok {
		u := c.Usage.DynamoDB
		w("| applied call-status update: transactions | %d (%d items) | 1 | %s |\n", u.Transactions, u.TransactItems,
			verdict(float64(u.Transactions), targetCallTx, "transactions"))
		w("| applied call-status update: write units of the transaction | %s WRU | 6 | %s |\n", num(u.Write), verdict(u.Write, targetCallWrites, "WRU"))
		w("| applied call-status update: write units billed (with index propagation; #14) | %s WRU | 7 | %s |\n", num(u.WriteTotal()),
			verdict(u.WriteTotal(), targetCallBilled, "WRU"))
		reads := float64(readRequests(c.Usage))
		w("| applied call-status update: DynamoDB read requests (#14) | %s | 3 | %s |\n", num(reads), verdict(reads, targetAppliedReads, "requests"))
	}
	if c, ok := scenario(r, "CRM re-sends an older edit"); ok {
		u := c.Usage.DynamoDB
		w("| no-op (CRM re-sends an older edit of the current value): write units billed (#14) | %s WRU | 2 | %s |\n", num(u.WriteTotal()),
			verdict(u.WriteTotal(), targetNoopWrites, "WRU"))
	}
	if l := r.Load; l != nil && l.Events > 0 {
		u := l.Usage.DynamoDB
		per := u.WriteTotal() / float64(l.Events)
		w("| typical mix: write units billed per event (#14) | %s WRU | 10 | %s |\n", num(per), verdict(per, targetMixWrites, "WRU"))
		if u.Transactions > 0 {
			share := float64(u.CanceledTransactions) / float64(u.Transactions)
			w("| typical mix: transactions canceled by a concurrent event (#14) | %.1f %% (%d of %d) | 5 %% | %s |\n", 100*share,
				u.CanceledTransactions, u.Transactions, verdict(100*share, 100*targetCanceledShare, "points"))
		}
		series := float64(l.MetricSeries)
		w("| typical mix: EMF metric series published (#14; $0.30 a month each) | %d | 20 | %s |\n", l.MetricSeries,
			verdict(series, targetMetricSeries, "series"))
		logs := float64(l.LogBytes) / float64(l.Events)
		w("| typical mix: log bytes per event, all functions (#14) | %s B | 600 B | %s |\n", num(logs), verdict(logs, targetLogBytes, "bytes"))
	}
	if l := r.Load; l != nil && l.Events > 0 {
		per := l.Usage.SQSRequests / float64(l.Events)
		busy := (l.Usage.SQSRequests - float64(l.Usage.SQSEmptyReceives)) / float64(l.Events)
		w("| SQS requests per event (typical mix, polls included) | %s | 1.3 | %s |\n", num(per), verdict(per, targetSQSPerEvent, "requests"))
		w("| SQS requests per event, empty polls excluded | %s | 1.3 | %s |\n", num(busy), verdict(busy, targetSQSPerEvent, "requests"))
	}
	if c, ok := scenario(r, "call-status update"); ok {
		w("| SQS requests per event when traffic is low (batches of one) | %s | 1.3 | %s |\n", num(c.Usage.SQSRequests),
			verdict(c.Usage.SQSRequests, targetSQSPerEvent, "requests"))
	}
	if us, allocs, ok := typicalWebhook(r); ok {
		w("| webhook handling, typical request (mix-weighted) | %s µs | 50 µs | %s |\n", num(us), verdict(us, targetWebhookMicros, "µs"))
		w("| webhook handling allocations, typical request | %s | 150 | %s |\n", num(allocs), verdict(allocs, targetWebhookAllocs, "allocations"))
		worstUs, worstA, wn, an := 0.0, 0.0, "", ""
		for _, g := range r.GoBench {
			if name, ok := strings.CutPrefix(g.Name, "BenchmarkWebhook/"); ok {
				if v := g.Metrics["ns/op"] / 1000; v > worstUs {
					worstUs, wn = v, name
				}
				if v := g.Metrics["allocs/op"]; v > worstA {
					worstA, an = v, name
				}
			}
		}
		w("| webhook handling, slowest connector (%s) | %s µs | 50 µs | %s |\n", wn, num(worstUs), verdict(worstUs, targetWebhookMicros, "µs"))
		w("| webhook allocations, most (%s) | %s | 150 | %s |\n", an, num(worstA), verdict(worstA, targetWebhookAllocs, "allocations"))
	}
	if len(r.Cold) > 0 {
		var big int64
		name := ""
		calls := 0
		for _, c := range r.Cold {
			if c.Size > big {
				big, name = c.Size, c.Function
			}
			calls += c.Requests
		}
		if big > 0 {
			w("| largest bootstrap (%s, arm64) | %s | 15 MB | %s |\n", name, mb(big), verdict(float64(big)/(1<<20), 15, "MB"))
		} else {
			w("| bootstrap size | not measured (no dist/) | 15 MB | — |\n")
		}
		w("| AWS requests during init, all functions | %d | 0 | %s |\n", calls, verdict(float64(calls), 0, "requests"))
	}
	r.renderGraphAnswer(w)
	if lines := r.moneyLines(false); lines != nil {
		t := costmodel.Total(lines)
		tm := costmodel.Total(r.moneyLines(true))
		w("| cost per million events, typical mix (Lambda compute as measured on moto) | %s | $5 | %s |\n", usd(t), verdict(t, targetUSDPerMillion, "USD"))
		w("| cost per million events, typical mix (Lambda compute modelled for AWS) | %s | $5 | %s |\n", usd(tm), verdict(tm, targetUSDPerMillion, "USD"))
		allIn := tm
		for _, f := range fixedMonthly(r) {
			allIn += f.USD
		}
		w("| all-in cost per million events (#14: the modelled total with storage and PITR, plus the monthly costs at 1 million events a month) | %s | $9 | %s |\n",
			usd(allIn), verdict(allIn, targetAllInPerMillion, "USD"))
	}
	w("\n")
}

// graphAnswerBudget is how long Microsoft Graph waits for a notification endpoint's answer
// before it counts the delivery as failed (and, repeated, throttles then drops the endpoint).
const graphAnswerBudget = 3 * time.Second

// renderGraphAnswer holds Graph's answer budget against the worst case this run saw: the
// slowest msgraph answer of the webhook run plus its function's cold start, when both were
// measured.
func (r *benchResults) renderGraphAnswer(w writer) {
	h := r.Webhooks
	if h == nil || len(h.ConnectorLatencies["msgraph"]) == 0 {
		return
	}
	slowest := percentile(h.ConnectorLatencies["msgraph"], 100)
	worst, how := slowest, fmt.Sprintf("slowest msgraph answer on the local stack %s", ms(slowest))
	for _, c := range r.Cold {
		if c.Function == "WebhookMsgraphFunction" && c.InitMs > 0 {
			cold := time.Duration((c.InitMs + c.HandlerMs) * float64(time.Millisecond))
			worst += cold
			how += fmt.Sprintf(" + its function's cold start %s", ms(cold))
		}
	}
	w("| Graph notification answered (%s) | %s | 3 s | %s |\n", how, ms(worst),
		verdict(worst.Seconds(), graphAnswerBudget.Seconds(), "s"))
}

// renderFindings says why the missed targets miss, from this run's figures.
func (r *benchResults) renderFindings(w writer) {
	w("### Why the misses miss\n\n")
	if c, ok := scenario(r, "call-status update"); ok && len(c.Writes) > 0 {
		items := len(c.Writes)
		var sizes []string
		for _, wr := range c.Writes {
			if wr.Bytes > 1024 {
				sizes = append(sizes, fmt.Sprintf("%s %s (%d bytes)", shortTable(wr.Table), wr.SK, wr.Bytes))
			}
		}
		over := "every item is under 1 KB"
		if len(sizes) > 0 {
			over = "items over 1 KB add the rest: " + strings.Join(sizes, ", ")
		}
		w("- **Write units.** The reference event's one transaction writes %d items (table below); a transactional write costs at "+
			"least 2 WRU per item, so with %d items the floor is %d WRU — the 6 WRU target needs three items: the audit of the "+
			"event's decisions on the ledger item rather than an item of its own, and engagement fields (last_activity_at, "+
			"last_call_status) on a small item of their own instead of the profile. In this run %s. Index propagation adds "+
			"%s WRU more: every index in template.yaml projects ALL attributes, so each ledger write is copied to ByGroup and "+
			"BySource, each profile write to ByAccount, and each activity write to ByAccount; KEYS_ONLY or INCLUDE "+
			"projections where the readers can do with them would cut that.\n", items, items, 2*items, over, num(c.Usage.DynamoDB.IndexWrite))
	}
	w("- **Webhook CPU and allocations.** Profiling the Twilio handler: phone-number parsing and validation (nyaruka/phonenumbers, " +
		"regexp-heavy) is about a third of it, form decoding (url.ParseQuery) and JSON (canonical event, EMF lines, the log line) most of " +
		"the rest; the connector alone (verify + parse + keys + message) already exceeds the budget for most connectors (Connector/* below).\n")
	if len(r.Cold) > 0 {
		w("- **Bootstrap size.** Each bootstrap is built per function kind from `functions/<kind>`; its size is listed per function " +
			"in the table under Bootstraps and cold start.\n")
	}
	if lines := r.moneyLines(true); lines != nil {
		var dw, stored float64
		for _, l := range lines {
			switch {
			case l.Service == "DynamoDB" && strings.HasPrefix(l.Driver, "write"):
				dw = l.USDPerMillion
			case l.Service == "DynamoDB" && (strings.HasPrefix(l.Driver, "storage") || strings.HasPrefix(l.Driver, "point-in-time")):
				stored += l.USDPerMillion
			}
		}
		w("- **Dollars.** DynamoDB writes are %s per million events and what the tables keep (storage and point-in-time "+
			"recovery, %s) %s; everything else together is %s. Most of the storage is the ledger's two ALL-projected indexes, "+
			"each a full copy of every ledger item for its 400 days (Storage, below).\n",
			usd(dw), fmt.Sprintf("%.0f days", storageHorizon.Hours()/24), usd(stored), usd(costmodel.Total(lines)-dw-stored))
	}
	w("\nNo optimisation was made to reach these figures: the fixes above change the worker's data model, the template's " +
		"indexes or the binaries' structure, which are decisions for their owners, not for a benchmark.\n\n")
}

func (r *benchResults) renderCost(w writer) {
	if len(r.Cost) == 0 {
		return
	}
	w("## Per-event AWS usage (exact)\n\n")
	w("Each event alone, end to end on the local stack: the delivery posted over HTTP, then one batch polled and settled as the " +
		"event source mapping does (batch of one; batching in the end-to-end run below). Counted by an SDK middleware on every " +
		"client of the stack; DynamoDB units computed from the items' sizes (see Method). A warm pipeline: every function ran once " +
		"before (secrets cached).\n\n")
	w("| event | class | outcome | DynamoDB calls | RRU | WRU table | WRU indexes | SQS requests | other AWS calls | Lambda invocations |\n")
	w("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Cost {
		u := s.Usage
		var ddb, other []string
		for _, op := range u.Ops() {
			n := u.Calls[op]
			switch op.Service {
			case "DynamoDB":
				x := fmt.Sprintf("%s %d", op.Operation, n)
				if op.Operation == "TransactWriteItems" {
					x += fmt.Sprintf(" (%d items)", u.DynamoDB.TransactItems)
				}
				ddb = append(ddb, x)
			case "SQS":
			default:
				other = append(other, fmt.Sprintf("%s %d", op, n))
			}
		}
		inv := 0
		for _, l := range s.Lambda {
			inv += l.Invocations
		}
		outcome := s.Outcome
		if s.Class == classDuplicate {
			outcome = "acknowledged as a duplicate (ledger unchanged: " + s.Outcome + ")"
		}
		if s.Note != "" {
			outcome += " — " + s.Note
		}
		if len(other) == 0 {
			other = []string{"—"}
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", s.Name, s.Class, outcome, strings.Join(ddb, ", "), num(u.DynamoDB.Read),
			num(u.DynamoDB.Write), num(u.DynamoDB.IndexWrite), num(u.SQSRequests), strings.Join(other, ", "), inv)
	}
	w("\nSQS per event here: SendMessageBatch 1 (webhook), ReceiveMessage 1 and DeleteMessageBatch 1 (event source mapping, batch of one).\n\n")
	if d, ok := scenario(r, "vendor retry within"); ok {
		w("A vendor retry inside SQS's 5-minute deduplication window costs, in AWS, only the webhook's share: %s. "+
			"moto forgets a deduplication id once its message is deleted, so locally the retry reached the worker, whose ledger read "+
			"caught it (the row above; the same as a redelivery after the window).\n\n", opsList(d.Webhook))
	}
	if c, ok := scenario(r, "call-status update"); ok && len(c.Writes) > 0 {
		w("### Where the reference event's write units go\n\nThe applied call-status update (`%s`), item by item:\n\n", c.Name)
		w("| item | size | WRU (transactional) | WRU indexes |\n|---|---|---|---|\n")
		for _, it := range c.Writes {
			w("| %s | %d B | %s | %s |\n", itemKind(it), it.Bytes, num(it.Units), num(it.IndexUnits))
		}
		w("\nThe requests it made, by service and API: %s.\n\n", opsList(c.Usage))
	}
}

func opsList(u costmodel.Usage) string {
	var parts []string
	for _, op := range u.Ops() {
		parts = append(parts, fmt.Sprintf("%s %d", op, u.Calls[op]))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

func itemKind(t costmodel.WriteTrace) string {
	table := t.Table
	if i := strings.LastIndex(table, "-"); i >= 0 {
		table = table[i+1:]
	}
	kind := t.SK
	switch {
	case t.Check:
		kind = "ConditionCheck " + t.PK
	case strings.HasPrefix(t.SK, "AUDIT#"):
		kind = "audit of the event's decisions on " + strings.SplitN(t.PK, "#", 2)[0]
	case strings.HasPrefix(t.SK, "ACT#"):
		kind = "activity"
	case t.SK == "PROFILE":
		kind = "profile " + strings.SplitN(t.PK, "#", 2)[0]
	case t.SK == "":
		kind = "item"
	}
	return table + ": " + kind
}

func (r *benchResults) renderLoad(w writer) {
	if r.Webhooks == nil && r.Load == nil {
		return
	}
	w("## End to end on the local stack\n\n")
	w("A typical mix: synthetic people each send a journey in order — a lead (Typeform 60 %%, Meta Lead Ads 20 %%, generic 10 %%), "+
		"a Calendly meeting for half of them, one Twilio call's three status callbacks, the rep's email seen by Graph (hydrated) and "+
		"Mailgun (delivered, and opened for half) — and one delivery in twenty is repeated as a vendor retry. Posted over HTTP to the "+
		"local HTTP API (API Gateway payload 2.0), real signatures, %d concurrent senders.\n\n", r.concurrency())
	if h := r.Webhooks; h != nil {
		rate := float64(h.Deliveries) / h.PostWall.Seconds()
		w("**Webhooks** (%d people, %d deliveries; the queue consumed as it fills, worker not running): %.0f requests/s; latency p50 %s, p99 %s.\n\n",
			h.Persons, h.Deliveries, rate, ms(percentile(h.Latencies, 50)), ms(percentile(h.Latencies, 99)))
		w("| connector | deliveries | p50 | p99 |\n|---|---|---|---|\n")
		for _, c := range sortedKeys(h.ConnectorLatencies) {
			l := h.ConnectorLatencies[c]
			w("| %s | %d | %s | %s |\n", c, len(l), ms(percentile(l, 50)), ms(percentile(l, 99)))
		}
		w("\nmoto's own answer time in this run: %s.\n\n", latencyList(h.Usage))
	}
	if l := r.Load; l != nil {
		w("**End to end** (%d people, %d deliveries, %d distinct events, worker running through the emulated SQS event source mapping): "+
			"%.1f events/s (first post to queue drained in %s); webhook latency p50 %s, p99 %s. Outcomes: %s; events without a ledger item: %d.\n\n",
			l.Persons, l.Deliveries, l.Events, float64(l.Events)/l.DrainWall.Seconds(), l.DrainWall.Round(100*time.Millisecond),
			ms(percentile(l.Latencies, 50)), ms(percentile(l.Latencies, 99)), outcomesList(l.Outcomes), l.Missing)
		u := l.Usage
		batch := 0.0
		if n := u.SQSReceives - u.SQSEmptyReceives; n > 0 {
			batch = float64(u.SQSMessagesReceived) / float64(n)
		}
		w("Throughput here is the emulator's, not crmsync's: moto answers a TransactWriteItems in %s on average (it deep-copies "+
			"every table it touches) and the bench lets one DynamoDB write reach it at a time (moto is not thread-safe there); "+
			"the worker's own CPU per event is in the Go benchmarks. Requests in this run: %s. Batches averaged %.1f messages; "+
			"%d of %d receives were empty; %d transactions were canceled by a concurrent event and re-decided.\n\n",
			avgLatency(u, "DynamoDB", "TransactWriteItems"), opsList(u), batch, u.SQSEmptyReceives, u.SQSReceives, u.DynamoDB.CanceledTransactions)
	}
}

func (r *benchResults) concurrency() int {
	if r.Webhooks != nil {
		return r.Webhooks.Concurrency
	}
	return r.Load.Concurrency
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func outcomesList(m map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func avgLatency(u costmodel.Usage, service, op string) string {
	o := costmodel.Op{Service: service, Operation: op}
	if u.Attempts[o] == 0 {
		return "—"
	}
	return ms(u.Latency[o] / time.Duration(u.Attempts[o]))
}

func latencyList(u costmodel.Usage) string {
	var parts []string
	for _, op := range u.Ops() {
		parts = append(parts, fmt.Sprintf("%s %s", op, avgLatency(u, op.Service, op.Operation)))
	}
	return strings.Join(parts, ", ")
}

// moneyLines prices the end-to-end run; modelled replaces the measured Lambda durations.
func (r *benchResults) moneyLines(modelled bool) []costmodel.Line {
	if r.Load == nil || r.Load.Events == 0 {
		return nil
	}
	wl := r.Load.Workload
	if modelled {
		wl.Lambda = modelledLambda(r)
	}
	// Secrets Manager reads are a fixed cost at the cache TTL (below), not a per-event one: the
	// run is minutes long, so its cold reads would be charged to a handful of events.
	wl.AWS = wl.AWS.Clone()
	delete(wl.AWS.Calls, costmodel.Op{Service: "Secrets Manager", Operation: "GetSecretValue"})
	lines := costmodel.PerMillion(wl)
	for i := range lines {
		if lines[i].Service == "Secrets Manager" {
			lines[i].Driver += " (a fixed cost at the cache TTL: below)"
		}
	}
	return lines
}

// renderStorage states what the storage lines price: per table, what the run's events added.
func (r *benchResults) renderStorage(w writer) {
	if len(r.Load.Workload.Storage) == 0 {
		return
	}
	n := float64(r.Load.Events)
	w("Storage behind those lines (what the end-to-end run added per event, metered; kept for %.0f days unless its TTL is sooner):\n\n", storageHorizon.Hours()/24)
	w("| table | items per event | table bytes per event | index bytes per event | point-in-time recovery |\n|---|---|---|---|---|\n")
	for _, t := range r.Load.Workload.Storage {
		pitr := "no"
		if t.PITR {
			pitr = "yes"
		}
		w("| %s | %s | %.0f | %.0f | %s |\n", t.Table, num(float64(t.Stored.Items)/n), float64(t.Stored.Bytes)/n, float64(t.Stored.IndexBytes)/n, pitr)
	}
	w("\n")
}

func (r *benchResults) renderMoney(w writer) {
	lines := r.moneyLines(false)
	if lines == nil {
		return
	}
	modelled := r.moneyLines(true)
	w("## Cost per million events (typical mix, us-east-1)\n\n")
	w("From the end-to-end run's counted usage divided by its %d distinct events, at the prices in tools/costmodel/prices.go. "+
		"Lambda compute is shown twice: as measured on this machine (every call waits on moto, so it is an upper bound) and modelled "+
		"for AWS (each counted call at an assumed in-region latency plus crmsync's CPU time from the Go benchmarks; see Method).\n\n", r.Load.Events)
	w("| service | billed for | per event | $ per million events | price |\n|---|---|---|---|---|\n")
	for i, l := range lines {
		cost := usd(l.USDPerMillion)
		per := num(l.PerEvent) + " " + l.Unit
		if l.Driver == "arm64 compute" {
			cost = fmt.Sprintf("%s measured / %s modelled", usd(l.USDPerMillion), usd(modelled[i].USDPerMillion))
			per = fmt.Sprintf("%s / %s GB-s", num(l.PerEvent), num(modelled[i].PerEvent))
		}
		if l.Unit == "GB" {
			per = fmt.Sprintf("%.0f bytes", l.PerEvent*(1<<30))
		}
		if l.Unit == "GB-month" {
			per = fmt.Sprintf("%.0f byte-months", l.PerEvent*(1<<30))
		}
		w("| %s | %s | %s | %s | $%s per %s |\n", l.Service, l.Driver, per, cost, strconv.FormatFloat(l.Price.USD, 'f', -1, 64), l.Price.Unit)
	}
	w("| **total** | | | **%s** measured / **%s** modelled | |\n\n", usd(costmodel.Total(lines)), usd(costmodel.Total(modelled)))
	r.renderStorage(w)
	fixed := fixedMonthly(r)
	total := 0.0
	w("Costs that do not grow with events (per month, not in the totals above):\n\n| what | $ per month | how |\n|---|---|---|\n")
	for _, f := range fixed {
		total += f.USD
		w("| %s | %s | %s |\n", f.What, usd(f.USD), f.How)
	}
	w("| **total** | **%s** | at 1 million events a month this adds %s per million events |\n\n", usd(total), usd(total))
	var dw, all float64
	for _, l := range modelled {
		all += l.USDPerMillion
		if l.Service == "DynamoDB" && strings.HasPrefix(l.Driver, "write") {
			dw = l.USDPerMillion
		}
	}
	if all > 0 {
		w("DynamoDB write units are %.0f %% of the modelled total; the reference event's breakdown above shows which items they buy.\n\n", 100*dw/all)
	}
}

func (r *benchResults) renderGoBench(w writer) {
	if len(r.GoBench) == 0 {
		return
	}
	w("## Go benchmarks\n\n`go test -run '^$' -bench . -benchmem` (realistic payloads from events/payloads, signed with the dev secrets; AWS " +
		"calls answered by stubs, or by an in-memory DynamoDB fixture for the worker, so these are crmsync's own CPU and allocations).\n\n")
	w("| benchmark | what | time/op | B/op | allocs/op |\n|---|---|---|---|---|\n")
	for _, g := range r.GoBench {
		t := fmt.Sprintf("%s µs", num(g.Metrics["ns/op"]/1000))
		if v, ok := g.Metrics["ns/event"]; ok {
			t += fmt.Sprintf(" (%s µs/event)", num(v/1000))
		}
		w("| %s | %s | %s | %s | %s |\n", strings.TrimPrefix(g.Name, "Benchmark"), benchWhat(g.Name), t, num(g.Metrics["B/op"]), num(g.Metrics["allocs/op"]))
	}
	w("\n")
}

func benchWhat(name string) string {
	switch {
	case strings.HasPrefix(name, "BenchmarkWebhookLambda/"):
		return "the same, with aws-lambda-go's JSON decode of the API Gateway event and encode of the answer"
	case strings.HasPrefix(name, "BenchmarkWebhook/"):
		return "webhook handler: checks, verify, parse, keys, SendMessageBatch input, logs and metrics"
	case strings.HasPrefix(name, "BenchmarkConnector/"):
		return "connector alone: verify, parse, validate, message body and SQS ids"
	case strings.HasPrefix(name, "BenchmarkDecide/"):
		return "policy decision for one entity (decide.Decide + Apply)"
	case strings.HasPrefix(name, "BenchmarkAssociate/"):
		return "association (in-memory lookups)"
	case name == "BenchmarkApply/duplicate":
		return "worker: a duplicate (ledger read only)"
	case strings.HasPrefix(name, "BenchmarkApply/"):
		return "worker per-event path against the in-memory store"
	case name == "BenchmarkHandleBatch":
		return "worker: an SQS batch of 10 call-status updates"
	}
	return ""
}

func (r *benchResults) renderCold(w writer) {
	if len(r.Cold) == 0 {
		return
	}
	w("## Bootstraps and cold start\n\nSize: `make dist` (linux/arm64, as deployed). Init: this machine's build (%s) started under aws-lambda-rie, "+
		"median of the runs, measured as the first invocation's wall time from starting the emulator minus the handler's duration "+
		"(so it includes the emulator's own start); RIE's INIT REPORT is shown too. Every function is pointed at a local endpoint "+
		"that counts requests; the first invocation is one that makes no AWS call, so any request counted came from init.\n\n", r.Machine.Arch)
	w("| function | binary | size (arm64) | vs 15 MB | init | handler | RIE INIT REPORT | AWS requests at init | first invocation |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Cold {
		size, v := "—", "—"
		if c.Size > 0 {
			size, v = mb(c.Size), verdict(float64(c.Size)/(1<<20), 15, "MB")
		}
		reached := ""
		if c.Reached {
			reached = " (a later AWS-calling invocation was counted: the endpoint is live)"
		}
		w("| %s | %s | %s | %s | %.0f ms | %.1f ms | %.0f ms | %d%s | %s |\n", c.Function, c.Kind, size, v, c.InitMs, c.HandlerMs, c.RIEInitMs,
			c.Requests, reached, c.Probe)
	}
	w("\n")
}

func (r *benchResults) renderMethod(w writer) {
	w("## Method and caveats\n\n")
	w("- **Counting.** `costmodel.Counter` is an aws-sdk-go-v2 middleware (Initialize and Deserialize steps) added through " +
		"`localcloud.Config.AWSOptions` to the stack's aws.Config, so every function's clients, provisioning and the event source " +
		"mapping's pollers are counted: calls, HTTP attempts, body sizes and answer times by service and API.\n")
	w("- **DynamoDB units** are computed by the published rules, not read from the emulator (the worker does not ask for " +
		"ReturnConsumedCapacity, and moto answers fixed placeholders, not sizes, and none for transactions): item size per the " +
		"\"Item sizes and formats\" rules; a write costs 1 WRU per KB of the larger of the item before and after (the counter keeps a " +
		"shadow of every item it saw written or read, so \"before\" is exact); 2× in TransactWriteItems; a ConditionCheck is priced as " +
		"a transactional write of the item checked; reads 1 RRU per 4 KB strongly consistent, 0.5 eventually consistent (index " +
		"queries), a query reading every item its key condition selects, before the filter. Global secondary indexes (all ALL " +
		"projection in template.yaml) cost 1 WRU per KB of each index entry put or deleted (2 when an index key changes), at the " +
		"standard rate: index propagation is not part of the transaction.\n")
	w("- **SQS** requests are counted as billed (one per 64 KB chunk of payload). The local event source mapping long-polls for 1 s " +
		"with 2 pollers (Lambda: 20 s, several pollers), so its empty receives depend on wall time; both figures are shown.\n")
	w("- **moto** is the emulator: its TransactWriteItems deep-copies every table it touches (slower as tables grow) and is not " +
		"thread-safe, so the bench serializes DynamoDB writes to it; it forgets a FIFO deduplication id once the message is " +
		"deleted. Timings that include moto (end-to-end rate, webhook latency, measured Lambda compute) describe this rig, not AWS.\n")
	w("- **Modelled Lambda compute** (for AWS): worker = events × the worker benchmark's CPU per event + each counted DynamoDB call × ")
	var lat []string
	for _, k := range sortedKeys(assumedLatencyMs) {
		lat = append(lat, fmt.Sprintf("%s %.0f ms", k, assumedLatencyMs[k]))
	}
	w("an assumed latency (%s) + %.0f ms per hydrated notification (vendor API), calls summed without overlap; webhook = its "+
		"CPU + one SendMessageBatch (+ the Mailgun replay PutItem). Assumptions, not measurements.\n", strings.Join(lat, ", "), assumedHydrationMs)
	w("- **Storage** is what the end-to-end run added to each table and its indexes, metered as DynamoDB meters it (each item "+
		"and each index entry at its size plus 100 bytes), each item kept until its TTL (expires_at) or, without one, for %s — the "+
		"ledger's retention; CRM items have no TTL, so after that a month's events keep costing the same every further month. "+
		"Point-in-time recovery is billed on the base table's size, for tables whose template enables it.\n",
		fmt.Sprintf("%.0f days", storageHorizon.Hours()/24))
	w("- **Not included:** Lambda INIT billing on cold starts, data transfer, CloudWatch alarms and dashboards, free tiers " +
		"(DynamoDB's first 25 GB stored among them).\n")
	w("- **Prices** (%s):\n\n", costmodel.PricesTranscribed)
	w("| price | $ | per | since | source |\n|---|---|---|---|---|\n")
	for _, p := range costmodel.AllPrices() {
		since := p.Price.Since
		if since == "" {
			since = "—"
		}
		w("| %s | %s | %s | %s | %s |\n", p.Name, strconv.FormatFloat(p.Price.USD, 'f', -1, 64), p.Price.Unit, since, p.Price.Source)
	}
	w("\n")
}

// shortTable drops the stack prefix of a physical table name ("bench-CrmTable" -> "CrmTable").
func shortTable(name string) string {
	if i := strings.LastIndex(name, "-"); i >= 0 {
		return name[i+1:]
	}
	return name
}
