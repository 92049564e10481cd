package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/dlq"
	"github.com/crmsync/crmsync/shared/identity"
	"github.com/crmsync/crmsync/tools/loadgen"
	"github.com/crmsync/crmsync/tools/localcloud"
)

// A poison event can never apply until an operator fixes its cause: a thin event whose vendor
// object the vendor answers 503 for, every time (the worker fails it as transient on every
// receive). The run enqueues each straight to the queue, as the webhook would have, but in its
// person's live FIFO group (the group its hydrated form belongs to, which the person's other
// events share), so it holds those events back until SQS dead-letters it after maxReceiveCount
// receives. Once the queue has drained, the run fixes the vendor object and redrives the
// dead-letter queue with shared/dlq (what `crmsync dlq redrive` runs), faults still on; each
// poison event must then apply exactly once.
type poisoned struct {
	d       *loadgen.Delivery
	group   string // the live group key it was enqueued in
	fixture []byte // the vendor object's real answer, restored by the fix
}

// poisonAnswers are the vendors' documented answers for a temporary outage, by fixture prefix.
var poisonAnswers = map[string]string{
	"msgraph/":    `{"error":{"code":"serviceNotAvailable","message":"The service is temporarily unavailable.","innerError":{"request-id":"00000000-0000-0000-0000-000000000000"}}}`,
	"meta-graph/": `{"error":{"message":"An unexpected error has occurred. Please retry your request later.","type":"OAuthException","is_transient":true,"code":2,"fbtrace_id":"AbCdEfGh"}}`,
}

// choosePoison picks n thin deliveries of distinct people who have events of other connectors
// after them (their group is live), and takes them and their duplicates out of the schedule.
func choosePoison(plan *loadgen.Plan, n int, seed uint64) []*poisoned {
	if n <= 0 {
		return nil
	}
	fixtures := map[string][]byte{}
	for _, f := range plan.Fixtures {
		fixtures[f.Path] = f.Body
	}
	later := map[string]int{} // person -> events after the candidate
	var candidates []*loadgen.Delivery
	for i := len(plan.Unique) - 1; i >= 0; i-- {
		d := plan.Unique[i]
		if d.Fixture != "" && later[d.Event.Person] > 0 && len(d.Event.Emails) > 0 {
			candidates = append(candidates, d)
		}
		if d.Fixture == "" {
			later[d.Event.Person]++
		}
	}
	rnd := rand.New(rand.NewPCG(seed, 0x9015))
	rnd.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	var out []*poisoned
	people := map[string]bool{}
	for _, d := range candidates {
		if len(out) == n {
			break
		}
		if people[d.Event.Person] {
			continue
		}
		people[d.Event.Person] = true
		out = append(out, &poisoned{d: d, fixture: fixtures[d.Fixture],
			group: identity.GroupKey(d.Event.Emails, d.Event.Phones, d.Connector, d.Event.Key)})
	}
	keys := map[string]bool{}
	for _, p := range out {
		keys[p.d.Event.Key] = true
	}
	schedule := plan.Schedule[:0:0]
	plan.Duplicates, plan.Late = 0, 0
	for _, s := range plan.Schedule {
		if keys[s.Delivery.Event.Key] {
			continue
		}
		schedule = append(schedule, s)
		if s.Dup {
			plan.Duplicates++
		}
		if s.Late {
			plan.Late++
		}
	}
	plan.Schedule = schedule
	return out
}

// injectPoison makes each poison event's vendor object answer 503 and enqueues the event, as its
// connector parses the signed delivery, in its person's live group. It returns when they were
// enqueued.
func (h *harness) injectPoison(ctx context.Context, poison []*poisoned) (time.Time, error) {
	for _, p := range poison {
		prefix, _, _ := strings.Cut(p.d.Fixture, "/")
		if err := putFake(ctx, h.base, p.d.Fixture, []byte(poisonAnswers[prefix+"/"]), http.StatusServiceUnavailable); err != nil {
			return time.Time{}, err
		}
	}
	rnd := rand.New(rand.NewPCG(h.o.Seed, 0x9016))
	for _, p := range poison {
		req, err := loadgen.Sign(p.d, h.base, h.secrets[p.d.Connector], time.Now(), rnd)
		if err != nil {
			return time.Time{}, err
		}
		group := canonical.HashHex(p.group)
		if _, err := enqueueParsed(ctx, h.queue, h.queueURL, p.d.Connector, req, h.secrets[p.d.Connector], time.Now(),
			func(ev *canonical.Event) string { return ev.DedupID() }, func(*canonical.Event) string { return group }); err != nil {
			return time.Time{}, fmt.Errorf("enqueue poison %s: %w", p.d.Event.Key, err)
		}
	}
	return time.Now(), nil
}

// redriveResult is what fixing the poison and redriving the dead-letter queue did.
type redriveResult struct {
	moved map[string]int // event key -> messages moved back to the ingest queue
	runs  int            // Redrive calls (a call stopped by a fault is run again, as an operator would)
	err   error
}

// fixAndRedrive restores each poison event's vendor object, then redrives the dead-letter queue
// into the ingest queue through the fault proxy (faults on) until the queue is empty, and waits
// for the ingest queue to drain.
func (h *harness) fixAndRedrive(ctx context.Context, poison []*poisoned) redriveResult {
	res := redriveResult{moved: map[string]int{}}
	if len(poison) == 0 {
		return res
	}
	for _, p := range poison {
		if err := putFake(ctx, h.base, p.d.Fixture, p.fixture, 0); err != nil {
			res.err = err
			return res
		}
	}
	cfg, err := awsclient.Load(ctx, h.proxyURL)
	if err != nil {
		res.err = err
		return res
	}
	client := sqs.NewFromConfig(cfg)
	dlqURL := h.dev.Stack.Physical["IngestDLQ"].Ref
	for res.runs < 20 {
		res.runs++
		out, err := dlq.Redrive(ctx, client, dlqURL, h.queueURL, dlq.Options{Hold: 10 * time.Second})
		for _, m := range out.Messages {
			res.moved[m.Key]++
		}
		if res.err = err; err == nil {
			break
		}
		fmt.Fprintf(h.o.Log, "redrive run %d stopped: %v; running it again\n", res.runs, err)
		time.Sleep(2 * time.Second)
	}
	fmt.Fprintf(h.o.Log, "redrove %d dead-lettered messages in %d runs; waiting for the queue to drain\n", len(res.moved), res.runs)
	waitDrained(ctx, h.queue, h.queueURL, h.o.DrainTimeout, h.o.Log, h.o.ProgressEvery)
	return res
}

// putFake sets what the vendor fake answers at path: body with status (0: the fixture's 200).
func putFake(ctx context.Context, base, path string, body []byte, status int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/_vendor/"+path, strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	if status != 0 {
		req.Header.Set(localcloud.FakeStatusHeader, strconv.Itoa(status))
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("vendor fake %s: %w", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("vendor fake %s: %s", path, resp.Status)
	}
	return nil
}

// judgePoison adds the poison events' verdict: each found in the dead-letter queue by the
// redrive and applied exactly once after it, nothing else dead-lettered, and how long the
// poisoned groups' other events waited beside the documented bound.
func judgePoison(v *Verdict, poison []*poisoned, redrive redriveResult, stats *loadgen.Stats, st *state, obs *observer, bound time.Duration) {
	v.Poison, v.RedriveRuns, v.PoisonBound = len(poison), redrive.runs, bound
	finding := func(format string, args ...any) {
		if len(v.Findings) < 60 {
			v.Findings = append(v.Findings, fmt.Sprintf(format, args...))
		}
	}
	if redrive.err != nil {
		finding("redrive: %v", redrive.err)
	}
	commits := obs.commitCounts()
	keys, groups := map[string]bool{}, map[string]bool{}
	for _, p := range poison {
		k := p.d.Event.Key
		keys[k], groups[p.group] = true, true
		if redrive.moved[k] > 0 {
			v.PoisonDeadLettered++
		} else {
			finding("poison %s was not in the dead-letter queue", k)
		}
		if st.ledger[k] == "APPLIED" && commits[k] == 1 {
			v.PoisonApplied++
		} else {
			finding("poison %s after the redrive: outcome %q, %d commits", k, st.ledger[k], commits[k])
		}
	}
	for k := range redrive.moved {
		switch {
		case keys[k]:
		case groups[st.groups[k]]:
			// Behind a poison message in its FIFO group: every receive of the poison also
			// received it and the worker returned it unprocessed (order), so its receives ran
			// out too. Known; reported, and it must apply exactly once after the redrive.
			v.DraggedDeadLetters++
			if st.ledger[k] != "APPLIED" || commits[k] != 1 {
				v.UnexpectedDeadLetters++
				finding("dragged into the DLQ behind a poison message and not applied once after the redrive: %s (%q, %d commits)", k, st.ledger[k], commits[k])
			}
		default:
			v.UnexpectedDeadLetters++
			finding("dead-lettered though it could apply: %s", k)
		}
	}
	for k, group := range st.groups {
		at, ok := stats.AcceptedAt[k]
		recorded, err := time.Parse(time.RFC3339Nano, st.recorded[k])
		if keys[k] || !ok || err != nil {
			continue
		}
		wait := &v.OtherGroupWait
		if groups[group] {
			wait = &v.PoisonGroupWait
		}
		*wait = max(*wait, recorded.Sub(at))
	}
}
