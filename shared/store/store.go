// Package store owns crmsync's DynamoDB item shapes (design section 4): the ledger item written
// once per event key, and the CRM table's items — record profiles with per-field provenance,
// identity and domain claims, activities (under their contact, or unassociated), and audit
// entries — with their key layout, attribute names and conversions. It makes no AWS calls: the
// worker reads and writes these shapes with its own client.
//
// Key layout of the CRM table (pk / sk):
//
//	CONTACT#<id> / PROFILE          contact record; ACCOUNT#<id> and DEAL#<id> alike
//	CONTACT#<id> / ACT#<activity>   an activity associated with the contact
//	UNASSOC      / ACT#<activity>   an activity waiting for a contact (unassoc = its shard, sparse index)
//	CONTACT#<id> / AUDIT#<occurred_at>#<event key>   one event's audited decisions on the record
//	                                  (AuditEventItem; "#rerun-N" for a forced re-run's,
//	                                  "#redelivery-N" for a redelivery after the dedup window's; items
//	                                  written before hold one decision each, sk ending #<field>)
//	IDENT#email#<addr> / IDENT      → contact_id (claimed with attribute_not_exists(contact_id));
//	                                  while unclaimed, the ids of the activities parked with it
//	                                  (pending, pver), adopted by the claim's transaction
//	IDENT#phone#<e164> / IDENT      → contact_id
//	DOMAIN#<domain> / DOMAIN        → account (claimed with attribute_not_exists)
//
// Times that are index sort keys or compared as strings are written in TimeLayout (UTC, fixed
// width, so lexical order is time order); dedup_until is epoch milliseconds and expires_at epoch
// seconds (DynamoDB TTL; absent on ledger items of sources whose dedup window is forever).
//
// The ledger's compact event (event_z) and an activity's document (doc_z) are stored Packed;
// items written before keep them as plain strings (event, doc), read beside the packed ones.
package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/decide"
)

// Ledger outcomes.
const (
	// Applied: the event changed the CRM (record, identities or timeline).
	Applied = "APPLIED"
	// Noop: the event changed nothing (refused proposals may still be audited).
	Noop = "NOOP"
	// Rejected: the event could not be applied and will not be retried (invalid, vendor 404).
	Rejected = "REJECTED"
	// Quarantined: the payload was authentic but unusable (written by the webhook side).
	Quarantined = "QUARANTINED"
)

// Index names from template.yaml.
const (
	// IndexByGroup is the ledger's (group_key, occurred_at) index, used by rebuild.
	IndexByGroup = "ByGroup"
	// IndexBySource is the ledger's (source, recorded_at) index.
	IndexBySource = "BySource"
	// IndexByAccount is the CRM table's (account_id, sk) index.
	IndexByAccount = "ByAccount"
	// IndexUnassociated is the CRM table's sparse (unassoc, occurred_at) index.
	IndexUnassociated = "Unassociated"
)

// Sort keys and prefixes.
const (
	// SKProfile is the sort key of a record's profile item.
	SKProfile = "PROFILE"
	// SKIdent is the sort key of an identity claim.
	SKIdent = "IDENT"
	// SKDomain is the sort key of a domain claim.
	SKDomain = "DOMAIN"
	// PrefixActivity starts an activity's sort key.
	PrefixActivity = "ACT#"
	// PrefixAudit starts an audit entry's sort key.
	PrefixAudit = "AUDIT#"
	// PKUnassociated is the partition of activities waiting for a contact.
	PKUnassociated = "UNASSOC"
)

// Entities.
const (
	// Contact is the person entity.
	Contact = "contact"
	// Account is the company entity.
	Account = "account"
	// Deal is the opportunity entity.
	Deal = "deal"
)

// TimeLayout is the fixed-width UTC layout of every time stored as a string.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

// DefaultRetention is how long ledger items are kept (DynamoDB TTL) unless configured.
const DefaultRetention = 400 * 24 * time.Hour

// ForeverMillis is the dedup_until of a source whose window is forever (year 9999).
const ForeverMillis int64 = 253402300799999

// FormatTime writes t in TimeLayout; the zero time is "".
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(TimeLayout)
}

// ParseTime reads a time written by FormatTime (or any RFC 3339 time); "" is the zero time (an
// unset time). Anything else that does not parse is an error, never the zero time: a zero time
// would win every first_touch comparison.
func ParseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q is not RFC 3339", s)
	}
	return t.UTC(), nil
}

// PK returns the partition key of a record: "CONTACT#id", "ACCOUNT#id", "DEAL#id".
func PK(entity, id string) string {
	switch entity {
	case Contact:
		return "CONTACT#" + id
	case Account:
		return "ACCOUNT#" + id
	case Deal:
		return "DEAL#" + id
	}
	return entity + "#" + id
}

// IdentEmailPK is the partition key of an email identity claim.
func IdentEmailPK(email string) string { return "IDENT#email#" + email }

// IdentPhonePK is the partition key of a phone identity claim.
func IdentPhonePK(e164 string) string { return "IDENT#phone#" + e164 }

// DomainPK is the partition key of a domain claim.
func DomainPK(domain string) string { return "DOMAIN#" + domain }

// ActivitySK is the sort key of an activity. Very long activity ids (some Message-Ids) are
// hashed so the key stays well inside DynamoDB's limit; the id itself is kept in the item.
func ActivitySK(activityID string) string {
	if len(activityID) > 400 {
		return PrefixActivity + "h:" + hashHex(activityID)
	}
	return PrefixActivity + activityID
}

// AuditSK is the sort key of one audited decision.
func AuditSK(occurred time.Time, eventKey, field string) string {
	return PrefixAudit + FormatTime(occurred) + "#" + eventKey + "#" + field
}

// Rerun is one forced re-run of an event.
type Rerun struct {
	// By is who forced it.
	By string `dynamodbav:"by" json:"by"`
	// Why is the reason given.
	Why string `dynamodbav:"why" json:"why"`
	// At is when (TimeLayout).
	At string `dynamodbav:"at" json:"at"`
}

// Redelivery is one delivery of an event after its dedup window was over.
type Redelivery struct {
	// At is when it was re-decided (TimeLayout).
	At string `dynamodbav:"at" json:"at"`
	// Outcome is what re-deciding it did (usually NOOP: the original already applied it).
	Outcome string `dynamodbav:"outcome" json:"outcome"`
}

// LedgerItem is the ledger's one item per event key.
type LedgerItem struct {
	// Key is the canonical event key (the table's pk).
	Key string `dynamodbav:"pk" json:"key"`
	// Outcome is Applied, Noop, Rejected or Quarantined.
	Outcome string `dynamodbav:"outcome" json:"outcome"`
	// Reason explains the outcome.
	Reason string `dynamodbav:"reason,omitempty" json:"reason,omitempty"`
	// PayloadHash is the event's payload hash; the same key with another hash is flagged.
	PayloadHash string `dynamodbav:"payload_hash" json:"payload_hash"`
	// DedupUntil is the end of the source's dedup window, epoch milliseconds (ForeverMillis for
	// forever).
	DedupUntil int64 `dynamodbav:"dedup_until" json:"dedup_until"`
	// DedupForever is set when the source's window is forever.
	DedupForever bool `dynamodbav:"dedup_forever,omitempty" json:"dedup_forever,omitempty"`
	// ExpiresAt is the TTL, epoch seconds; 0 (no attribute) for a source whose dedup window is
	// forever: its items are kept so that a redelivery years later is still a duplicate.
	ExpiresAt int64 `dynamodbav:"expires_at,omitempty" json:"expires_at,omitempty"`
	// GroupKey is the event's group key (ByGroup hash key).
	GroupKey string `dynamodbav:"group_key,omitempty" json:"group_key,omitempty"`
	// OccurredAt is the event's occurred_at (ByGroup range key, TimeLayout).
	OccurredAt string `dynamodbav:"occurred_at,omitempty" json:"occurred_at,omitempty"`
	// Source is the event's source (BySource hash key).
	Source string `dynamodbav:"source,omitempty" json:"source,omitempty"`
	// RecordedAt is when the outcome was written (BySource range key, TimeLayout).
	RecordedAt string `dynamodbav:"recorded_at" json:"recorded_at"`
	// Event is the compact canonical event JSON, for replay and rebuild.
	Event Packed `dynamodbav:"event_z,omitempty" json:"-"`
	// PlainEvent is the compact event of an item written before packing (attribute event).
	PlainEvent string `dynamodbav:"event,omitempty" json:"-"`
	// PolicyVersion is the policy the outcome was decided under.
	PolicyVersion string `dynamodbav:"policy_version,omitempty" json:"policy_version,omitempty"`
	// MappingVersion is the connector mapping that produced the event.
	MappingVersion string `dynamodbav:"mapping_version,omitempty" json:"mapping_version,omitempty"`
	// Attempts counts the transaction attempts of the last application.
	Attempts int `dynamodbav:"attempts" json:"attempts"`
	// Reruns lists forced re-runs, oldest first.
	Reruns []Rerun `dynamodbav:"reruns,omitempty" json:"reruns,omitempty"`
	// Redeliveries lists deliveries of the same payload after its dedup window, oldest first:
	// each was re-decided, and the item's outcome, reason and recorded_at stay the original's.
	Redeliveries []Redelivery `dynamodbav:"redeliveries,omitempty" json:"redeliveries,omitempty"`
	// Unmapped lists the vendor fields no mapping used.
	Unmapped []string `dynamodbav:"unmapped,omitempty" json:"unmapped,omitempty"`
	// ContactID is the contact the event was applied to, if any.
	ContactID string `dynamodbav:"contact_id,omitempty" json:"contact_id,omitempty"`
	// Applications lists every time the event was decided against a contact (its first
	// application, re-applications after the dedup window and forced re-runs), oldest first:
	// which contact, at which of its versions, and whether it wrote the contact. Rebuild folds a
	// contact's events in this order, the order the worker decided them.
	Applications []Application `dynamodbav:"applications,omitempty" json:"applications,omitempty"`
	// ActivityID is the activity the event merged into, if any.
	ActivityID string `dynamodbav:"activity_id,omitempty" json:"activity_id,omitempty"`
	// Flagged is set when a delivery with the same key and a different payload hash arrived;
	// that delivery was not applied.
	Flagged bool `dynamodbav:"flagged,omitempty" json:"flagged,omitempty"`
	// Conflicts counts such deliveries.
	Conflicts int `dynamodbav:"conflicts,omitempty" json:"conflicts,omitempty"`
	// ConflictingHash is the payload hash of the latest conflicting delivery.
	ConflictingHash string `dynamodbav:"conflicting_payload,omitempty" json:"conflicting_payload,omitempty"`
}

// Application is one decision of an event against a contact record, written with the ledger
// item in the transaction that applied the event.
type Application struct {
	// ContactID is the contact decided against.
	ContactID string `dynamodbav:"c" json:"contact_id"`
	// Version is the contact record's version the decision read (0 for a contact the event
	// created). Record writes are conditioned on it, so the event that wrote the record at
	// Version v is the only writer from v, and every event that read v without writing was
	// decided against the same fields.
	Version int64 `dynamodbav:"v" json:"version"`
	// Wrote is set when the transaction wrote the contact record (to Version+1).
	Wrote bool `dynamodbav:"w,omitempty" json:"wrote,omitempty"`
	// At is when the application was recorded (TimeLayout).
	At string `dynamodbav:"at,omitempty" json:"at,omitempty"`
}

// Duplicate reports whether a delivery with payloadHash at now is a duplicate of this item: the
// same payload and still inside the dedup window.
func (l *LedgerItem) Duplicate(payloadHash string, now time.Time) bool {
	return l.PayloadHash == payloadHash && (l.DedupForever || l.DedupUntil > now.UnixMilli())
}

// Field is one field's value and provenance as stored: {value, source, event_key, occurred_at,
// locked_by}.
type Field struct {
	// Value is the field's value.
	Value string `dynamodbav:"value" json:"value"`
	// Source is the source of the event that wrote Value.
	Source string `dynamodbav:"source,omitempty" json:"source,omitempty"`
	// EventKey is the key of that event.
	EventKey string `dynamodbav:"event_key,omitempty" json:"event_key,omitempty"`
	// OccurredAt is that event's occurred_at (TimeLayout).
	OccurredAt string `dynamodbav:"occurred_at,omitempty" json:"occurred_at,omitempty"`
	// LockedBy is who locked the field, if anyone.
	LockedBy string `dynamodbav:"locked_by,omitempty" json:"locked_by,omitempty"`
}

// FieldFrom converts a decision provenance to its stored form.
func FieldFrom(p decide.Provenance) Field {
	return Field{Value: p.Value, Source: p.Source, EventKey: p.EventKey, OccurredAt: FormatTime(p.OccurredAt), LockedBy: p.LockedBy}
}

// Provenance converts a stored field to the decision package's form.
func (f Field) Provenance() (decide.Provenance, error) {
	at, err := ParseTime(f.OccurredAt)
	if err != nil {
		return decide.Provenance{}, fmt.Errorf("occurred_at: %w", err)
	}
	return decide.Provenance{Value: f.Value, Source: f.Source, EventKey: f.EventKey, OccurredAt: at, LockedBy: f.LockedBy}, nil
}

// Record is a contact, account or deal profile item (sk PROFILE).
type Record struct {
	// PK is PK(entity, id).
	PK string `dynamodbav:"pk" json:"-"`
	// SK is SKProfile.
	SK string `dynamodbav:"sk" json:"-"`
	// Entity is contact, account or deal.
	Entity string `dynamodbav:"entity" json:"entity"`
	// ID is the record id.
	ID string `dynamodbav:"id" json:"id"`
	// Fields maps field name to value and provenance. Written through Stored, they are kept
	// packed (PackedFields); profiles written before packing keep them here (attribute fields).
	// Unpack after reading an item fills Fields from either.
	Fields map[string]Field `dynamodbav:"fields,omitempty" json:"fields"`
	// PackedFields is Fields as stored: their JSON, packed (attribute fields_z). Per-field
	// provenance repeats sources, event keys and times, so packing halves a profile's size,
	// and with it the write units of every profile write and of its index entries.
	PackedFields Packed `dynamodbav:"fields_z,omitempty" json:"-"`
	// Version increases by one with every write; writes are conditioned on it.
	Version int64 `dynamodbav:"version" json:"version"`
	// AccountID is a contact's or deal's account (ByAccount index).
	AccountID string `dynamodbav:"account_id,omitempty" json:"account_id,omitempty"`
	// Identities are a contact's claimed identities ("email:<addr>", "phone:<e164>"), sorted.
	Identities []string `dynamodbav:"identities,omitempty" json:"identities,omitempty"`
	// Domains are an account's claimed email domains, sorted.
	Domains []string `dynamodbav:"domains,omitempty" json:"domains,omitempty"`
	// LastActivityAt is the occurred_at of the latest activity associated with the record.
	LastActivityAt string `dynamodbav:"last_activity_at,omitempty" json:"last_activity_at,omitempty"`
	// CreatedAt is when the record was first written.
	CreatedAt string `dynamodbav:"created_at" json:"created_at"`
	// UpdatedAt is when it was last written. No index follows it: the reconciliation jobs find
	// the contacts a window changed through the ledger. (Records written before carry a
	// change_day attribute, a key of an index since dropped; nothing reads it.)
	UpdatedAt string `dynamodbav:"updated_at" json:"updated_at"`
}

// Stored returns the record as it is written: a copy whose Fields are packed into
// PackedFields. Marshaling the record itself still stores every field (plainly).
func (r *Record) Stored() (*Record, error) {
	doc, err := json.Marshal(r.Fields)
	if err != nil {
		return nil, fmt.Errorf("%s %s fields: %w", r.Entity, r.ID, err)
	}
	stored := *r
	stored.Fields, stored.PackedFields = nil, Pack(doc)
	return &stored, nil
}

// Unpack fills Fields after the record was read from an item: from PackedFields, or from the
// plain fields of a profile written before packing (an empty map when there are none).
func (r *Record) Unpack() error {
	if len(r.PackedFields) > 0 {
		doc, err := r.PackedFields.Unpack()
		if err != nil {
			return fmt.Errorf("%s fields: %w", r.PK, err)
		}
		fields := map[string]Field{}
		if err := json.Unmarshal([]byte(doc), &fields); err != nil {
			return fmt.Errorf("%s fields: %w", r.PK, err)
		}
		r.Fields, r.PackedFields = fields, nil
	}
	if r.Fields == nil {
		r.Fields = map[string]Field{}
	}
	return nil
}

// NewRecord returns an empty record of entity with id.
func NewRecord(entity, id string) *Record {
	return &Record{PK: PK(entity, id), SK: SKProfile, Entity: entity, ID: id, Fields: map[string]Field{}}
}

// Decidable returns the record's fields in the decision package's form, or an error naming the
// first field whose stored time does not parse.
func (r *Record) Decidable() (decide.Record, error) {
	out := make(decide.Record, len(r.Fields))
	for k, f := range r.Fields {
		p, err := f.Provenance()
		if err != nil {
			return nil, fmt.Errorf("%s %s field %s: %w", r.Entity, r.ID, k, err)
		}
		out[k] = p
	}
	return out, nil
}

// SetFields replaces the record's fields with a decision record.
func (r *Record) SetFields(rec decide.Record) {
	r.Fields = make(map[string]Field, len(rec))
	for k, p := range rec {
		r.Fields[k] = FieldFrom(p)
	}
}

// Touch stamps the record as written at now.
func (r *Record) Touch(now time.Time) {
	s := FormatTime(now)
	if r.CreatedAt == "" {
		r.CreatedAt = s
	}
	r.UpdatedAt = s
}

// ClosedStages are the deal stages that make a deal no longer open.
var ClosedStages = map[string]bool{"closed_won": true, "closed_lost": true, "won": true, "lost": true,
	"closedwon": true, "closedlost": true, "closed": true}

// Open reports whether a deal record is open (its stage is not a closed stage).
func (r *Record) Open() bool { return !ClosedStages[r.Fields["stage"].Value] }

// IdentityClaim is an IDENT# or DOMAIN# item: an identity owned by one record.
type IdentityClaim struct {
	// PK is IdentEmailPK, IdentPhonePK or DomainPK.
	PK string `dynamodbav:"pk"`
	// SK is SKIdent or SKDomain.
	SK string `dynamodbav:"sk"`
	// ContactID is the owning contact (identity claims).
	ContactID string `dynamodbav:"contact_id,omitempty"`
	// Account is the owning account (domain claims; not named account_id so the claim stays out
	// of the ByAccount index).
	Account string `dynamodbav:"account,omitempty"`
	// EventKey is the event that made the claim.
	EventKey string `dynamodbav:"event_key"`
	// ClaimedAt is when (TimeLayout).
	ClaimedAt string `dynamodbav:"claimed_at"`
	// Pending are the ids of activities parked as UNASSOC that carry this identity while it is
	// unclaimed (ContactID empty): the contact that claims it adopts them in its own transaction,
	// so adoption never waits for an index.
	Pending []string `dynamodbav:"pending,stringset,omitempty"`
	// PendingVersion counts the parkings recorded on an unclaimed identity; a claim is
	// conditioned on it, so a parking that commits first makes the claim re-read and adopt.
	PendingVersion int64 `dynamodbav:"pver,omitempty"`
}

// ActivityItem is one timeline entry: an activity under its contact, or unassociated.
type ActivityItem struct {
	// PK is PK(contact, id) or PKUnassociated.
	PK string `dynamodbav:"pk"`
	// SK is ActivitySK(ActivityID).
	SK string `dynamodbav:"sk"`
	// ActivityID is the activity's id.
	ActivityID string `dynamodbav:"activity_id"`
	// Type and Status summarise the activity for listings.
	Type string `dynamodbav:"type,omitempty"`
	// Status is the merged status.
	Status string `dynamodbav:"status,omitempty"`
	// OccurredAt is the earliest update's occurred_at (TimeLayout; Unassociated range key).
	OccurredAt string `dynamodbav:"occurred_at"`
	// ContactID is the associated contact.
	ContactID string `dynamodbav:"contact_id,omitempty"`
	// AccountID is the associated account (ByAccount index).
	AccountID string `dynamodbav:"account_id,omitempty"`
	// DealID is the associated deal (the index on it was dropped: nothing queried it).
	DealID string `dynamodbav:"deal_id,omitempty"`
	// Unassoc is set while the activity waits for a contact: its shard of the sparse
	// Unassociated index (UnassocKey; LegacyUnassocKey on items parked before sharding).
	Unassoc string `dynamodbav:"unassoc,omitempty"`
	// Identities are the person's identities ("email:<addr>", "phone:<e164>"), so the activity
	// can be matched when a contact appears.
	Identities []string `dynamodbav:"identities,omitempty"`
	// Assoc records how each link was made.
	Assoc association.Result `dynamodbav:"assoc"`
	// Log names the activity's log partition (ActivityLogPK): one item per event whose entry
	// the activity no longer keeps (the timeline holds the newest timeline.MaxEntries), written
	// in the transaction that evicted it. It is set when the item is created and kept when the
	// activity moves under a contact, so the log never moves.
	Log string `dynamodbav:"log,omitempty"`
	// MovedTo is set on an UNASSOC item once its activity moved under this contact id.
	MovedTo string `dynamodbav:"moved_to,omitempty"`
	// Doc is the merged timeline.Activity as compact JSON, packed.
	Doc Packed `dynamodbav:"doc_z,omitempty"`
	// PlainDoc is the document of an item written before packing (attribute doc).
	PlainDoc string `dynamodbav:"doc,omitempty"`
	// Version increases with every write; writes are conditioned on it.
	Version int64 `dynamodbav:"version"`
	// UpdatedAt is when it was last written (TimeLayout).
	UpdatedAt string `dynamodbav:"updated_at"`
}

// PrefixActivityLog starts the partition key of an activity's log.
const PrefixActivityLog = "ACTLOG#"

// ActivityLogPK returns the log partition of the activity with activityID first stored under
// pk (a contact's partition or PKUnassociated).
func ActivityLogPK(pk, activityID string) string {
	return PrefixActivityLog + hashHex(pk+"\x00"+activityID)
}

// ActivityLogItem records one event merged into an activity whose entry the activity no longer
// keeps (pk the activity's Log, sk the event key). The stored activity keeps only its newest
// timeline.MaxEntries entries; its entries and its log together name every event merged, so
// the activity can be rebuilt from the ledger exactly, and an activity that never overflows
// writes no log. Items stored before this rule also log events the activity still keeps.
// Writing it again for the same event is idempotent.
type ActivityLogItem struct {
	// PK is the activity's Log.
	PK string `dynamodbav:"pk"`
	// SK is the event key.
	SK string `dynamodbav:"sk"`
	// ActivityID is the activity's id.
	ActivityID string `dynamodbav:"activity_id"`
	// OccurredAt is the event's occurred_at (TimeLayout).
	OccurredAt string `dynamodbav:"at"`
}

// AuditItem is one audited field decision.
type AuditItem struct {
	// PK is the record's partition key.
	PK string `dynamodbav:"pk" json:"-"`
	// SK is AuditSK(occurred_at, event key, field).
	SK string `dynamodbav:"sk" json:"-"`
	// Entity and RecordID name the record.
	Entity string `dynamodbav:"entity" json:"entity"`
	// RecordID is the record's id.
	RecordID string `dynamodbav:"record_id" json:"record_id"`
	// Field is the field decided.
	Field string `dynamodbav:"field" json:"field"`
	// Before is the field before the event.
	Before Field `dynamodbav:"before" json:"before"`
	// After is the field after the event.
	After Field `dynamodbav:"after" json:"after"`
	// Decision is applied, rejected, blocked_by_lock or noop.
	Decision string `dynamodbav:"decision" json:"decision"`
	// Rule is the policy rule or pseudo-rule that decided.
	Rule string `dynamodbav:"rule" json:"rule"`
	// Reason explains the decision.
	Reason string `dynamodbav:"reason" json:"reason"`
	// PolicyVersion is the policy the decision was made under.
	PolicyVersion string `dynamodbav:"policy_version" json:"policy_version"`
	// Source is the event's source.
	Source string `dynamodbav:"source" json:"source"`
	// Actor is who made the change (actor email or id, else the source).
	Actor string `dynamodbav:"actor,omitempty" json:"actor,omitempty"`
	// EventKey is the event's key.
	EventKey string `dynamodbav:"event_key" json:"event_key"`
	// OccurredAt is the event's occurred_at (TimeLayout).
	OccurredAt string `dynamodbav:"occurred_at" json:"occurred_at"`
	// RecordedAt is when the decision was written (TimeLayout).
	RecordedAt string `dynamodbav:"recorded_at" json:"recorded_at"`
	// Proposed is the value the event proposed, whatever the decision.
	Proposed string `dynamodbav:"proposed,omitempty" json:"proposed,omitempty"`
	// RerunBy and RerunWhy are set when the decision came from a forced re-run.
	RerunBy string `dynamodbav:"rerun_by,omitempty" json:"rerun_by,omitempty"`
	// RerunWhy is the reason given for the forced re-run.
	RerunWhy string `dynamodbav:"rerun_why,omitempty" json:"rerun_why,omitempty"`
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// EventJSON is the ledger item's compact event ("" when it keeps none).
func (l *LedgerItem) EventJSON() (string, error) {
	if len(l.Event) > 0 {
		return l.Event.Unpack()
	}
	return l.PlainEvent, nil
}

// HasEvent reports whether the ledger item keeps its event.
func (l *LedgerItem) HasEvent() bool { return len(l.Event) > 0 || l.PlainEvent != "" }

// SetEvent keeps doc as the item's event, packed ("" keeps none).
func (l *LedgerItem) SetEvent(doc string) { l.Event, l.PlainEvent = Pack([]byte(doc)), "" }

// DocJSON is the activity's document ("" when it has none).
func (a *ActivityItem) DocJSON() (string, error) {
	if len(a.Doc) > 0 {
		return a.Doc.Unpack()
	}
	return a.PlainDoc, nil
}

// SetDoc stores doc as the activity's document, packed.
func (a *ActivityItem) SetDoc(doc string) { a.Doc, a.PlainDoc = Pack([]byte(doc)), "" }
