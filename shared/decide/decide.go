// Package decide owns crmsync's field-level conflict decision: given a record's current
// per-field provenance, one event's proposed values for one entity, and the policy, it says for
// every proposed field whether the value is applied, rejected, blocked by a lock or a no-op, under
// which rule and why (design section 5). It is pure — no I/O, no clock, no randomness — so the
// worker, replay, rebuild and `crmsync explain` all get the same answer for the same inputs.
//
// Semantics, beyond the rules documented on policy.Rule:
//
//   - Blank proposed values ("") never clear a field: they are noops with reason "blank proposal".
//     Clearing a value is a human action in the CRM, not something automation can do.
//   - Owner rules (owner_only, owner_wins_unless_blank): the owner's write beats a blank field
//     or a value any other source wrote, whatever the times; over the owner's own value it is
//     ordered like latest without authority — later occurred_at wins, an exact tie goes to the
//     higher event key — so the field ends with the owner's latest write in every delivery
//     order, and a late or replayed (forced re-run) older CRM edit is rejected, not re-imposed.
//     Other sources are rejected under owner_only and only fill a blank field under
//     owner_wins_unless_blank; that fill is the one order-dependent case (the first non-owner to
//     arrive fills), until the owner writes.
//   - A proposed value equal to the current one is a noop, except when the proposal would win
//     under first_touch, latest, precedence or an owner rule: then the value stays but its
//     provenance moves to the winning event (outcome applied, reason "same value; ..."). Without
//     that, a later event would be compared with the wrong occurred_at and delivery order would
//     change the result.
//   - A proposal that is the current provenance itself (a duplicate delivery) never wins.
//   - Fields not in any group of the entity are rejected with rule "unknown_field"; every field
//     of a proposal from a source the policy does not declare is rejected with rule
//     "unknown_source".
//   - Locks: only a change from the system of record (policy.SystemOfRecord) by an actor whose
//     role is in its override_roles may lock or unlock a field; anyone else asking is rejected
//     (rule "lock", "lock requires role in override_roles") and that field's value is not
//     written either. A locked field refuses every other change (blocked_by_lock, naming who
//     locked it); override actors still write it, and while a field is locked — or being locked
//     in the same change — their value is written without consulting the group's rule: the lock
//     is a human decision that supersedes the rule. Even so, when the current value was written
//     by the system of record too, an override or lock value is written only if it is later by
//     (occurred_at, event key): an older CRM edit never replaces a newer one, locked or not (a
//     lock with a stale value still locks, keeping the newer value). An unlock returns the field
//     to its rule, and a value in the same change is judged by that rule.
package decide

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/crmsync/crmsync/shared/policy"
)

// Provenance is one field's current value and where it came from: what the CRM table stores per
// field ({value, source, event_key, occurred_at, locked_by}). A source's authority is not stored;
// it is read from the policy at decision time.
type Provenance struct {
	// Value is the field's value; "" means blank.
	Value string `json:"value"`
	// Source is the source of the event that wrote Value.
	Source string `json:"source,omitempty"`
	// EventKey is the canonical key of the event that wrote Value.
	EventKey string `json:"event_key,omitempty"`
	// OccurredAt is when that event happened in the world (not when it was received).
	OccurredAt time.Time `json:"occurred_at,omitzero"`
	// LockedBy is the actor who locked the field, "" if unlocked.
	LockedBy string `json:"locked_by,omitempty"`
}

// Equal reports whether two provenances are the same, comparing times with time.Time.Equal.
func (p Provenance) Equal(q Provenance) bool {
	return p.Value == q.Value && p.Source == q.Source && p.EventKey == q.EventKey &&
		p.OccurredAt.Equal(q.OccurredAt) && p.LockedBy == q.LockedBy
}

// Record is one entity record's fields: field name -> current provenance. A missing field is
// blank and unlocked.
type Record map[string]Provenance

// Proposal is one event's proposed changes to one entity record.
type Proposal struct {
	// Source is the event's source (canonical Event.Source).
	Source string
	// EventKey is the event's canonical key.
	EventKey string
	// OccurredAt is the event's occurred_at.
	OccurredAt time.Time
	// Actor identifies who made the change (e.g. a CRM user's email); recorded as LockedBy.
	Actor string
	// Role is the actor's role, checked against the system of record's override_roles.
	Role string
	// Fields maps field name to proposed value (canonical Event.Fields[entity]).
	Fields map[string]string
	// Lock lists fields to lock (system of record, override roles only).
	Lock []string
	// Unlock lists fields to unlock (system of record, override roles only).
	Unlock []string
}

// Outcome is what happened to one proposed field; the values are the audit's decision names.
type Outcome string

// The outcomes of a decision.
const (
	// Applied: the record changes (value, provenance or lock).
	Applied Outcome = "applied"
	// Rejected: the rule, or a missing permission, refused the change.
	Rejected Outcome = "rejected"
	// BlockedByLock: the field is locked and the proposer may not override.
	BlockedByLock Outcome = "blocked_by_lock"
	// Noop: nothing to change (blank proposal, same value, already locked).
	Noop Outcome = "noop"
)

// Pseudo-rules reported in Decision.Rule when no policy rule was reached.
const (
	// RuleUnknownField: the field is not in any group of the entity (or the entity is unknown).
	RuleUnknownField = "unknown_field"
	// RuleUnknownSource: the proposal's source is not declared in the policy.
	RuleUnknownSource = "unknown_source"
	// RuleLock: the decision was made by lock handling (lock, unlock, override of a lock,
	// or refusal of one).
	RuleLock = "lock"
)

// Decision is the verdict on one field of a proposal, as written to the audit trail.
type Decision struct {
	// Field is the field decided.
	Field string `json:"field"`
	// Outcome is what happened.
	Outcome Outcome `json:"outcome"`
	// Rule is the group's policy rule (e.g. "first_touch") or one of the pseudo-rules
	// RuleUnknownField, RuleUnknownSource, RuleLock.
	Rule string `json:"rule"`
	// Reason explains the outcome for humans (crmsync explain).
	Reason string `json:"reason"`
	// Before is the field's provenance before the event.
	Before Provenance `json:"before"`
	// After is the field's provenance after the event; equal to Before unless Outcome is Applied.
	After Provenance `json:"after"`
	// Proposed is the value the event proposed (kept for the audit, applied or not).
	Proposed string `json:"proposed,omitempty"`
}

// Decide judges one proposal against a record under policy p and returns one decision per field
// named in prop.Fields, prop.Lock or prop.Unlock, sorted by field. It does not modify rec; use
// Apply to get the resulting record. p must not be nil.
func Decide(p *policy.Policy, entity string, rec Record, prop Proposal) []Decision {
	names := make([]string, 0, len(prop.Fields)+len(prop.Lock)+len(prop.Unlock))
	for f := range prop.Fields {
		names = append(names, f)
	}
	names = append(names, prop.Lock...)
	names = append(names, prop.Unlock...)
	sort.Strings(names)
	names = slices.Compact(names)

	out := make([]Decision, 0, len(names))
	for _, f := range names {
		out = append(out, decideField(p, entity, f, rec[f], prop))
	}
	return out
}

// Apply returns a copy of rec with the After provenance of every applied decision. rec is not
// modified.
func Apply(rec Record, ds []Decision) Record {
	out := make(Record, len(rec)+len(ds))
	for f, pv := range rec {
		out[f] = pv
	}
	for _, d := range ds {
		if d.Outcome == Applied {
			out[d.Field] = d.After
		}
	}
	return out
}

// Changed reports whether any decision changes the record (so the worker must write it).
func Changed(ds []Decision) bool {
	for _, d := range ds {
		if d.Outcome == Applied {
			return true
		}
	}
	return false
}

// decideField decides one field of a proposal: unknown fields and sources are rejected, then
// lock requests, changes to locked fields and everything else are judged in turn.
func decideField(p *policy.Policy, entity, field string, current Provenance, proposal Proposal) Decision {
	judged := &fieldCase{
		policy:   p,
		current:  current,
		proposal: proposal,
		decision: Decision{Field: field, Before: current, After: current, Proposed: proposal.Fields[field]},
	}
	group, ok := p.GroupOf(entity, field)
	if !ok {
		if _, known := p.Entity(entity); !known {
			return judged.done(Rejected, RuleUnknownField, "entity %q is not in policy %s", entity, p.Version())
		}
		return judged.done(Rejected, RuleUnknownField, "field %q is not in any group of %s", field, entity)
	}
	judged.group, judged.rule = group, string(group.Rule)
	if _, ok := p.Source(proposal.Source); !ok {
		return judged.done(Rejected, RuleUnknownSource, "source %q is not in policy %s", proposal.Source, p.Version())
	}

	judged.value = proposal.Fields[field]
	judged.lock = slices.Contains(proposal.Lock, field)
	judged.unlock = slices.Contains(proposal.Unlock, field)
	judged.override = proposal.Source == policy.SystemOfRecord && p.CanOverride(policy.SystemOfRecord, proposal.Role)
	judged.candidate = Provenance{Value: judged.value, Source: proposal.Source, EventKey: proposal.EventKey, OccurredAt: proposal.OccurredAt}

	if refusal, refused := judged.refuseLockChange(); refused {
		return refusal
	}
	if judged.lock {
		return judged.decideLock()
	}
	if current.LockedBy != "" && !judged.unlock {
		return judged.decideLocked()
	}
	return judged.decideByRule()
}

// fieldCase is one field of one proposal under judgement: what the steps of decideField read,
// and the decision they fill in.
type fieldCase struct {
	policy    *policy.Policy
	group     *policy.Group
	rule      string // the group's rule
	current   Provenance
	proposal  Proposal
	value     string     // the proposed value; "" is blank
	lock      bool       // the proposal locks the field
	unlock    bool       // the proposal unlocks the field
	override  bool       // the proposer may lock, unlock and write locked fields
	candidate Provenance // the field's provenance should the proposed value win
	decision  Decision
}

// done completes the decision with an outcome, a rule and a reason; any outcome but Applied
// leaves the field as it was.
func (judged *fieldCase) done(outcome Outcome, rule, format string, args ...any) Decision {
	judged.decision.Outcome, judged.decision.Rule, judged.decision.Reason = outcome, rule, fmt.Sprintf(format, args...)
	if outcome != Applied {
		judged.decision.After = judged.current
	}
	return judged.decision
}

// refuseLockChange rejects a lock or unlock that contradicts itself or comes from a proposer
// who may not override; it reports false when there is nothing to refuse.
func (judged *fieldCase) refuseLockChange() (Decision, bool) {
	if !judged.lock && !judged.unlock {
		return Decision{}, false
	}
	if judged.lock && judged.unlock {
		return judged.done(Rejected, RuleLock, "lock and unlock of the same field in one change"), true
	}
	if !judged.override {
		verb := "lock"
		if judged.unlock {
			verb = "unlock"
		}
		return judged.done(Rejected, RuleLock, "%s requires role in override_roles (source %s, role %q)", verb, judged.proposal.Source, judged.proposal.Role), true
	}
	return Decision{}, false
}

// decideLock locks the field for an override proposer, writing the proposed value with it
// unless that is blank.
func (judged *fieldCase) decideLock() Decision {
	who := locker(judged.proposal)
	after := judged.current
	stale, why := judged.olderThanCurrent()
	if judged.value != "" && !stale {
		after = judged.candidate
	}
	after.LockedBy = who
	refused := stale && judged.value != judged.current.Value
	if after.Equal(judged.current) {
		if refused {
			return judged.done(Rejected, RuleLock, "already locked by %s; value not written: %s", who, why)
		}
		return judged.done(Noop, RuleLock, "already locked by %s", who)
	}
	judged.decision.After = after
	switch {
	case refused:
		return judged.done(Applied, RuleLock, "locked by %s; value not written: %s", who, why)
	case judged.value != "" && judged.value != judged.current.Value:
		return judged.done(Applied, RuleLock, "locked by %s with value written by override", who)
	}
	return judged.done(Applied, RuleLock, "locked by %s", who)
}

// olderThanCurrent reports whether the proposed value, from the system of record, is older than
// the current value when the system of record wrote that too: ordered like latest without
// authority (occurred_at, then event key), so that under a lock — where the rule is not
// consulted — the system of record's latest edit still stands whatever the delivery order, and
// a late or replayed older edit does not overwrite a newer one. why explains a stale proposal.
// A blank proposal, a blank field or a value another source wrote is never stale.
func (judged *fieldCase) olderThanCurrent() (stale bool, why string) {
	cur, cand := judged.current, judged.candidate
	if cand.Value == "" || cur.Value == "" || cur.Source != policy.SystemOfRecord || cand.Source != policy.SystemOfRecord {
		return false, ""
	}
	wins, word := latest(judged.policy, cand, cur, false)
	if wins {
		return false, ""
	}
	return true, fmt.Sprintf("current value is from %s %s event %s (%s, %s)",
		word, policy.SystemOfRecord, cur.EventKey, cur.Source, cur.OccurredAt.UTC().Format(time.RFC3339Nano))
}

// decideLocked judges a change to a locked field that is not being unlocked: only an override
// proposer writes it, and the lock stays.
func (judged *fieldCase) decideLocked() Decision {
	current, proposal := judged.current, judged.proposal
	if judged.value == "" {
		return judged.done(Noop, judged.rule, "blank proposal")
	}
	if !judged.override {
		if proposal.Source == policy.SystemOfRecord {
			return judged.done(BlockedByLock, RuleLock, "locked by %s; role %q is not in %s override_roles", current.LockedBy, proposal.Role, policy.SystemOfRecord)
		}
		return judged.done(BlockedByLock, RuleLock, "locked by %s", current.LockedBy)
	}
	stale, why := judged.olderThanCurrent()
	if judged.value == current.Value && (stale || current.Source != policy.SystemOfRecord) {
		return judged.done(Noop, RuleLock, "same value as current (locked by %s)", current.LockedBy)
	}
	if stale {
		return judged.done(Rejected, RuleLock, "override by %s (%s) of field locked by %s: %s", locker(proposal), proposal.Role, current.LockedBy, why)
	}
	judged.decision.After = judged.candidate
	judged.decision.After.LockedBy = current.LockedBy
	if judged.value == current.Value {
		_, word := latest(judged.policy, judged.candidate, current, false)
		return judged.done(Applied, RuleLock, "same value; provenance moves to %s %s event %s (locked by %s)", word, policy.SystemOfRecord, proposal.EventKey, current.LockedBy)
	}
	return judged.done(Applied, RuleLock, "override by %s (%s) of field locked by %s", locker(proposal), proposal.Role, current.LockedBy)
}

// decideByRule judges an unlocked field, or one being unlocked, by the group's rule. An unlock
// applies even when the value it comes with does not.
func (judged *fieldCase) decideByRule() Decision {
	current := judged.current
	base := current
	prefix := ""
	if judged.unlock {
		if current.LockedBy == "" {
			if judged.value == "" {
				return judged.done(Noop, RuleLock, "not locked")
			}
		} else {
			base.LockedBy = ""
			prefix = fmt.Sprintf("unlocked by %s (was locked by %s); ", locker(judged.proposal), current.LockedBy)
		}
	}
	if judged.value == "" {
		if prefix != "" {
			judged.decision.After = base
			return judged.done(Applied, RuleLock, "%s", prefix[:len(prefix)-2])
		}
		return judged.done(Noop, judged.rule, "blank proposal")
	}

	outcome, reason, after := evaluate(judged.policy, judged.group, base, judged.candidate)
	if prefix != "" && outcome != Applied {
		// The unlock itself still applies even though the value does not.
		judged.decision.After = base
		return judged.done(Applied, judged.rule, "%s%s: %s", prefix, outcome, reason)
	}
	judged.decision.After = after
	return judged.done(outcome, judged.rule, "%s%s", prefix, reason)
}

// locker names who locks or overrides: the actor, else the role.
func locker(prop Proposal) string {
	if prop.Actor != "" {
		return prop.Actor
	}
	return "role:" + prop.Role
}

// evaluate applies the group's rule to an unlocked field with a non-blank candidate.
func evaluate(p *policy.Policy, g *policy.Group, cur, cand Provenance) (Outcome, string, Provenance) {
	switch g.Rule {
	case policy.OwnerOnly, policy.OwnerWinsUnlessBlank:
		if cand.Source == g.Owner {
			return ownerWrite(p, g, cur, cand)
		}
		if g.Rule == policy.OwnerOnly {
			if cand.Value == cur.Value {
				return Noop, "same value as current", cur
			}
			return Rejected, fmt.Sprintf("owner_only: %s owns %s", g.Owner, g.Name), cur
		}
		if cur.Value == "" {
			return Applied, fmt.Sprintf("owner_wins_unless_blank: fills blank field (%s owns %s)", g.Owner, g.Name), cand
		}
		if cand.Value == cur.Value {
			return Noop, "same value as current", cur
		}
		return Rejected, fmt.Sprintf("owner_wins_unless_blank: %s owns %s and the field is set", g.Owner, g.Name), cur
	}

	if cur.Value == "" {
		return Applied, fmt.Sprintf("%s: field was blank", g.Rule), cand
	}
	wins, why := beats(p, g.Rule, cand, cur)
	switch {
	case wins && cand.Value == cur.Value:
		return Applied, fmt.Sprintf("same value; provenance moves to %s event %s", why, cand.EventKey), cand
	case wins:
		return Applied, fmt.Sprintf("%s: %s event", g.Rule, why), cand
	case cand.Value == cur.Value:
		return Noop, "same value as current", cur
	default:
		return Rejected, fmt.Sprintf("%s: current value is from %s event %s (%s, %s)",
			g.Rule, why, cur.EventKey, cur.Source, cur.OccurredAt.UTC().Format(time.RFC3339Nano)), cur
	}
}

// ownerWrite judges the owner's write under owner_only and owner_wins_unless_blank. Over a blank
// field, or a value another source wrote, the owner wins whatever the times. Over the owner's
// own value it is ordered like latest without authority — later occurred_at wins, an exact tie
// goes to the higher event key — so the field ends with the owner's latest write whatever the
// delivery order, and a late or replayed older edit loses. A winning proposal equal to the
// current value moves the provenance to its event, as under the order-independent rules.
func ownerWrite(p *policy.Policy, g *policy.Group, cur, cand Provenance) (Outcome, string, Provenance) {
	switch {
	case cur.Value == "":
		return Applied, fmt.Sprintf("%s: owner %s writes; field was blank", g.Rule, g.Owner), cand
	case cur.Source != g.Owner && cand.Value == cur.Value:
		return Applied, fmt.Sprintf("same value; provenance moves to owner %s event %s (was %s)", g.Owner, cand.EventKey, cur.Source), cand
	case cur.Source != g.Owner:
		return Applied, fmt.Sprintf("%s: owner %s writes over %s value", g.Rule, g.Owner, cur.Source), cand
	}
	wins, why := latest(p, cand, cur, false)
	switch {
	case wins && cand.Value == cur.Value:
		return Applied, fmt.Sprintf("same value; provenance moves to %s owner event %s", why, cand.EventKey), cand
	case wins:
		return Applied, fmt.Sprintf("%s: owner %s writes (%s event)", g.Rule, g.Owner, why), cand
	case cand.Value == cur.Value:
		return Noop, "same value as current", cur
	default:
		return Rejected, fmt.Sprintf("%s: current value is from %s owner event %s (%s, %s)",
			g.Rule, why, cur.EventKey, cur.Source, cur.OccurredAt.UTC().Format(time.RFC3339Nano)), cur
	}
}

// beats reports whether cand strictly outranks cur under an order-independent rule, and a word
// for the winner's advantage. Each rule is a strict total order over events with distinct keys,
// so the surviving value is the maximum of the event set whatever the delivery order.
func beats(p *policy.Policy, rule policy.Rule, cand, cur Provenance) (bool, string) {
	switch rule {
	case policy.FirstTouch:
		// Earliest first; exact tie -> lower key.
		if c := cand.OccurredAt.Compare(cur.OccurredAt); c != 0 {
			if c < 0 {
				return true, "earlier"
			}
			return false, "an earlier"
		}
		if cand.EventKey < cur.EventKey {
			return true, "tied, lower-key"
		}
		return false, "a tied, lower-key"
	case policy.Precedence:
		ca, cu := p.Authority(cand.Source), p.Authority(cur.Source)
		if ca != cu {
			if ca > cu {
				return true, "higher-authority"
			}
			return false, "a higher-authority"
		}
		return latest(p, cand, cur, false)
	default: // policy.Latest
		return latest(p, cand, cur, true)
	}
}

// latest orders by occurred_at, then (if byAuthority) authority, then event key; higher wins.
func latest(p *policy.Policy, cand, cur Provenance, byAuthority bool) (bool, string) {
	if c := cand.OccurredAt.Compare(cur.OccurredAt); c != 0 {
		if c > 0 {
			return true, "later"
		}
		return false, "a later"
	}
	if byAuthority {
		ca, cu := p.Authority(cand.Source), p.Authority(cur.Source)
		if ca != cu {
			if ca > cu {
				return true, "tied, higher-authority"
			}
			return false, "a tied, higher-authority"
		}
	}
	if cand.EventKey > cur.EventKey {
		return true, "tied, higher-key"
	}
	return false, "a tied, higher-key"
}
