package store

import (
	"encoding/json"
	"fmt"
)

// AuditEventItem is the audit of one event's decisions on one record: every decision that was
// not a no-op (applied, rejected, blocked by a lock; a forced re-run's own "_rerun" entry), in
// one item under the record's partition (sk AuditEventSK), the decisions packed. One item per
// event and record, rather than one per field, keeps an event's audit to one write; Entries
// expands it into the per-field AuditItem readers show. Items written before keep the
// per-field AuditItem shape (sk ending in the field); readers take both.
type AuditEventItem struct {
	// PK is the record's partition key.
	PK string `dynamodbav:"pk"`
	// SK is AuditEventSK(occurred_at, event key), with "#rerun-N" for a forced re-run's and
	// "#redelivery-N" for a redelivery's after the dedup window.
	SK string `dynamodbav:"sk"`
	// Entity and RecordID name the record.
	Entity string `dynamodbav:"entity"`
	// RecordID is the record's id.
	RecordID string `dynamodbav:"record_id"`
	// EventKey is the event's key.
	EventKey string `dynamodbav:"event_key"`
	// Source is the event's source.
	Source string `dynamodbav:"source"`
	// Actor is who made the change (actor email or id, else the source).
	Actor string `dynamodbav:"actor,omitempty"`
	// OccurredAt is the event's occurred_at (TimeLayout).
	OccurredAt string `dynamodbav:"occurred_at"`
	// RecordedAt is when the decisions were written (TimeLayout).
	RecordedAt string `dynamodbav:"recorded_at"`
	// PolicyVersion is the policy the decisions were made under.
	PolicyVersion string `dynamodbav:"policy_version"`
	// RerunBy and RerunWhy are set when the decisions came from a forced re-run.
	RerunBy string `dynamodbav:"rerun_by,omitempty"`
	// RerunWhy is the reason given for the forced re-run.
	RerunWhy string `dynamodbav:"rerun_why,omitempty"`
	// Decisions is the JSON array of AuditDecision, packed.
	Decisions Packed `dynamodbav:"decisions_z"`
}

// AuditDecision is one field decision of an AuditEventItem.
type AuditDecision struct {
	// Field is the field decided ("_rerun" for a forced re-run's own entry).
	Field string `json:"f"`
	// Decision is applied, rejected, blocked_by_lock or rerun.
	Decision string `json:"d"`
	// Rule is the policy rule or pseudo-rule that decided.
	Rule string `json:"r,omitempty"`
	// Reason explains the decision.
	Reason string `json:"why,omitempty"`
	// Proposed is the value the event proposed, whatever the decision.
	Proposed string `json:"p,omitempty"`
	// Before is the field before the event.
	Before Field `json:"b"`
	// After is the field after the event.
	After Field `json:"a"`
}

// AuditEventSK is the sort key of an event's audit on a record.
func AuditEventSK(occurredAt, eventKey string) string {
	return PrefixAudit + occurredAt + "#" + eventKey
}

// SetDecisions packs decisions into the item.
func (a *AuditEventItem) SetDecisions(decisions []AuditDecision) error {
	doc, err := json.Marshal(decisions)
	if err != nil {
		return fmt.Errorf("audit of %s: %w", a.EventKey, err)
	}
	a.Decisions = Pack(doc)
	return nil
}

// Entries expands the item into one AuditItem per decision, in the order written.
func (a *AuditEventItem) Entries() ([]AuditItem, error) {
	doc, err := a.Decisions.Unpack()
	if err != nil {
		return nil, fmt.Errorf("audit %s/%s: %w", a.PK, a.SK, err)
	}
	var decisions []AuditDecision
	if err := json.Unmarshal([]byte(doc), &decisions); err != nil {
		return nil, fmt.Errorf("audit %s/%s: %w", a.PK, a.SK, err)
	}
	out := make([]AuditItem, 0, len(decisions))
	for _, d := range decisions {
		actor := a.Actor
		if d.Field == "_rerun" {
			actor = a.RerunBy // the re-run's own entry: who forced it
		}
		out = append(out, AuditItem{PK: a.PK, SK: a.SK + "#" + d.Field, Entity: a.Entity, RecordID: a.RecordID, Field: d.Field,
			Before: d.Before, After: d.After, Decision: d.Decision, Rule: d.Rule, Reason: d.Reason, PolicyVersion: a.PolicyVersion,
			Source: a.Source, Actor: actor, EventKey: a.EventKey, OccurredAt: a.OccurredAt, RecordedAt: a.RecordedAt,
			Proposed: d.Proposed, RerunBy: a.RerunBy, RerunWhy: a.RerunWhy})
	}
	return out, nil
}
