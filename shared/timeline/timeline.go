// Package timeline owns how crmsync keeps one timeline entry per real-world interaction (design
// section 6): merging each event's view of an activity (a call status callback, a Calendly
// invitee change, an email seen in a mailbox, a Mailgun delivery event) into the stored activity.
//
// Merge is a join: commutative, associative and idempotent. Whatever order the updates of one
// activity arrive in, and however often each is delivered, the merged activity is the same:
//
//   - Status never regresses. Each activity type ranks its statuses (calls: queued < ringing <
//     in-progress < a terminal status, where completed, busy, failed, no-answer and canceled are
//     terminal; meetings: scheduled < canceled; emails: sent/received < accepted, temporary_fail <
//     delivered, failed < opened < clicked < unsubscribed, complained < permanent_fail, so a
//     temporary delivery failure never overrides a delivery and a permanent one is final). The
//     highest rank wins; equal ranks go to the later occurred_at, then the higher event key.
//   - A call's outcome is its terminal status; its duration comes from a terminal update (the
//     latest one that reports a duration), else from the latest update that reports one.
//   - A cancel marks a meeting canceled and never removes it; a reschedule is linked through
//     RelatesTo (the new activity names the old one) and the old one's attributes.
//   - Every update is kept as an Entry (key, source, status, time, attributes), so Mailgun
//     delivered/opened/clicked/failed events attach to the email activity by its id and stay
//     visible, and the same email seen in two mailboxes (two event keys, one internetMessageId)
//     is one activity with two entries. Only the newest MaxEntries entries (by time, then key)
//     are kept, and Truncated says older ones were dropped, so an activity stays small however
//     many updates it gets; the full history stays in the ledger.
//   - Other scalar fields (type, direction, subject, start, end, deal id, actor) and each
//     attribute take the latest non-empty value by (occurred_at, event key), except a
//     recipient's own status (RankedAttrPrefix), which ranks like the status; participants,
//     links and sources are unions.
//
// The package is pure: no I/O, no clock.
package timeline

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
)

// Stamp orders updates: the later occurred_at wins, then the higher event key.
type Stamp struct {
	// At is the update's occurred_at.
	At time.Time `json:"at"`
	// Key is the update's event key.
	Key string `json:"key"`
}

// After reports whether s outranks o (later time, then higher key).
func (s Stamp) After(o Stamp) bool {
	if c := s.At.Compare(o.At); c != 0 {
		return c > 0
	}
	return s.Key > o.Key
}

// Entry is one update of an activity as it was received, kept in the activity's history.
type Entry struct {
	// Key is the canonical event key of the update.
	Key string `json:"key"`
	// Source is the update's source (twilio, mailgun, msgraph, ...).
	Source string `json:"source"`
	// Kind is the canonical event kind.
	Kind canonical.Kind `json:"kind,omitempty"`
	// Status is the status the update reported, if any (e.g. ringing, delivered, opened).
	Status string `json:"status,omitempty"`
	// At is the update's occurred_at.
	At time.Time `json:"at"`
	// Attrs are the update's own activity attributes (e.g. a Mailgun failure reason).
	Attrs map[string]string `json:"attrs,omitempty"`
}

// Activity is one timeline entry as stored: the merge of every update about one interaction.
type Activity struct {
	// ID is the activity id (call:<CallSid>, email:<message-id>, meeting:<uri>, form:<id>).
	ID string `json:"id"`
	// Type is call, meeting, email, form or a generic type.
	Type string `json:"type,omitempty"`
	// Status is the highest-ranked status seen (never regresses).
	Status string `json:"status,omitempty"`
	// Outcome is the terminal status of a call, or "canceled" for a canceled meeting.
	Outcome string `json:"outcome,omitempty"`
	// Canceled is set once any update cancels the activity; canceled activities are kept.
	Canceled bool `json:"canceled,omitempty"`
	// Direction is inbound or outbound.
	Direction string `json:"direction,omitempty"`
	// Subject is the meeting name or email subject.
	Subject string `json:"subject,omitempty"`
	// StartAt and EndAt are the meeting's times, when known.
	StartAt *time.Time `json:"start_at,omitempty"`
	// EndAt is the meeting's end time, when known.
	EndAt *time.Time `json:"end_at,omitempty"`
	// DurationSec is the call's duration, from a terminal update when one reports it.
	DurationSec int `json:"duration_sec,omitempty"`
	// DealID is an explicit deal link carried by an update.
	DealID string `json:"deal_id,omitempty"`
	// Actor is the rep or system that acted (latest non-empty).
	Actor *canonical.Actor `json:"actor,omitempty"`
	// Participants is the union of every update's participants, sorted.
	Participants []canonical.Participant `json:"participants,omitempty"`
	// RelatesTo lists the activities or vendor objects this one updates or replaces (a
	// reschedule names the old invitee), sorted.
	RelatesTo []string `json:"relates_to,omitempty"`
	// Attrs holds vendor attributes, each the latest non-empty value.
	Attrs map[string]string `json:"attrs,omitempty"`
	// Sources lists every source that reported on the activity, sorted.
	Sources []string `json:"sources,omitempty"`
	// FirstAt and LastAt are the earliest and latest occurred_at of the updates.
	FirstAt time.Time `json:"first_at"`
	// LastAt is the latest occurred_at of the updates.
	LastAt time.Time `json:"last_at"`
	// Entries is the history of updates, sorted by time then key, one per event key.
	Entries []Entry `json:"entries,omitempty"`
	// Stamps records which update wrote each scalar field ("status", "duration", "subject",
	// "attr.<name>", ...), so later merges compare against the right update.
	Stamps map[string]Stamp `json:"stamps,omitempty"`
	// DurationTerminal is set when DurationSec came from a terminal update.
	DurationTerminal bool `json:"duration_terminal,omitempty"`
	// Truncated is set once the activity has had more than MaxEntries updates: Entries then
	// holds only the newest MaxEntries of them (the full history stays in the ledger).
	Truncated bool `json:"truncated,omitempty"`
}

// MaxEntries bounds Entries: an activity keeps the MaxEntries newest updates (by time, then
// key), so its stored item stays far below DynamoDB's 400 KB item limit however many updates
// it receives.
const MaxEntries = 100

// Call statuses that end a call.
var terminalCall = map[string]bool{"completed": true, "busy": true, "failed": true, "no-answer": true, "canceled": true}

// Status ranks per activity type; a status missing from its table ranks 0.
var ranks = map[string]map[string]int{
	"call": {"queued": 1, "initiated": 1, "ringing": 2, "in-progress": 3, "answered": 3,
		"completed": 4, "busy": 4, "failed": 4, "no-answer": 4, "canceled": 4},
	"meeting": {"scheduled": 1, "active": 1, "rescheduled": 2, "canceled": 3, "cancelled": 3},
	"email": {"sent": 1, "received": 1, "accepted": 2, "temporary_fail": 2, "delivered": 3, "failed": 3, "rejected": 3,
		"opened": 4, "clicked": 5, "unsubscribed": 6, "complained": 6, "permanent_fail": 7},
	"form": {"started": 1, "submitted": 2},
}

// Rank returns a status's rank for an activity type (0 when unranked).
func Rank(typ, status string) int { return ranks[typ][status] }

// Terminal reports whether status ends an activity of type typ (a finished call, a canceled
// meeting).
func Terminal(typ, status string) bool {
	switch typ {
	case "call":
		return terminalCall[status]
	case "meeting":
		return status == "canceled" || status == "cancelled"
	}
	return false
}

// FromEvent returns the activity an event reports, merged into nothing. ok is false when the
// event carries no activity.
func FromEvent(ev *canonical.Event) (Activity, bool) {
	if ev == nil || ev.Activity == nil || ev.Activity.ID == "" {
		return Activity{}, false
	}
	return Merge(nil, ev), true
}

// Merge returns stored merged with the event's activity; stored (which may be nil) is not
// modified. An event without an activity returns a copy of stored.
func Merge(stored *Activity, ev *canonical.Event) Activity {
	var out Activity
	if stored != nil {
		out = clone(*stored)
	}
	if ev == nil || ev.Activity == nil {
		return out
	}
	a := ev.Activity
	if out.ID == "" {
		out.ID = a.ID
	}
	if out.Stamps == nil {
		out.Stamps = map[string]Stamp{}
	}
	at := ev.OccurredAt.UTC()
	st := Stamp{At: at, Key: ev.Key}

	// History: one entry per event key.
	if !slices.ContainsFunc(out.Entries, func(e Entry) bool { return e.Key == ev.Key }) {
		out.Entries = append(out.Entries, Entry{Key: ev.Key, Source: ev.Source, Kind: ev.Kind,
			Status: norm(a.Status), At: at, Attrs: copyMap(a.Attrs)})
		sort.Slice(out.Entries, func(i, j int) bool {
			ei, ej := out.Entries[i], out.Entries[j]
			return Stamp{ei.At, ei.Key}.Before(Stamp{ej.At, ej.Key})
		})
		if over := len(out.Entries) - MaxEntries; over > 0 {
			// Keep the newest MaxEntries: the top MaxEntries of a set is the top MaxEntries of the
			// top MaxEntries of its parts, so the bound keeps Merge a join.
			out.Entries = slices.Delete(out.Entries, 0, over)
			out.Truncated = true
		}
	}
	if out.FirstAt.IsZero() || at.Before(out.FirstAt) {
		out.FirstAt = at
	}
	if at.After(out.LastAt) {
		out.LastAt = at
	}
	out.Sources = addSorted(out.Sources, ev.Source)

	// Scalars: latest non-empty by stamp.
	setStr(&out, "type", &out.Type, a.Type, st)
	setStr(&out, "direction", &out.Direction, a.Direction, st)
	setStr(&out, "subject", &out.Subject, a.Subject, st)
	setStr(&out, "deal_id", &out.DealID, a.DealID, st)
	setTime(&out, "start_at", &out.StartAt, a.StartAt, st)
	setTime(&out, "end_at", &out.EndAt, a.EndAt, st)
	if ev.Actor != nil && *ev.Actor != (canonical.Actor{}) && wins(out.Stamps, "actor", st) {
		act := *ev.Actor
		out.Actor = &act
		out.Stamps["actor"] = st
	}
	for _, k := range sortedKeys(a.Attrs) {
		v := a.Attrs[k]
		if v == "" || !attrWins(&out, k, v, st) {
			continue
		}
		if out.Attrs == nil {
			out.Attrs = map[string]string{}
		}
		out.Attrs[k] = v
		out.Stamps["attr."+k] = st
	}
	for _, p := range a.Participants {
		out.Participants = addParticipant(out.Participants, p)
	}
	if a.RelatesTo != "" {
		out.RelatesTo = addSorted(out.RelatesTo, a.RelatesTo)
	}

	// Status: highest rank, then latest.
	status := norm(a.Status)
	if ev.Kind == canonical.KindMeetingCanceled && status == "" {
		status = "canceled"
	}
	if status != "" {
		typ := out.Type
		cur, hasCur := out.Stamps["status"]
		r, rc := Rank(typ, status), Rank(typ, out.Status)
		if !hasCur || r > rc || (r == rc && st.After(cur)) {
			out.Status = status
			out.Stamps["status"] = st
		}
	}
	if ev.Kind == canonical.KindMeetingCanceled || (out.Type == "meeting" && Terminal(out.Type, status)) {
		out.Canceled = true
	}
	if Terminal(out.Type, out.Status) {
		out.Outcome = out.Status
	}

	// Duration: terminal updates first, then latest.
	if a.DurationSec > 0 {
		term := Terminal(out.Type, status)
		cur, has := out.Stamps["duration"]
		if !has || (term && !out.DurationTerminal) || (term == out.DurationTerminal && st.After(cur)) {
			out.DurationSec = a.DurationSec
			out.DurationTerminal = term
			out.Stamps["duration"] = st
		}
	}
	return out
}

// RankedAttrPrefix starts the attributes that hold one recipient's own status of a message
// (recipient_status.<email>, e.g. from Mailgun): like the activity's status they never regress —
// the higher rank wins, equal ranks go to the later update. Other attributes take the latest
// value.
const RankedAttrPrefix = "recipient_status."

// attrWins reports whether an update's value v of attribute k replaces the merged one.
func attrWins(out *Activity, k, v string, st Stamp) bool {
	cur := out.Attrs[k]
	if !strings.HasPrefix(k, RankedAttrPrefix) || cur == "" {
		return wins(out.Stamps, "attr."+k, st)
	}
	r, rc := Rank(out.Type, norm(v)), Rank(out.Type, norm(cur))
	return r > rc || (r == rc && wins(out.Stamps, "attr."+k, st))
}

// Before reports whether s sorts before o (earlier time, then lower key).
func (s Stamp) Before(o Stamp) bool { return o.After(s) }

// Equal reports whether two activities are the same (so a merge changed nothing).
func Equal(a, b Activity) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// Has reports whether the activity already merged the event with this key.
func (a *Activity) Has(key string) bool {
	return slices.ContainsFunc(a.Entries, func(e Entry) bool { return e.Key == key })
}

func norm(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

func wins(stamps map[string]Stamp, field string, st Stamp) bool {
	cur, ok := stamps[field]
	return !ok || st.After(cur)
}

func setStr(out *Activity, field string, dst *string, v string, st Stamp) {
	if v == "" || !wins(out.Stamps, field, st) {
		return
	}
	*dst = v
	out.Stamps[field] = st
}

func setTime(out *Activity, field string, dst **time.Time, v *time.Time, st Stamp) {
	if v == nil || v.IsZero() || !wins(out.Stamps, field, st) {
		return
	}
	t := v.UTC()
	*dst = &t
	out.Stamps[field] = st
}

func addSorted(list []string, v string) []string {
	if v == "" {
		return list
	}
	i, found := slices.BinarySearch(list, v)
	if found {
		return list
	}
	return slices.Insert(list, i, v)
}

func participantKey(p canonical.Participant) string {
	return p.Role + "\x00" + strings.ToLower(p.Email) + "\x00" + p.Phone + "\x00" + p.Name
}

func addParticipant(list []canonical.Participant, p canonical.Participant) []canonical.Participant {
	if p.Email == "" && p.Phone == "" && p.Name == "" {
		return list
	}
	k := participantKey(p)
	i, found := slices.BinarySearchFunc(list, k, func(e canonical.Participant, k string) int {
		return strings.Compare(participantKey(e), k)
	})
	if found {
		return list
	}
	return slices.Insert(list, i, p)
}

func sortedKeys(m map[string]string) []string {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	return keys
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

func clone(a Activity) Activity {
	out := a
	out.Participants = slices.Clone(a.Participants)
	out.RelatesTo = slices.Clone(a.RelatesTo)
	out.Sources = slices.Clone(a.Sources)
	out.Entries = slices.Clone(a.Entries)
	out.Attrs = maps.Clone(a.Attrs)
	out.Stamps = maps.Clone(a.Stamps)
	if a.StartAt != nil {
		t := *a.StartAt
		out.StartAt = &t
	}
	if a.EndAt != nil {
		t := *a.EndAt
		out.EndAt = &t
	}
	if a.Actor != nil {
		act := *a.Actor
		out.Actor = &act
	}
	return out
}
