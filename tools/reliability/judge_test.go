package reliability

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/awsproxy"
	"github.com/crmsync/crmsync/tools/loadgen"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/oracle"
)

// judged is a small run's evidence, built by hand: three events, each accepted by its webhook,
// enqueued, applied once, seen by the observer — a run that passes. Each judging test breaks one
// piece of it the way a real hole would.
type judged struct {
	plan  *loadgen.Plan
	stats *loadgen.Stats
	st    *state
	obs   *observer
	rules []awsproxy.Rule
	c     counted
}

func newJudged() *judged {
	j := &judged{plan: &loadgen.Plan{BySource: map[string]int{}},
		stats: &loadgen.Stats{Statuses: map[string]int{}, Accepted: map[string]bool{}, Enqueued: map[string]bool{},
			Quarantined: map[string]bool{}, GaveUp: map[string]bool{}, Refused: map[string]string{}},
		st: newState(), obs: newObserver(),
		c: counted{requests: map[string]int{}, faults: map[string]int{}, faultsByAPI: map[string]int{},
			natural: map[string]int{"dynamodb.TransactWriteItems": 3}}}
	j.obs.table = "ledger"
	for i, key := range []string{"twilio:CA1:1", "twilio:CA2:1", "twilio:CA3:1"} {
		// No contact fields, identities or activity: the oracle expects nothing of the CRM, so
		// only the judging itself decides the verdict.
		j.plan.Unique = append(j.plan.Unique, &loadgen.Delivery{Connector: "twilio",
			Event: oracle.Event{Key: key, Source: "twilio", Person: fmt.Sprintf("p%d", i)}})
		j.plan.Schedule = append(j.plan.Schedule, loadgen.Send{Delivery: j.plan.Unique[i]})
		j.stats.Accepted[key] = true
		j.stats.Statuses["200"]++
		j.obs.observe(sendExchange(key))
		j.obs.observe(ledgerTransaction("tok-"+key, key))
		j.st.ledger[key] = "APPLIED"
		j.st.outcomes["APPLIED"]++
	}
	return j
}

func (j *judged) verdict() *Verdict {
	v := judge(Options{Events: 3, People: 3}, j.rules, j.plan, j.stats, j.st, j.obs, j.c)
	v.Drained = true
	return v
}

// sendExchange is a webhook's SendMessageBatch of one event, accepted by the queue.
func sendExchange(key string) awsproxy.Exchange {
	body := fmt.Sprintf(`{"QueueUrl":"q","Entries":[{"Id":"0","MessageBody":%q,"MessageGroupId":"g","MessageDeduplicationId":"d"}]}`,
		fmt.Sprintf(`{"key":%q}`, key))
	return awsproxy.Exchange{API: "sqs.SendMessageBatch", Status: 200, Request: []byte(body),
		Response: []byte(`{"Successful":[{"Id":"0","MessageId":"m"}],"Failed":[]}`)}
}

// ledgerTransaction is a committed TransactWriteItems whose first item puts key's ledger item.
func ledgerTransaction(token, key string) awsproxy.Exchange {
	body := fmt.Sprintf(`{"ClientRequestToken":%q,"TransactItems":[{"Put":{"TableName":"ledger","Item":{"pk":{"S":%q}}}},`+
		`{"Put":{"TableName":"crm","Item":{"pk":{"S":"CONTACT#c1"}}}}]}`, token, key)
	return awsproxy.Exchange{API: "dynamodb.TransactWriteItems", Status: 200, Request: []byte(body)}
}

func TestJudgeBaselinePasses(t *testing.T) {
	if v := newJudged().verdict(); !v.Pass() {
		t.Fatalf("the untouched evidence fails: %s\n%v", v.Summary(), v.Findings)
	}
}

// Each judging hole of issue 16, seeded into otherwise passing evidence: the verdict must fail,
// and name the hole.
func TestJudgeFailsOnEachHole(t *testing.T) {
	const k = "twilio:CA2:1"
	tests := []struct {
		name  string
		seed  func(j *judged)
		count func(v *Verdict) int
	}{
		{"a webhook answers 2xx but never enqueues; a late re-send gets the event in", func(j *judged) {
			j.obs = newObserver()
			j.obs.table = "ledger"
			for _, d := range j.plan.Unique {
				if d.Event.Key != k {
					j.obs.observe(sendExchange(d.Event.Key))
				}
				j.obs.observe(ledgerTransaction("tok-"+d.Event.Key, d.Event.Key))
			}
			j.stats.Enqueued[k] = true
		}, func(v *Verdict) int { return v.Dropped }},
		{"a webhook refuses an authentic delivery; a late re-send gets the event in", func(j *judged) {
			delete(j.stats.Accepted, k)
			j.stats.Refused[k] = "401 signature mismatch"
			j.stats.Enqueued[k] = true
		}, func(v *Verdict) int { return v.Refused }},
		{"the vendor gives up on a delivery; a late re-send gets the event in", func(j *judged) {
			delete(j.stats.Accepted, k)
			j.stats.GaveUp[k] = true
			j.stats.Enqueued[k] = true
		}, func(v *Verdict) int { return v.GaveUp }},
		{"a webhook quarantines an authentic delivery", func(j *judged) {
			delete(j.stats.Accepted, k)
			j.stats.Quarantined[k] = true
			j.st.ledger[k] = "QUARANTINED"
		}, func(v *Verdict) int { return v.QuarantinedAuthentic }},
		{"the worker rejects a valid event", func(j *judged) {
			j.st.ledger[k] = "REJECTED"
			j.st.reasons[k] = "invalid"
		}, func(v *Verdict) int { return v.RejectedValid }},
		{"an accepted event is dead-lettered", func(j *judged) {
			delete(j.st.ledger, k)
			delete(j.obs.commits, k)
			j.st.dlq[k] = true
		}, func(v *Verdict) int { return v.DeadLettered }},
		{"the observer is blind to a ledger write", func(j *judged) {
			delete(j.obs.commits, k)
		}, func(v *Verdict) int { return v.ObserverMissed }},
		{"the observer sees a commit the ledger does not hold", func(j *judged) {
			j.obs.observe(ledgerTransaction("tok-x", "twilio:CA9:1"))
		}, func(v *Verdict) int { return v.ObserverExtra }},
		{"an event applied twice", func(j *judged) {
			j.obs.observe(ledgerTransaction("tok-again", k))
		}, func(v *Verdict) int { return v.DuplicateLedgerWrites }},
		{"after-phase conflicts on TransactWriteItems were configured but never injected", func(j *judged) {
			j.rules = []awsproxy.Rule{{Kind: awsproxy.Conflict, Phase: awsproxy.After, Rate: 0.1}}
			j.c.requests["dynamodb.TransactWriteItems"] = 1000
		}, func(v *Verdict) int { return v.FaultsShort }},
		{"worker crashes were configured but never happened", func(j *judged) {
			j.c.invocations = 500
		}, func(v *Verdict) int { return v.FaultsShort }},
		{"indexes were to lag, yet no Query saw a lagged index", func(j *judged) {},
			func(v *Verdict) int { return 1 - min(1, len(v.LaggedReads)) }},
		{"overlapping writes were to conflict, yet no transaction met another", func(j *judged) {
			j.c.natural = map[string]int{"dynamodb.PutItem": 1}
		}, func(v *Verdict) int { return 1 - min(1, v.NaturalConflicts["dynamodb.TransactWriteItems"]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := newJudged()
			tt.seed(j)
			o := Options{Events: 3, People: 3}
			if strings.Contains(tt.name, "crashes") {
				o.CrashRate = 0.05
			}
			if strings.Contains(tt.name, "indexes were to lag") {
				o.IndexLag = 300 * time.Millisecond
			}
			v := judge(o, j.rules, j.plan, j.stats, j.st, j.obs, j.c)
			v.Drained = true
			if got := tt.count(v); got != 1 {
				t.Errorf("hole counted %d times, want 1 (%s; findings %v)", got, v.Summary(), v.Findings)
			}
			if v.Pass() {
				t.Errorf("verdict passes with the hole seeded: %s", v.Summary())
			}
		})
	}
}

// The proxy faults at the rules' rates: a check passes at its minimum and the table shows it.
func TestFaultChecksAssertMinimums(t *testing.T) {
	rules := []awsproxy.Rule{{Kind: awsproxy.Conflict, Phase: awsproxy.Before, Rate: 0.05}, {Kind: awsproxy.Throttle, Phase: awsproxy.After, Rate: 0.01}}
	requests := map[string]int{"dynamodb.TransactWriteItems": 1000, "dynamodb.GetItem": 500, "moto.reset": 50}
	checks := faultChecks(rules, requests, map[string]int{awsproxy.FaultKey(awsproxy.Conflict, awsproxy.Before, "dynamodb.TransactWriteItems"): 16}, 0, 0, 0)
	got := map[string]FaultCheck{}
	for _, c := range checks {
		got[c.Fault+" "+c.API] = c
	}
	conflict := got["conflict/before dynamodb.TransactWriteItems"]
	if conflict.Min != 16 || conflict.Got != 16 {
		t.Errorf("conflict check = %+v, want expected 50, minimum 16, got 16", conflict)
	}
	// The throttle rule comes second: on TransactWriteItems it only draws when the conflict missed.
	if c := got["throttle/after dynamodb.TransactWriteItems"]; c.Expected < 9.4 || c.Expected > 9.6 || c.Min != 0 {
		t.Errorf("throttle on TransactWriteItems = %+v, want 9.5 expected and no minimum", c)
	}
	if c := got["throttle/after dynamodb.GetItem"]; c.Expected != 5 {
		t.Errorf("throttle on GetItem = %+v, want 5 expected", c)
	}
	if _, ok := got["conflict/before dynamodb.GetItem"]; ok {
		t.Errorf("a conflict check on GetItem: conflicts only fault TransactWriteItems")
	}
	for key := range got {
		if strings.Contains(key, "moto.") {
			t.Errorf("check %q: the emulator's control API is never faulted", key)
		}
	}
}

// The observer counts a ledger Put wherever it sits in a transaction: "applied twice" must not
// rest on the worker putting the ledger item first.
func TestObserverFindsTheLedgerPutAnywhere(t *testing.T) {
	o := newObserver()
	o.table = "ledger"
	o.observe(awsproxy.Exchange{API: "dynamodb.TransactWriteItems", Status: 200, Request: []byte(
		`{"TransactItems":[{"Put":{"TableName":"crm","Item":{"pk":{"S":"CONTACT#c1"}}}},{"Put":{"TableName":"ledger","Item":{"pk":{"S":"k"}}}}]}`)})
	if got := o.commitCounts()["k"]; got != 1 {
		t.Errorf("commits of k = %d, want 1", got)
	}
	o.observe(sendExchange("k"))
	o.observe(awsproxy.Exchange{API: "sqs.SendMessageBatch", Status: 200, Request: sendExchange("k2").Request,
		Response: []byte(`{"Successful":[],"Failed":[{"Id":"0","Code":"InternalError","SenderFault":false}]}`)})
	if got, want := [2]int{o.enqueuedCount("k"), o.enqueuedCount("k2")}, [2]int{1, 0}; got != want {
		t.Errorf("enqueued (k, k2) = %v, want %v: an entry the queue answered as failed is not enqueued", got, want)
	}
}

// The dead-letter queue is read once, whole: issue 16's hole read it twice with a visibility
// timeout, so the second read saw it empty, and each read stopped at the messages SQS hands out
// while earlier ones of their FIFO group are in flight (ten of these twelve).
func TestReadDLQReadsEveryMessage(t *testing.T) {
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	client := sqs.NewFromConfig(cfg)
	created, err := client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(fmt.Sprintf("dlq%d.fifo", time.Now().UnixNano()%1e9)),
		Attributes: map[string]string{"FifoQueue": "true", "ContentBasedDeduplication": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: created.QueueUrl, MessageGroupId: aws.String(fmt.Sprint(i % 3)),
			MessageBody: aws.String(fmt.Sprintf(`{"key":"twilio:CA%d:1"}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := readDLQ(ctx, client, aws.ToString(created.QueueUrl))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 12 {
		t.Errorf("%d dead-lettered keys read, want all 12: %v", len(keys), keys)
	}
}

// The poison verdict: each poison event found in the dead-letter queue by the redrive and
// applied exactly once after it; an event dead-lettered that could apply fails the run.
func TestJudgePoison(t *testing.T) {
	const k = "twilio:CA2:1"
	tests := []struct {
		name string
		seed func(j *judged, r *redriveResult)
		pass bool
	}{
		{"dead-lettered, redriven, applied once", func(j *judged, r *redriveResult) {}, true},
		{"never reached the dead-letter queue", func(j *judged, r *redriveResult) { delete(r.moved, k) }, false},
		{"applied twice after the redrive", func(j *judged, r *redriveResult) { j.obs.observe(ledgerTransaction("tok-again", k)) }, false},
		{"still failing after the redrive", func(j *judged, r *redriveResult) { delete(j.st.ledger, k); delete(j.obs.commits, k) }, false},
		{"another event dead-lettered", func(j *judged, r *redriveResult) { r.moved["twilio:CA3:1"] = 1 }, false},
		{"a later event of the poisoned group dragged along, applied once after", func(j *judged, r *redriveResult) {
			r.moved["twilio:CA3:1"], j.st.groups["twilio:CA3:1"] = 1, "email:p1@example.com"
		}, true},
		{"a later event of the poisoned group dragged along, lost after", func(j *judged, r *redriveResult) {
			r.moved["twilio:CA3:1"], j.st.groups["twilio:CA3:1"] = 1, "email:p1@example.com"
			delete(j.st.ledger, "twilio:CA3:1")
			delete(j.obs.commits, "twilio:CA3:1")
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := newJudged()
			poison := []*poisoned{{d: j.plan.Unique[1], group: "email:p1@example.com"}}
			r := redriveResult{moved: map[string]int{k: 1}, runs: 1}
			tt.seed(j, &r)
			v := j.verdict()
			judgePoison(v, poison, r, j.stats, j.st, j.obs, time.Minute)
			if got := v.Pass(); got != tt.pass {
				t.Errorf("Pass() = %v, want %v (%s; findings %v)", got, tt.pass, v.Summary(), v.Findings)
			}
		})
	}
}

// The seeds table gets one row per seed, and a failing seed is marked; writing it again replaces
// the section rather than adding to it.
func TestUpdateSeedsDoc(t *testing.T) {
	path := t.TempDir() + "/reliability.md"
	if err := os.WriteFile(path, []byte("# R\n\n"+SeedsDocBegin+"\n\nold\n\n"+SeedsDocEnd+"\n\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pass, fail := newJudged().verdict(), newJudged().verdict()
	pass.Seed, fail.Seed, fail.Lost = 1, 2, 1
	for range 2 {
		if err := UpdateSeedsDoc(path, []*Verdict{pass, fail}, time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{"**1 of 2 seeds pass**", "| 1 | PASS | 0 |", "| 2 | **FAIL** | 1 |", "\nafter\n"} {
		if !strings.Contains(doc, want) {
			t.Errorf("seeds section lacks %q:\n%s", want, doc)
		}
	}
	if strings.Contains(doc, "old") || strings.Count(doc, SeedsDocBegin) != 1 {
		t.Errorf("section not replaced:\n%s", doc)
	}
}
