package timeline

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/crmsync/crmsync/shared/canonical"
)

var t0 = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

func call(seq int, status string, dur int) *canonical.Event {
	return &canonical.Event{
		Key: fmt.Sprintf("twilio:call:CA1:%d", seq), Source: "twilio", Kind: canonical.KindCallStatus,
		OccurredAt: t0.Add(time.Duration(seq) * time.Second),
		Activity: &canonical.Activity{ID: "call:CA1", Type: "call", Status: status, DurationSec: dur,
			Direction: "inbound", Participants: []canonical.Participant{{Role: "caller", Phone: "+15551230000"}}},
	}
}

func mergeAll(evs ...*canonical.Event) Activity {
	var a *Activity
	for _, ev := range evs {
		m := Merge(a, ev)
		a = &m
	}
	return *a
}

func TestMerge(t *testing.T) {
	start := t0.Add(24 * time.Hour)
	meeting := func(key string, kind canonical.Kind, status string, at time.Duration, attrs map[string]string) *canonical.Event {
		return &canonical.Event{Key: key, Source: "calendly", Kind: kind, OccurredAt: t0.Add(at),
			Activity: &canonical.Activity{ID: "meeting:M1", Type: "meeting", Status: status, Subject: "Intro",
				StartAt: &start, Attrs: attrs}}
	}
	email := func(key, source string, kind canonical.Kind, status string, at time.Duration, attrs map[string]string) *canonical.Event {
		return &canonical.Event{Key: key, Source: source, Kind: kind, OccurredAt: t0.Add(at),
			Activity: &canonical.Activity{ID: "email:<m1@x>", Type: "email", Status: status, Subject: "Hello", Attrs: attrs}}
	}
	tests := []struct {
		name        string
		evs         []*canonical.Event
		status      string
		outcome     string
		dur         int
		canceled    bool
		entries     int
		checkAttrs  map[string]string
		checkSource []string
	}{
		{name: "call in order", evs: []*canonical.Event{call(1, "queued", 0), call(2, "ringing", 0), call(3, "in-progress", 0), call(4, "completed", 42)},
			status: "completed", outcome: "completed", dur: 42, entries: 4},
		{name: "call reverse order never regresses", evs: []*canonical.Event{call(4, "completed", 42), call(3, "in-progress", 0), call(2, "ringing", 0), call(1, "queued", 0)},
			status: "completed", outcome: "completed", dur: 42, entries: 4},
		{name: "non-terminal duration does not beat terminal", evs: []*canonical.Event{call(4, "completed", 42), call(5, "in-progress", 50)},
			status: "completed", outcome: "completed", dur: 42, entries: 2},
		{name: "busy is terminal", evs: []*canonical.Event{call(2, "busy", 0), call(1, "ringing", 0)},
			status: "busy", outcome: "busy", entries: 2},
		{name: "duplicate delivery is one entry", evs: []*canonical.Event{call(1, "ringing", 0), call(1, "ringing", 0)},
			status: "ringing", entries: 1},
		{name: "meeting cancel marks canceled", evs: []*canonical.Event{
			meeting("calendly:invitee.created:I1", canonical.KindMeetingScheduled, "scheduled", 0, nil),
			meeting("calendly:invitee.canceled:I1", canonical.KindMeetingCanceled, "canceled", time.Hour, map[string]string{"rescheduled": "true", "new_invitee": "I2"})},
			status: "canceled", outcome: "canceled", canceled: true, entries: 2, checkAttrs: map[string]string{"new_invitee": "I2", "rescheduled": "true"}},
		{name: "meeting cancel before create stays canceled", evs: []*canonical.Event{
			meeting("calendly:invitee.canceled:I1", canonical.KindMeetingCanceled, "canceled", time.Hour, nil),
			meeting("calendly:invitee.created:I1", canonical.KindMeetingScheduled, "scheduled", 0, nil)},
			status: "canceled", outcome: "canceled", canceled: true, entries: 2},
		{name: "same email in two mailboxes is one activity", evs: []*canonical.Event{
			email("msgraph:s1:created:m/1:e1", "msgraph", canonical.KindEmailSent, "", 0, map[string]string{"mailbox": "a@us.com"}),
			email("msgraph:s2:created:m/2:e2", "msgraph", canonical.KindEmailReceived, "", time.Second, map[string]string{"mailbox": "b@us.com"})},
			entries: 2, checkAttrs: map[string]string{"mailbox": "b@us.com"}, checkSource: []string{"msgraph"}},
		{name: "mailgun events attach and progress", evs: []*canonical.Event{
			email("mailgun:ev3", "mailgun", canonical.KindEmailEvent, "opened", 3*time.Minute, nil),
			email("msgraph:s1:created:m/1:e1", "msgraph", canonical.KindEmailSent, "", 0, nil),
			email("mailgun:ev2", "mailgun", canonical.KindEmailEvent, "delivered", time.Minute, nil)},
			status: "opened", entries: 3, checkSource: []string{"mailgun", "msgraph"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := mergeAll(tc.evs...)
			if a.Status != tc.status || a.Outcome != tc.outcome || a.DurationSec != tc.dur || a.Canceled != tc.canceled || len(a.Entries) != tc.entries {
				t.Errorf("got status=%q outcome=%q dur=%d canceled=%v entries=%d; want %q %q %d %v %d",
					a.Status, a.Outcome, a.DurationSec, a.Canceled, len(a.Entries), tc.status, tc.outcome, tc.dur, tc.canceled, tc.entries)
			}
			for k, v := range tc.checkAttrs {
				if a.Attrs[k] != v {
					t.Errorf("attr %s = %q, want %q", k, a.Attrs[k], v)
				}
			}
			if tc.checkSource != nil {
				if d := cmp.Diff(tc.checkSource, a.Sources); d != "" {
					t.Errorf("sources: %s", d)
				}
			}
		})
	}
}

func TestRescheduleLinks(t *testing.T) {
	ev := &canonical.Event{Key: "calendly:invitee.created:I2", Source: "calendly", Kind: canonical.KindMeetingScheduled, OccurredAt: t0,
		Activity: &canonical.Activity{ID: "meeting:M2", Type: "meeting", Status: "scheduled", RelatesTo: "invitee:I1"}}
	a, ok := FromEvent(ev)
	if !ok || len(a.RelatesTo) != 1 || a.RelatesTo[0] != "invitee:I1" {
		t.Fatalf("RelatesTo = %v", a.RelatesTo)
	}
	if _, ok := FromEvent(&canonical.Event{Key: "k"}); ok {
		t.Fatal("an event without activity made an activity")
	}
}

func TestMergeDoesNotModifyStored(t *testing.T) {
	a := mergeAll(call(1, "ringing", 0))
	before := clone(a)
	_ = Merge(&a, call(4, "completed", 10))
	if !Equal(a, before) {
		t.Fatal("Merge modified its input")
	}
}

// TestMergeOrderIndependent: any permutation of any set of updates of one activity, with random
// duplicates, merges to the same activity.
func TestMergeOrderIndependent(t *testing.T) {
	statuses := map[string][]string{
		"call":    {"", "queued", "ringing", "in-progress", "completed", "busy", "no-answer", "weird"},
		"email":   {"", "delivered", "opened", "clicked", "failed"},
		"meeting": {"scheduled", "canceled"},
	}
	rapid.Check(t, func(t *rapid.T) {
		typ := rapid.SampledFrom([]string{"call", "email", "meeting"}).Draw(t, "type")
		n := rapid.IntRange(1, 8).Draw(t, "n")
		var evs []*canonical.Event
		for i := range n {
			st := rapid.SampledFrom(statuses[typ]).Draw(t, "status")
			kind := canonical.KindCallStatus
			if typ == "meeting" && st == "canceled" {
				kind = canonical.KindMeetingCanceled
			}
			attrs := map[string]string{}
			if rapid.Bool().Draw(t, "attr") {
				attrs["a"] = rapid.SampledFrom([]string{"x", "y"}).Draw(t, "av")
			}
			evs = append(evs, &canonical.Event{
				Key: fmt.Sprintf("k%d-%d", rapid.IntRange(0, 3).Draw(t, "kp"), i), Source: rapid.SampledFrom([]string{"s1", "s2"}).Draw(t, "src"),
				Kind: kind, OccurredAt: t0.Add(time.Duration(rapid.IntRange(0, 3).Draw(t, "at")) * time.Minute),
				Activity: &canonical.Activity{ID: "x:1", Type: typ, Status: st,
					DurationSec: rapid.SampledFrom([]int{0, 0, 5, 9}).Draw(t, "dur"),
					Subject:     rapid.SampledFrom([]string{"", "s", "t"}).Draw(t, "subj"), Attrs: attrs,
					Participants: []canonical.Participant{{Role: "to", Email: rapid.SampledFrom([]string{"a@x.com", "b@x.com"}).Draw(t, "p")}}},
			})
		}
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, n-1), 0, 4).Draw(t, "dups") {
			evs = append(evs, evs[i])
		}
		want := mergeAll(evs...)
		perm := rapid.Permutation(evs).Draw(t, "perm")
		got := mergeAll(perm...)
		if !Equal(want, got) {
			t.Fatalf("order changed the result:\n%s", cmp.Diff(want, got))
		}
		if len(want.Entries) > n {
			t.Fatalf("%d entries for %d distinct events", len(want.Entries), n)
		}
	})
}
