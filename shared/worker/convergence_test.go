package worker

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/crmsync/crmsync/shared/canonical"
)

// Convergence of the real worker on DynamoDB (moto): for a random set of events about one
// person whose contact fields fall under the order-independent rules (first_touch, latest,
// precedence — never the identity group's owner_wins_unless_blank, which is order-dependent
// among non-owners), delivered in two different random orders with different random
// duplicates, the contact ends identical: field values and provenance, and the timeline (call
// callbacks of one CallSid merged into one activity). For the audit trail, see "Audit: what
// converges" below.
//
// The two deliveries are applied to two different people (same local part at two test-unique
// domains, two phone numbers, a per-run token inside every event key and CallSid) sharing one
// provisioned table set, and compared modulo those names. Events are applied one at a time, so
// moto's lack of transaction isolation under concurrency does not matter here.

// convFields are the contact fields events propose, one or more per order-independent rule.
var convFields = []string{
	"utm_source", "campaign", // attribution: first_touch
	"last_activity_at", "last_call_status", // engagement: latest
	"company", "job_title", // firmographic: precedence (crm, the owner, never sends here)
}

var convSources = []string{"typeform", "meta-leads", "generic", "twilio", "calendly"}

var callStatuses = []string{"queued", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled"}

// convSpec is one distinct event, independent of the run it is applied in.
type convSpec struct {
	Source string
	Minute int               // occurred_at = t0 + Minute (few values: ties are frequent)
	Fields map[string]string // proposed contact fields
	Status string            // twilio: the callback's call status
	Dur    int               // twilio: the callback's duration
}

// convRun names one run's person and keys.
type convRun struct {
	token string // inside every event key, the email domain and the CallSid
	email string
	phone string
}

func (r convRun) event(i int, s convSpec) *canonical.Event {
	at := t0.Add(time.Duration(s.Minute) * time.Minute)
	key := fmt.Sprintf("%s:%s-e%d", s.Source, r.token, i)
	ev := &canonical.Event{
		Key: key, Source: s.Source, Kind: canonical.KindLeadSubmitted, OccurredAt: at, ReceivedAt: at,
		GroupKey: "email:" + r.email, Subject: canonical.Person{Emails: []string{r.email}, Phones: []string{r.phone}},
		MappingVersion: s.Source + "/1",
	}
	if len(s.Fields) > 0 {
		ev.Fields = map[string]map[string]string{"contact": s.Fields}
	}
	switch s.Source {
	case "typeform", "meta-leads":
		ev.Activity = &canonical.Activity{ID: "form:" + key, Type: "form", Status: "submitted",
			Participants: []canonical.Participant{{Role: "from", Email: r.email}}}
	case "twilio":
		sid := "CA" + r.token
		ev.Kind = canonical.KindCallStatus
		ev.Activity = &canonical.Activity{ID: "call:" + sid, Type: "call", Status: s.Status, DurationSec: s.Dur,
			Direction: "inbound", Participants: []canonical.Participant{{Role: "caller", Phone: r.phone}}}
		ev.ExternalIDs = map[string]string{"call_sid": sid}
	}
	b, _ := json.Marshal(s)
	ev.PayloadHash = canonical.HashHex(key + string(b))
	return ev
}

func drawSpecs(t *rapid.T) []convSpec {
	n := rapid.IntRange(3, 8).Draw(t, "n")
	specs := make([]convSpec, n)
	for i := range specs {
		s := convSpec{Source: rapid.SampledFrom(convSources).Draw(t, "source"), Minute: rapid.IntRange(0, 3).Draw(t, "minute"),
			Fields: map[string]string{}}
		for _, f := range convFields {
			if !rapid.Bool().Draw(t, "has_"+f) {
				continue
			}
			v := rapid.SampledFrom([]string{"x", "y", "z"}).Draw(t, "val_"+f) // few values: same-value paths
			if f == "last_activity_at" {
				v = t0.Add(time.Duration(s.Minute) * time.Minute).Format(time.RFC3339)
			}
			s.Fields[f] = v
		}
		if s.Source == "twilio" {
			s.Status = rapid.SampledFrom(callStatuses).Draw(t, "status")
			if s.Status == "completed" {
				s.Dur = rapid.IntRange(1, 300).Draw(t, "duration")
			}
		} else if len(s.Fields) == 0 {
			// Only a call callback may come without contact fields (its activity then waits
			// unassociated until a contact appears); every other event proposes something.
			s.Fields["utm_source"] = "x"
		}
		specs[i] = s
	}
	if !hasFields(specs) {
		specs[0].Fields["campaign"] = "x"
	}
	return specs
}

func hasFields(specs []convSpec) bool {
	for _, s := range specs {
		if len(s.Fields) > 0 {
			return true
		}
	}
	return false
}

// drawDelivery draws a permutation of the n events with 0–4 duplicates inserted anywhere.
func drawDelivery(t *rapid.T, n int, label string) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	order := rapid.Permutation(idx).Draw(t, label+"_perm")
	for range rapid.IntRange(0, 4).Draw(t, label+"_dups") {
		d := rapid.IntRange(0, n-1).Draw(t, label+"_dup")
		at := rapid.IntRange(0, len(order)).Draw(t, label+"_dup_at")
		order = append(order[:at], append([]int{d}, order[at:]...)...)
	}
	return order
}

// convView is a contact as the property compares it, with run names replaced by placeholders.
type convView struct {
	Fields     string      // field values and provenance (JSON)
	Identities []string    // claimed identities
	AccountID  string      // no account fields are proposed: always ""
	Timeline   []string    // each activity with its associations (JSON), sorted
	Audit      []convAudit // the audit trail
}

// convAudit is one audit entry, event key and provenance normalised.
type convAudit struct {
	Field, EventKey, Decision string
	After                     string // JSON of the field after the event
}

func applyRun(t *rapid.T, w *Worker, specs []convSpec, order []int, r convRun) convView {
	ctx := context.Background()
	for _, i := range order {
		if _, err := w.Apply(ctx, r.event(i, specs[i])); err != nil {
			t.Fatalf("apply event %d of run %s: %v", i, r.token, err)
		}
	}
	v, err := w.GetContact(ctx, ContactQuery{Email: r.email})
	if err != nil {
		t.Fatalf("run %s: %v", r.token, err)
	}
	norm := strings.NewReplacer(r.token, "RUN", r.phone, "PHONE", v.Contact.ID, "CONTACT")
	js := func(x any) string {
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		return norm.Replace(string(b))
	}
	cv := convView{Fields: js(v.Contact.Fields), AccountID: v.Contact.AccountID}
	for _, id := range v.Contact.Identities {
		cv.Identities = append(cv.Identities, norm.Replace(id))
	}
	for _, e := range v.Timeline {
		cv.Timeline = append(cv.Timeline, js(e))
	}
	sort.Strings(cv.Timeline)
	for _, a := range v.Audit {
		cv.Audit = append(cv.Audit, convAudit{Field: a.Field, EventKey: norm.Replace(a.EventKey), Decision: a.Decision, After: js(a.After)})
	}
	return cv
}

// rapidChecks lowers rapid's default of 100 checks (each one is dozens of moto round trips),
// unless -rapid.checks or RAPID_CHECKS asks for a number.
func rapidChecks(t *testing.T, n int) {
	set := os.Getenv("RAPID_CHECKS") != ""
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "rapid.checks" })
	if set {
		return
	}
	old := flag.Lookup("rapid.checks").Value.String()
	if err := flag.Set("rapid.checks", strconv.Itoa(n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = flag.Set("rapid.checks", old) })
}

func TestConvergenceUnderPermutationsAndDuplicates(t *testing.T) {
	tb := provision(t)
	w := newWorker(t, tb, tb.ddb, newClock(t0.Add(time.Hour)))
	rapidChecks(t, 15)
	runs := 0
	rapid.Check(t, func(rt *rapid.T) {
		specs := drawSpecs(rt)
		orderA := drawDelivery(rt, len(specs), "a")
		orderB := drawDelivery(rt, len(specs), "b")
		mk := func() convRun {
			runs++
			tok := fmt.Sprintf("r%06d", runs)
			return convRun{token: tok, email: "pat@" + tok + ".example.com", phone: fmt.Sprintf("+1415%07d", 2000000+runs)}
		}
		a := applyRun(rt, w, specs, orderA, mk())
		b := applyRun(rt, w, specs, orderB, mk())
		if d := cmp.Diff(a.Fields, b.Fields); d != "" {
			rt.Fatalf("fields differ (-A +B):\n%s", d)
		}
		if d := cmp.Diff(a.Identities, b.Identities); d != "" || a.AccountID != b.AccountID {
			rt.Fatalf("identities/account differ (-A +B):\n%s %q %q", d, a.AccountID, b.AccountID)
		}
		if d := cmp.Diff(a.Timeline, b.Timeline); d != "" {
			rt.Fatalf("timeline differs (-A +B):\n%s", d)
		}
		for _, v := range []convView{a, b} {
			if d := cmp.Diff(auditExpectations(specs, v), auditSummary(specs, v)); d != "" {
				rt.Fatalf("audit trail breaks the order-independent guarantees (-want +got):\n%s\nA: %+v\nB: %+v", d, a.Audit, b.Audit)
			}
		}
	})
}

// Audit: what converges, and what cannot.
//
// The issue asks for identical audit counts, but the number of entries per field and decision
// is order-dependent by design (decide's documented semantics): noops are not audited, and a
// proposal equal to the current value is a noop when it loses but "applied" (provenance moves)
// when it wins. Found by this test: under latest, e0 proposes last_call_status=x at 09:00 and
// e2 the same x at 09:01; delivered e0, e2 both are applied (2 entries), delivered e2, e0 the
// second is a noop (1 entry). Likewise the split between applied and rejected depends on order
// even when every value differs (ascending times under latest: all applied; descending: one
// applied, the rest rejected). What the design does guarantee, in every order, and what is
// checked for each run against the drawn events:
//   - every entry is for a field its event proposed (non-blank), decided applied or rejected
//     (no locks here, so never blocked_by_lock), at most once per event and field, whatever the
//     duplicates;
//   - a proposal whose value no other event proposes for that field is audited exactly once
//     (its value always differs from the current one, so it can never be a noop) — with
//     pairwise distinct values, the count per field is therefore identical in every order;
//   - the event that ends as the field's provenance has an applied entry whose after-state is
//     the field's final value and provenance.

// convSummary is one field's audit as checked: entries of the proposals with a value of their
// own (each must have exactly one), the winner's entry, and any entry the design rules out.
type convSummary struct {
	Unique map[string]int // event key -> entries, for proposals with a value of their own
	Winner string         // the final provenance's event key and "applied", with its after-state
	Bad    []string       // entries the design rules out
}

func convKey(i int, s convSpec) string { return fmt.Sprintf("%s:RUN-e%d", s.Source, i) }

// valueCounts returns, per field, how many events propose each value.
func valueCounts(specs []convSpec) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, s := range specs {
		for f, v := range s.Fields {
			if out[f] == nil {
				out[f] = map[string]int{}
			}
			out[f][v]++
		}
	}
	return out
}

func auditExpectations(specs []convSpec, v convView) map[string]*convSummary {
	var fields map[string]json.RawMessage
	_ = json.Unmarshal([]byte(v.Fields), &fields)
	counts := valueCounts(specs)
	out := map[string]*convSummary{}
	for i, s := range specs {
		for f, val := range s.Fields {
			if out[f] == nil {
				out[f] = &convSummary{Unique: map[string]int{}}
			}
			if counts[f][val] == 1 {
				out[f].Unique[convKey(i, s)] = 1
			}
		}
	}
	for f, sum := range out {
		var fv struct {
			EventKey string `json:"event_key"`
		}
		_ = json.Unmarshal(fields[f], &fv)
		sum.Winner = fv.EventKey + " applied " + string(fields[f])
	}
	return out
}

func auditSummary(specs []convSpec, v convView) map[string]*convSummary {
	counts := valueCounts(specs)
	var fields map[string]json.RawMessage
	_ = json.Unmarshal([]byte(v.Fields), &fields)
	proposed := map[string]string{} // event key + field -> value
	for i, s := range specs {
		for f, val := range s.Fields {
			proposed[convKey(i, s)+" "+f] = val
		}
	}
	out := map[string]*convSummary{}
	seen := map[string]bool{}
	for _, a := range v.Audit {
		sum := out[a.Field]
		if sum == nil {
			sum = &convSummary{Unique: map[string]int{}}
			out[a.Field] = sum
		}
		val, ok := proposed[a.EventKey+" "+a.Field]
		switch {
		case !ok || val == "":
			sum.Bad = append(sum.Bad, "not proposed: "+a.EventKey+" "+a.Decision)
			continue
		case a.Decision != "applied" && a.Decision != "rejected":
			sum.Bad = append(sum.Bad, "decision: "+a.EventKey+" "+a.Decision)
		case seen[a.EventKey+" "+a.Field]:
			sum.Bad = append(sum.Bad, "audited twice: "+a.EventKey)
		}
		seen[a.EventKey+" "+a.Field] = true
		if counts[a.Field][val] == 1 {
			sum.Unique[a.EventKey]++
		}
		if a.Decision == "applied" && a.After == string(fields[a.Field]) {
			sum.Winner = a.EventKey + " applied " + a.After
		}
	}
	return out
}
