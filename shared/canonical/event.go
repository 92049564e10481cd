// Package canonical owns crmsync's canonical event: the one shape every connector produces and
// the worker consumes, with the rules that make its keys deterministic (the same vendor delivery
// always yields the same key, group key, deduplication id and group id).
package canonical

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Kind names what happened in the world.
type Kind string

// The kinds of canonical event.
const (
	KindLeadSubmitted    Kind = "lead.submitted"
	KindCallStatus       Kind = "call.status"
	KindMeetingScheduled Kind = "meeting.scheduled"
	KindMeetingCanceled  Kind = "meeting.canceled"
	KindEmailReceived    Kind = "email.received"
	KindEmailSent        Kind = "email.sent"
	KindEmailEvent       Kind = "email.event"
	KindCRMChange        Kind = "crm.change"
	KindRepair           Kind = "repair"
	// KindNotification is a thin vendor notification (Meta leadgen, Graph change) that carries no
	// personal data; the worker hydrates it through the connector into one of the kinds above.
	KindNotification Kind = "notification"
)

// Person is the external person an event is about (the lead, the caller, the invitee).
type Person struct {
	Emails []string `json:"emails,omitempty"`
	Phones []string `json:"phones,omitempty"`
	Name   string   `json:"name,omitempty"`
}

// Actor is the rep, user or system that acted.
type Actor struct {
	ID    string `json:"id,omitempty"`
	Email string `json:"email,omitempty"`
	Name  string `json:"name,omitempty"`
	Role  string `json:"role,omitempty"`
	Type  string `json:"type,omitempty"` // user, system, vendor
}

// Participant is one party of an activity.
type Participant struct {
	Role  string `json:"role"` // from, to, cc, organizer, attendee, invitee, host, caller, callee
	Email string `json:"email,omitempty"`
	Phone string `json:"phone,omitempty"`
	Name  string `json:"name,omitempty"`
}

// Activity is the timeline part of an event: one real-world interaction, identified by ID so
// that every update about it (call status callbacks, the same email seen in two mailboxes)
// merges into one timeline entry.
type Activity struct {
	ID           string            `json:"id"`   // e.g. call:CA..., email:<message-id>, meeting:<uri>
	Type         string            `json:"type"` // call, meeting, email, form
	Status       string            `json:"status,omitempty"`
	Direction    string            `json:"direction,omitempty"`
	Subject      string            `json:"subject,omitempty"`
	StartAt      *time.Time        `json:"start_at,omitempty"`
	EndAt        *time.Time        `json:"end_at,omitempty"`
	DurationSec  int               `json:"duration_sec,omitempty"`
	Participants []Participant     `json:"participants,omitempty"`
	RelatesTo    string            `json:"relates_to,omitempty"` // the activity this one updates or replaces (reschedule, email event)
	DealID       string            `json:"deal_id,omitempty"`    // an explicit deal link, when the source gives one
	Attrs        map[string]string `json:"attrs,omitempty"`
}

// HydrateRef tells the worker what to fetch for a thin notification.
type HydrateRef struct {
	Object   string `json:"object"`   // lead, message, event
	Resource string `json:"resource"` // vendor id or path, e.g. a leadgen id or users/{id}/messages/{id}
	Change   string `json:"change,omitempty"`
}

// Event is crmsync's canonical event.
type Event struct {
	Key            string                       `json:"key"`
	Source         string                       `json:"source"`
	Kind           Kind                         `json:"kind"`
	OccurredAt     time.Time                    `json:"occurred_at"`
	ReceivedAt     time.Time                    `json:"received_at"`
	GroupKey       string                       `json:"group_key"`
	Subject        Person                       `json:"subject"`
	Actor          *Actor                       `json:"actor,omitempty"`
	Fields         map[string]map[string]string `json:"fields,omitempty"` // entity -> field -> proposed value
	Activity       *Activity                    `json:"activity,omitempty"`
	ExternalIDs    map[string]string            `json:"external_ids,omitempty"`
	MappingVersion string                       `json:"mapping_version"`
	PayloadHash    string                       `json:"payload_hash"`
	Hydrate        *HydrateRef                  `json:"hydrate,omitempty"`
	// Unmapped lists the vendor field paths this event carried that no mapping uses; the
	// mapping review counts them per connector.
	Unmapped []string `json:"unmapped,omitempty"`
}

// ErrInvalid reports an event that breaks the canonical rules.
var ErrInvalid = errors.New("invalid canonical event")

// Validate checks the fields every event must carry.
func (e *Event) Validate() error {
	switch {
	case e.Key == "":
		return fmt.Errorf("%w: empty key", ErrInvalid)
	case e.Source == "":
		return fmt.Errorf("%w: %s: empty source", ErrInvalid, e.Key)
	case e.Kind == "":
		return fmt.Errorf("%w: %s: empty kind", ErrInvalid, e.Key)
	case e.GroupKey == "":
		return fmt.Errorf("%w: %s: empty group key", ErrInvalid, e.Key)
	case e.OccurredAt.IsZero():
		return fmt.Errorf("%w: %s: no occurred_at", ErrInvalid, e.Key)
	case e.PayloadHash == "":
		return fmt.Errorf("%w: %s: no payload hash", ErrInvalid, e.Key)
	}
	return nil
}

// DedupID is the SQS MessageDeduplicationId for the event: hex sha256 of its key.
func (e *Event) DedupID() string { return HashHex(e.Key) }

// GroupID is the SQS MessageGroupId for the event: hex sha256 of its group key (SQS allows 128
// characters; the hash keeps personal data out of queue metadata).
func (e *Event) GroupID() string { return HashHex(e.GroupKey) }

// HashHex returns the lower-case hex sha256 of s.
func HashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// PayloadHash returns the lower-case hex sha256 of raw payload bytes.
func PayloadHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Marshal encodes the event as the SQS message body.
func (e *Event) Marshal() ([]byte, error) { return json.Marshal(e) }

// Unmarshal decodes and validates an SQS message body.
func Unmarshal(b []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}
