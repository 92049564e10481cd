package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/dlq"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/shared/store"
)

func TestStatus(t *testing.T) {
	s := startStack(t, true)
	s.deliver("twilio")
	junk := s.signed("typeform", []byte(`{"event_id":"x","event_type":"form_response","form_response":7}`), "application/json")
	if status, _ := s.post(junk); status != 202 {
		t.Fatalf("junk = %d, want 202", status)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(s.mustCLI("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Local || st.Outcomes24h["twilio"]["APPLIED"] != 1 || st.Quarantined != 1 || st.DLQMessages != 0 {
		t.Errorf("status = %+v: want local, twilio APPLIED 1, 1 quarantined, empty DLQ", st)
	}
	if len(st.Alarms) == 0 {
		t.Errorf("status shows no alarm states")
	}
	for _, a := range st.Alarms {
		if !strings.HasPrefix(a.Runbook, "docs/runbooks/") {
			t.Errorf("alarm %s has runbook %q", a.Name, a.Runbook)
		}
	}
	if len(st.Jobs) != len(reconcile.Jobs) {
		t.Errorf("status jobs = %v, want every reconcile job", st.Jobs)
	}
	out := s.mustCLI("status")
	for _, want := range []string{"ingest queue:", "dead-letter queue: 0", "quarantined payloads: 1", "twilio", "APPLIED 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

// callEvents returns the canonical events of one call's status callbacks, in sequence order.
func callEvents(sid string, statuses ...string) []canonical.Event {
	base := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	var out []canonical.Event
	for i, st := range statuses {
		at := base.Add(time.Duration(i) * 10 * time.Second)
		ev := canonical.Event{Key: fmt.Sprintf("twilio:call:%s:%d", sid, i), Source: "twilio", Kind: canonical.KindCallStatus,
			OccurredAt: at, ReceivedAt: at, GroupKey: "phone:+14155550199", MappingVersion: "twilio/1",
			PayloadHash: canonical.HashHex(sid + st), Subject: canonical.Person{Phones: []string{"+14155550199"}},
			Fields:   map[string]map[string]string{"contact": {"phone": "+14155550199", "last_call_status": st}},
			Activity: &canonical.Activity{ID: "call:" + sid, Type: "call", Status: st, Direction: "inbound"}}
		if st == "completed" {
			ev.Activity.DurationSec = 42
		}
		out = append(out, ev)
	}
	return out
}

func TestDLQListAndRedriveKeepOrderAndApplyOnce(t *testing.T) {
	s := startStack(t, true)
	ctx := context.Background()
	client := sqs.NewFromConfig(s.AWS)
	dlqURL := s.Stack.Physical["IngestDLQ"].Ref
	evs := callEvents("CAdlq0000000000000000000000000001", "ringing", "in-progress", "completed")
	for _, ev := range evs {
		b, _ := ev.Marshal()
		if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(dlqURL), MessageBody: aws.String(string(b)),
			MessageGroupId: aws.String(ev.GroupID()), MessageDeduplicationId: aws.String(ev.DedupID())}); err != nil {
			t.Fatal(err)
		}
	}
	var listed []dlq.Message
	if err := json.Unmarshal([]byte(s.mustCLI("dlq", "list", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 || listed[0].Key != evs[0].Key || listed[0].GroupID != evs[0].GroupID() {
		t.Fatalf("dlq list = %+v, want the 3 callbacks in order with their group id", listed)
	}
	if out := s.mustCLI("dlq", "redrive", "--dry-run"); !strings.Contains(out, "nothing moved") {
		t.Errorf("dry run output: %s", out)
	}
	if err := json.Unmarshal([]byte(s.mustCLI("dlq", "list", "--json")), &listed); err != nil || len(listed) != 3 {
		t.Fatalf("after --dry-run the DLQ holds %d messages, want 3 (nothing moved)", len(listed))
	}
	for _, ev := range evs {
		if _, ok := s.ledgerOf(ev.Key); ok {
			t.Fatalf("%s applied after a dry run", ev.Key)
		}
	}
	var res dlq.Result
	if err := json.Unmarshal([]byte(s.mustCLI("dlq", "redrive", "--json")), &res); err != nil || res.Moved != 3 {
		t.Fatalf("redrive = %+v (%v), want 3 moved", res, err)
	}
	for _, ev := range evs {
		key := ev.Key
		s.eventually("redriven "+key+" applied", func() bool { e, ok := s.ledgerOf(key); return ok && e.Outcome == store.Applied })
	}
	// Applied once each, and in group order: the call ends at its terminal status.
	var v struct {
		Timeline []struct {
			Status      string `json:"status"`
			DurationSec int    `json:"duration_sec"`
		} `json:"timeline"`
		Audit []store.AuditItem `json:"audit"`
	}
	out := s.mustCLI("contact", "get", "--phone", "+14155550199", "--json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Timeline) != 1 || v.Timeline[0].Status != "completed" || v.Timeline[0].DurationSec != 42 {
		t.Errorf("timeline after redrive = %s, want one call ending completed", out)
	}
	seen := map[string]int{}
	for _, a := range v.Audit {
		seen[a.EventKey+"/"+a.Field]++
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("audit entry %s written %d times, want once", k, n)
		}
	}
	if err := json.Unmarshal([]byte(s.mustCLI("dlq", "list", "--json")), &listed); err != nil || len(listed) != 0 {
		t.Errorf("DLQ after redrive holds %d messages, want 0", len(listed))
	}
}

func TestReconcileCommand(t *testing.T) {
	s := startStack(t, true)
	s.deliver("typeform")
	var rep reconcile.Report
	if err := json.Unmarshal([]byte(s.mustCLI("reconcile", "consistency", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Job != "consistency" || rep.RunID == "" || rep.Counts == nil {
		t.Errorf("reconcile consistency --json = %+v", rep)
	}
	if _, err := s.cli("reconcile", "tidy-up"); err == nil {
		t.Errorf("an unknown job ran")
	}
	var st statusReport
	if err := json.Unmarshal([]byte(s.mustCLI("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Jobs["consistency"] == nil || st.Jobs["consistency"].LastRun != rep.RunID {
		t.Errorf("status does not show the consistency run %s: %+v", rep.RunID, st.Jobs["consistency"])
	}
}

func TestBackfillInterruptedThenResumedAppliesEachOnce(t *testing.T) {
	s := startStack(t, true)
	args := []string{"backfill", "--source", "twilio", "--since", "2025-03-01T00:00:00Z", "--until", "2025-04-01T00:00:00Z", "--json"}
	var first reconcile.BackfillResult
	if err := json.Unmarshal([]byte(s.mustCLI(append(args, "--max", "1")...)), &first); err != nil {
		t.Fatal(err)
	}
	if first.Listed != 2 || len(first.Enqueued) != 1 {
		t.Fatalf("interrupted run = %+v, want 2 listed and 1 enqueued", first)
	}
	s.eventually("first backfilled call applied", func() bool { e, ok := s.ledgerOf(first.Enqueued[0]); return ok && e.Outcome == store.Applied })
	var second reconcile.BackfillResult
	if err := json.Unmarshal([]byte(s.mustCLI(args...)), &second); err != nil {
		t.Fatal(err)
	}
	if len(second.Enqueued) != 1 || second.Enqueued[0] == first.Enqueued[0] || second.Delivered != 1 {
		t.Fatalf("resumed run = %+v, want only the other call", second)
	}
	s.eventually("second backfilled call applied", func() bool { e, ok := s.ledgerOf(second.Enqueued[0]); return ok && e.Outcome == store.Applied })
	var third reconcile.BackfillResult
	if err := json.Unmarshal([]byte(s.mustCLI(args...)), &third); err != nil {
		t.Fatal(err)
	}
	if len(third.Missing) != 0 || len(third.Enqueued) != 0 || third.Delivered != 2 {
		t.Errorf("a third run = %+v, want nothing left to backfill", third)
	}
	for _, k := range append(first.Enqueued, second.Enqueued...) {
		if e, _ := s.ledgerOf(k); len(e.Reruns) != 0 || e.Attempts != 1 {
			t.Errorf("%s: attempts %d, reruns %d: want applied exactly once", k, e.Attempts, len(e.Reruns))
		}
	}
}

// A listing of a FIFO DLQ sees only the first messages of a group (SQS hands out no further
// message of a group while one of it is in flight), so `dlq list` says how many it could not
// show rather than pass a partial list off as the whole; a redrive moves them all.
func TestDLQListSaysWhatAFIFOGroupHides(t *testing.T) {
	s := startStack(t, false)
	ctx := context.Background()
	client := sqs.NewFromConfig(s.AWS)
	dlqURL := s.Stack.Physical["IngestDLQ"].Ref
	var statuses []string
	for i := range 12 {
		statuses = append(statuses, fmt.Sprintf("ringing-%d", i))
	}
	for _, ev := range callEvents("CAdlq0000000000000000000000000012", statuses...) {
		b, _ := ev.Marshal()
		if _, err := client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(dlqURL), MessageBody: aws.String(string(b)),
			MessageGroupId: aws.String(ev.GroupID()), MessageDeduplicationId: aws.String(ev.DedupID())}); err != nil {
			t.Fatal(err)
		}
	}
	out := s.mustCLI("dlq", "list")
	if !strings.Contains(out, "of the 12 messages waiting") {
		t.Errorf("dlq list of 12 messages in one group:\n%s\nwant it to say how many it could not show", out)
	}
	var res dlq.Result
	if err := json.Unmarshal([]byte(s.mustCLI("dlq", "redrive", "--json")), &res); err != nil || res.Moved != 12 {
		t.Errorf("redrive = %d moved (%v), want all 12", res.Moved, err)
	}
}
