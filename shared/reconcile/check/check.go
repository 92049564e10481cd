// Package check owns the pure decisions of crmsync's reconciliation jobs (design section 7):
// whether a stored record differs from its recomputation from the ledger, whether a vendor item
// found by listing was delivered, the consistency checks on contacts and activities, the mapping
// review's tally, and the comparison of a run's measures with its SLAs. It performs no I/O and
// imports no AWS package: the job runner (shared/reconcile) reads the tables, the queues and the
// vendors, and hands the facts here.
package check

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// Kinds of finding.
const (
	// KindFieldDrift: a contact field's stored value (or lock) differs from its recomputation
	// from the ledger (parity a).
	KindFieldDrift = "field_drift"
	// KindMissingEvent: a vendor item listed in the window was never delivered (parity b).
	KindMissingEvent = "missing_event"
	// KindUnassociated: an activity still waits for a contact (consistency).
	KindUnassociated = "unassociated_activity"
	// KindReassociated: a waiting activity was moved under the contact that now owns one of its
	// identities (consistency, repaired).
	KindReassociated = "reassociated_activity"
	// KindNoAttribution: a contact has none of the policy's attribution fields (consistency).
	KindNoAttribution = "no_attribution"
	// KindSharedIdentity: a contact lists an identity whose claim belongs to another contact, or
	// to no one (consistency).
	KindSharedIdentity = "shared_identity"
	// KindDealAccountMismatch: an activity's deal belongs to another account than the
	// activity's (consistency).
	KindDealAccountMismatch = "deal_account_mismatch"
	// KindCallNotTerminal: a call without a terminal status long after it started (consistency).
	KindCallNotTerminal = "call_not_terminal"
	// KindUnmappedField: a vendor field events carried that no mapping uses (mapping-review).
	KindUnmappedField = "unmapped_field"
	// KindPolicyFieldUnseen: a policy field no event in the window proposed (mapping-review).
	KindPolicyFieldUnseen = "policy_field_never_seen"
	// KindVersions: the mapping and policy versions a connector's events used (mapping-review).
	KindVersions = "versions_in_use"
	// KindSourceError: a vendor could not be listed (parity b).
	KindSourceError = "source_error"
	// KindRejectedEvent: an event of the window was rejected (seen, never applied; parity c).
	KindRejectedEvent = "rejected_event"
	// KindFlaggedEvent: deliveries reused an event key with another payload (parity c).
	KindFlaggedEvent = "flagged_event"
	// KindJobOverdue: a job did not run within its interval plus grace (parity).
	KindJobOverdue = "job_overdue"
)

// Finding is one thing a job found, as stored under the run and shown by the CLI.
type Finding struct {
	// Kind is one of the Kind constants.
	Kind string `json:"kind" dynamodbav:"kind"`
	// Entity is what the finding is about: contact, activity, event, connector, policy.
	Entity string `json:"entity,omitempty" dynamodbav:"entity,omitempty"`
	// ID identifies it: a contact id, an activity id, an event key, a connector name.
	ID string `json:"id,omitempty" dynamodbav:"id,omitempty"`
	// Field is the field concerned, if any.
	Field string `json:"field,omitempty" dynamodbav:"field,omitempty"`
	// Stored is what the CRM holds.
	Stored string `json:"stored,omitempty" dynamodbav:"stored,omitempty"`
	// Expected is what reconciliation expected (the recomputed value, the other owner, ...).
	Expected string `json:"expected,omitempty" dynamodbav:"expected,omitempty"`
	// Source is the connector concerned, if any.
	Source string `json:"source,omitempty" dynamodbav:"source,omitempty"`
	// Count is how many times it was seen (mapping review), else 0.
	Count int `json:"count,omitempty" dynamodbav:"count,omitempty"`
	// Example is an event key showing it (mapping review).
	Example string `json:"example,omitempty" dynamodbav:"example,omitempty"`
	// Detail explains it.
	Detail string `json:"detail,omitempty" dynamodbav:"detail,omitempty"`
	// Repair says what was done about it, or the command that fixes it.
	Repair string `json:"repair,omitempty" dynamodbav:"repair,omitempty"`
}

// CompareFields returns one KindFieldDrift finding per field whose stored value or lock differs
// from its recomputation from the ledger (a field present on one side only counts). Provenance
// alone (which event wrote an equal value) is not drift. Findings are sorted by field.
func CompareFields(contactID string, stored, rebuilt map[string]store.Field) []Finding {
	names := map[string]bool{}
	for f := range stored {
		names[f] = true
	}
	for f := range rebuilt {
		names[f] = true
	}
	var out []Finding
	for f := range names {
		s, sok := stored[f]
		r, rok := rebuilt[f]
		if sok == rok && s.Value == r.Value && s.LockedBy == r.LockedBy {
			continue
		}
		d := Finding{Kind: KindFieldDrift, Entity: store.Contact, ID: contactID, Field: f, Stored: s.Value, Expected: r.Value,
			Repair: "crmsync rebuild --contact " + contactID}
		switch {
		case !rok:
			d.Detail = "stored, but no ledger event proposes it"
		case !sok:
			d.Detail = "the ledger's events set it, the record lacks it"
		case s.Value == r.Value:
			d.Detail = fmt.Sprintf("lock differs: stored %q, recomputed %q", s.LockedBy, r.LockedBy)
		default:
			d.Detail = fmt.Sprintf("stored by %s (%s), recomputed from %s (%s)", orNone(s.Source), orNone(s.EventKey), orNone(r.Source), orNone(r.EventKey))
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Equivalent reports whether a delivered event reports the same vendor fact as a listed one
// whose key differs: same source and kind, and the same activity in the same status (a Twilio
// call's terminal callback delivered with a SequenceNumber key, a Typeform response delivered
// under its event_id).
func Equivalent(listed, delivered *canonical.Event) bool {
	if listed == nil || delivered == nil || listed.Source != delivered.Source || listed.Kind != delivered.Kind {
		return false
	}
	if listed.Key == delivered.Key {
		return true
	}
	la, da := listed.Activity, delivered.Activity
	return la != nil && da != nil && la.ID != "" && la.ID == da.ID &&
		strings.EqualFold(strings.TrimSpace(la.Status), strings.TrimSpace(da.Status))
}

// MissingEvent is the finding for a listed vendor item that was never delivered.
func MissingEvent(ev *canonical.Event, repair string) Finding {
	act := ""
	if ev.Activity != nil {
		act = ev.Activity.ID
	}
	return Finding{Kind: KindMissingEvent, Entity: "event", ID: ev.Key, Source: ev.Source, Expected: act,
		Detail: "listed by the vendor in the window, absent from the ledger", Repair: repair}
}

// SharedIdentities returns a KindSharedIdentity finding for each identity the contact lists
// whose claim names another contact (owners maps identity to the claim's owner; "" or absent
// means unclaimed, which is reported too: the identity can be claimed by someone else).
func SharedIdentities(rec *store.Record, owners map[string]string) []Finding {
	var out []Finding
	for _, id := range rec.Identities {
		owner := owners[id]
		if owner == rec.ID {
			continue
		}
		f := Finding{Kind: KindSharedIdentity, Entity: store.Contact, ID: rec.ID, Field: id, Expected: owner,
			Repair: "crmsync contact get --id " + rec.ID + " and crmsync contact get --id " + owner + "; merge by hand (crmsync crm set)"}
		if owner == "" {
			f.Detail = "the contact lists the identity but no claim exists"
			f.Repair = "crmsync rebuild --contact " + rec.ID
		} else {
			f.Detail = "the identity is claimed by another contact"
		}
		out = append(out, f)
	}
	return out
}

// NoAttribution returns a KindNoAttribution finding when the contact has none of the
// attribution fields set.
func NoAttribution(rec *store.Record, fields []string) *Finding {
	if len(fields) == 0 {
		return nil
	}
	for _, f := range fields {
		if strings.TrimSpace(rec.Fields[f].Value) != "" {
			return nil
		}
	}
	return &Finding{Kind: KindNoAttribution, Entity: store.Contact, ID: rec.ID,
		Detail: "none of " + strings.Join(fields, ", ") + " is set", Repair: "crmsync explain --contact " + rec.ID + " --field lead_source"}
}

// AttributionFields returns the fields of the policy's contact groups ruled by first_touch (the
// attribution fields).
func AttributionFields(p *policy.Policy) []string {
	e, ok := p.Entity(store.Contact)
	if !ok {
		return nil
	}
	var out []string
	for _, g := range e.Groups {
		if g.Rule == policy.FirstTouch {
			out = append(out, g.Fields...)
		}
	}
	return out
}

// DealAccountMismatch returns a KindDealAccountMismatch finding when the activity is linked to
// a deal whose account (dealAccount, "" when the deal has none or is unknown) is not the
// activity's account.
func DealAccountMismatch(act *store.ActivityItem, dealAccount string) *Finding {
	if act.DealID == "" || dealAccount == "" || act.AccountID == "" || dealAccount == act.AccountID {
		return nil
	}
	return &Finding{Kind: KindDealAccountMismatch, Entity: "activity", ID: act.ActivityID, Field: "deal_id", Stored: act.DealID,
		Expected: "a deal of account " + act.AccountID, Detail: "deal " + act.DealID + " belongs to account " + dealAccount,
		Repair: "crmsync contact get --id " + act.ContactID + "; fix the deal link in the CRM (crmsync crm set)"}
}

// CallNotTerminal returns a KindCallNotTerminal finding for a call activity that began more
// than after before now and still has no terminal status.
func CallNotTerminal(act *store.ActivityItem, now time.Time, after time.Duration) *Finding {
	if act.Type != "call" || timeline.Terminal("call", act.Status) {
		return nil
	}
	began, err := store.ParseTime(act.OccurredAt)
	if err != nil || began.IsZero() || now.Sub(began) < after {
		return nil
	}
	return &Finding{Kind: KindCallNotTerminal, Entity: "activity", ID: act.ActivityID, Stored: act.Status, Source: "twilio",
		Detail: fmt.Sprintf("call began %s and has no terminal status after %s", act.OccurredAt, after),
		Repair: "crmsync backfill --source twilio --since " + began.Add(-time.Hour).Format(time.RFC3339)}
}

// DriftPercent is drifted as a percentage of checked (0 when nothing was checked), rounded to
// four decimals.
func DriftPercent(drifted, checked int) float64 {
	if checked <= 0 {
		return 0
	}
	return math.Round(float64(drifted)*100/float64(checked)*1e4) / 1e4
}

// Breaches returns the SLAs a run breached, sorted: each measure above its limit, as
// "measure=value>limit". Measures without a limit are not judged; a limit whose measure the
// run did not report counts as zero.
func Breaches(limits, measures map[string]float64) []string {
	var out []string
	for name, limit := range limits {
		if v := measures[name]; v > limit {
			out = append(out, fmt.Sprintf("%s=%g>%g", name, v, limit))
		}
	}
	sort.Strings(out)
	return out
}

// Overdue reports whether a job last run at last is overdue at now, given its interval and a
// grace period. A job that never ran (zero last) is measured from since, the earliest time it
// could have run (e.g. the first run of any job).
func Overdue(last, since, now time.Time, interval, grace time.Duration) bool {
	if last.IsZero() {
		last = since
	}
	if last.IsZero() {
		return false
	}
	return now.Sub(last) > interval+grace
}

// Review tallies the mapping review over the ledger items of a window. Add every item, then
// read Findings and Counts.
type Review struct {
	pol      *policy.Policy
	events   map[string]int            // source -> events
	unmapped map[string]map[string]int // source -> field path -> count
	example  map[string]map[string]string
	mappings map[string]map[string]int // source -> mapping version -> count
	policies map[string]map[string]int // source -> policy version -> count
	seen     map[string]map[string]bool
}

// NewReview starts a review against the policy whose fields should be seen.
func NewReview(p *policy.Policy) *Review {
	return &Review{pol: p, events: map[string]int{}, unmapped: map[string]map[string]int{}, example: map[string]map[string]string{},
		mappings: map[string]map[string]int{}, policies: map[string]map[string]int{}, seen: map[string]map[string]bool{}}
}

func bump(m map[string]map[string]int, a, b string) {
	if m[a] == nil {
		m[a] = map[string]int{}
	}
	m[a][b]++
}

// Add counts one ledger item: its source, mapping and policy versions, the vendor fields it
// left unmapped, and (from its stored event) the fields it proposed.
func (r *Review) Add(source, key, mappingVersion, policyVersion string, unmapped []string, fields map[string]map[string]string) {
	if source == "" {
		return
	}
	r.events[source]++
	if mappingVersion != "" {
		bump(r.mappings, source, mappingVersion)
	}
	if policyVersion != "" {
		bump(r.policies, source, policyVersion)
	}
	for _, u := range unmapped {
		bump(r.unmapped, source, u)
		if r.example[source] == nil {
			r.example[source] = map[string]string{}
		}
		if _, ok := r.example[source][u]; !ok {
			r.example[source][u] = key
		}
	}
	for entity, fs := range fields {
		if r.seen[entity] == nil {
			r.seen[entity] = map[string]bool{}
		}
		for f := range fs {
			r.seen[entity][f] = true
		}
	}
}

// Findings returns, sorted: one KindUnmappedField per connector and vendor field with its
// count and an example event key; one KindPolicyFieldUnseen per policy field no event proposed;
// one KindVersions per connector listing the mapping and policy versions its events used.
func (r *Review) Findings() []Finding {
	var out []Finding
	for _, src := range sortedKeys(r.unmapped) {
		for _, f := range sortedKeys(r.unmapped[src]) {
			out = append(out, Finding{Kind: KindUnmappedField, Entity: "connector", ID: src, Source: src, Field: f, Count: r.unmapped[src][f],
				Example: r.example[src][f], Detail: "vendor field carried by events but used by no mapping",
				Repair: "map it in shared/connector/" + strings.ReplaceAll(src, "-", "") + " (or list it as ignored), then crmsync quarantine release / replay as needed"})
		}
	}
	if r.pol != nil {
		for _, ent := range r.pol.Entities() {
			e, _ := r.pol.Entity(ent)
			for _, g := range e.Groups {
				for _, f := range g.Fields {
					if !r.seen[ent][f] {
						out = append(out, Finding{Kind: KindPolicyFieldUnseen, Entity: "policy", ID: ent + "." + g.Name, Field: f,
							Detail: "no event in the window proposed " + ent + "." + f})
					}
				}
			}
		}
	}
	for _, src := range sortedKeys(r.events) {
		out = append(out, Finding{Kind: KindVersions, Entity: "connector", ID: src, Source: src, Count: r.events[src],
			Stored: versions(r.mappings[src]), Expected: versions(r.policies[src]),
			Detail: "stored = mapping versions, expected = policy versions of the window's events"})
	}
	return out
}

// Counts returns the review's counts: events reviewed, distinct unmapped fields, policy fields
// never seen, connectors seen.
func (r *Review) Counts() map[string]int {
	c := map[string]int{"events_reviewed": 0, "unmapped_fields": 0, "policy_fields_never_seen": 0, "connectors_seen": len(r.events)}
	for _, n := range r.events {
		c["events_reviewed"] += n
	}
	for _, fs := range r.unmapped {
		c["unmapped_fields"] += len(fs)
	}
	for _, f := range r.Findings() {
		if f.Kind == KindPolicyFieldUnseen {
			c["policy_fields_never_seen"]++
		}
	}
	return c
}

func versions(m map[string]int) string {
	var parts []string
	for _, v := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s (%d)", v, m[v]))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
