// Package generic owns crmsync's generic webhook connector (route /webhooks/generic): deliveries
// signed with Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature) whose body is
// crmsync's own versioned lead/activity schema, crmsync.generic/v1 (docs/connectors/generic.md,
// docs/connectors/generic.schema.json). It verifies, parses and signs such deliveries; it does
// no I/O.
package generic

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/identity"
)

const (
	// Name is the connector's route and source name.
	Name = "generic"
	// MappingVersion identifies the mapping this package applies.
	MappingVersion = "generic/1"
	// SchemaV1 is the only body schema version this package accepts.
	SchemaV1 = "crmsync.generic/v1"
	// Tolerance is how far webhook-timestamp may be from now, in either direction.
	Tolerance = 5 * time.Minute
	// SecretField is the secret's field holding the Standard Webhooks key (whsec_<base64>).
	SecretField = "signing_key"

	headerID        = "webhook-id"
	headerTimestamp = "webhook-timestamp"
	headerSignature = "webhook-signature"
	secretPrefix    = "whsec_"
)

// KindNote is the kind given to "note" activities. canonical has no note kind yet; this value
// is provisional until the canonical package defines one.
const KindNote canonical.Kind = "note"

// Connector is the generic (Standard Webhooks) connector. The zero value is ready to use.
type Connector struct {
	connector.NoHandshake // the vendor has no subscription handshake
}

// New returns the generic connector.
func New() *Connector { return &Connector{} }

var (
	_ connector.Connector = (*Connector)(nil)
	_ connector.Signer    = (*Connector)(nil)
)

// Name returns "generic".
func (*Connector) Name() string { return Name }

// ContentTypes returns application/json.
func (*Connector) ContentTypes() []string { return []string{"application/json"} }

// Verify checks the Standard Webhooks signature over webhook-id "." webhook-timestamp "." raw
// body with every signing_key (current, then previous), and that the timestamp is within
// Tolerance of now in either direction.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, now time.Time) (connector.Verified, error) {
	id := req.Header(headerID)
	if id == "" {
		return connector.Verified{}, fmt.Errorf("%w: missing webhook-id", connector.ErrUnauthenticated)
	}
	tsRaw := req.Header(headerTimestamp)
	if tsRaw == "" {
		return connector.Verified{}, fmt.Errorf("%w: missing webhook-timestamp", connector.ErrUnauthenticated)
	}
	sigs := req.Header(headerSignature)
	if sigs == "" {
		return connector.Verified{}, fmt.Errorf("%w: missing webhook-signature", connector.ErrUnauthenticated)
	}
	ts, err := strconv.ParseInt(strings.TrimSpace(tsRaw), 10, 64)
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed webhook-timestamp", connector.ErrUnauthenticated)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > Tolerance || d < -Tolerance {
		return connector.Verified{}, fmt.Errorf("%w: webhook-timestamp outside tolerance", connector.ErrUnauthenticated)
	}
	keys := decodeKeys(sec.Values(SecretField))
	if len(keys) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no usable signing_key configured", connector.ErrUnauthenticated)
	}
	var given [][]byte
	// The header holds space-separated "v1,<base64>" entries; other versions are skipped.
	for _, entry := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(sig); err == nil {
			given = append(given, b)
		}
	}
	if len(given) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no v1 signature", connector.ErrUnauthenticated)
	}
	for _, key := range keys {
		want := sign(key, id, strconv.FormatInt(ts, 10), req.Body)
		for _, g := range given {
			if connector.Equal(want, g) {
				return connector.Verified{}, nil
			}
		}
	}
	return connector.Verified{}, fmt.Errorf("%w: signature mismatch", connector.ErrUnauthenticated)
}

// Sign sets webhook-timestamp (now) and webhook-signature from sec.Current's signing_key, as a
// Standard Webhooks sender would. An existing webhook-id header is kept; otherwise one is derived
// from the body's hash, so signing the same body twice yields the same id.
func (*Connector) Sign(req *connector.Request, sec connector.Secret, now time.Time) error {
	keys := decodeKeys([]string{sec.Get(SecretField)})
	if len(keys) == 0 {
		return errors.New("generic: no usable current signing_key")
	}
	if req.Headers == nil {
		req.Headers = map[string]string{}
	}
	id := req.Headers[headerID]
	if id == "" {
		id = "msg_" + canonical.PayloadHash(req.Body)[:32]
		req.Headers[headerID] = id
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Headers[headerTimestamp] = ts
	req.Headers[headerSignature] = "v1," + base64.StdEncoding.EncodeToString(sign(keys[0], id, ts, req.Body))
	return nil
}

func sign(key []byte, id, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// decodeKeys turns whsec_<base64> secrets into keys, skipping values that do not decode.
func decodeKeys(vals []string) [][]byte {
	var out [][]byte
	for _, v := range vals {
		b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(v), secretPrefix))
		if err == nil && len(b) > 0 {
			out = append(out, b)
		}
	}
	return out
}

// Body is the crmsync.generic/v1 delivery body.
type Body struct {
	Schema      string       `json:"schema"`
	Type        string       `json:"type"` // lead | activity
	OccurredAt  string       `json:"occurred_at"`
	Person      *Person      `json:"person,omitempty"`
	Attribution *Attribution `json:"attribution,omitempty"`
	Activity    *Activity    `json:"activity,omitempty"`
	ExternalID  string       `json:"external_id,omitempty"`
}

// Person is the person a generic delivery is about.
type Person struct {
	Emails    []string `json:"emails,omitempty"`
	Phones    []string `json:"phones,omitempty"`
	Name      string   `json:"name,omitempty"`
	FirstName string   `json:"first_name,omitempty"`
	LastName  string   `json:"last_name,omitempty"`
	Company   string   `json:"company,omitempty"`
	JobTitle  string   `json:"job_title,omitempty"`
}

// Attribution carries marketing attribution for a lead.
type Attribution struct {
	LeadSource  string `json:"lead_source,omitempty"`
	Campaign    string `json:"campaign,omitempty"`
	UTMSource   string `json:"utm_source,omitempty"`
	UTMMedium   string `json:"utm_medium,omitempty"`
	UTMCampaign string `json:"utm_campaign,omitempty"`
	UTMTerm     string `json:"utm_term,omitempty"`
	UTMContent  string `json:"utm_content,omitempty"`
}

// Activity is a timeline interaction reported through the generic route.
type Activity struct {
	ID          string `json:"id"`
	Type        string `json:"type"` // call | meeting | email | note
	Status      string `json:"status,omitempty"`
	Subject     string `json:"subject,omitempty"`
	Direction   string `json:"direction,omitempty"` // inbound | outbound
	StartAt     string `json:"start_at,omitempty"`
	EndAt       string `json:"end_at,omitempty"`
	DurationSec int    `json:"duration_sec,omitempty"`
	DealID      string `json:"deal_id,omitempty"`
}

// Known property names per object, for the Unmapped list.
var known = map[string]map[string]bool{
	"":            set("schema", "type", "occurred_at", "person", "attribution", "activity", "external_id"),
	"person":      set("emails", "phones", "name", "first_name", "last_name", "company", "job_title"),
	"attribution": set("lead_source", "campaign", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"),
	"activity":    set("id", "type", "status", "subject", "direction", "start_at", "end_at", "duration_sec", "deal_id"),
}

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func unusable(format string, a ...any) error {
	return fmt.Errorf("%w: generic: "+format, append([]any{connector.ErrUnusable}, a...)...)
}

// Parse maps one crmsync.generic/v1 delivery to one canonical event keyed generic:{webhook-id}.
func (*Connector) Parse(req *connector.Request, _ connector.Secret) (*connector.Parsed, error) {
	id := req.Header(headerID)
	if id == "" {
		return nil, unusable("missing webhook-id")
	}
	body, unmapped, err := readBody(req.Body)
	if err != nil {
		return nil, err
	}
	occurred, err := time.Parse(time.RFC3339, body.OccurredAt)
	if err != nil {
		return nil, unusable("occurred_at missing or not RFC3339")
	}

	event := newEvent(id, body, occurred, req.Body)
	contact := map[string]string{}
	subject, personUnmapped := mapPerson(body.Person, contact)
	event.Subject = subject
	event.Unmapped = append(unmapped, personUnmapped...)
	mapAttribution(body.Attribution, contact)

	var fallback string
	switch body.Type {
	case "lead":
		fallback, err = mapLead(&event, body, contact, id)
	case "activity":
		fallback, err = mapActivityEvent(&event, body.Activity, contact)
	default:
		err = unusable("type must be lead or activity")
	}
	if err != nil {
		return nil, err
	}
	if len(contact) > 0 {
		event.Fields = map[string]map[string]string{"contact": contact}
	}
	event.GroupKey = identity.GroupKey(event.Subject.Emails, event.Subject.Phones, Name, fallback)
	event.Unmapped = sortedUnique(event.Unmapped)
	return &connector.Parsed{Events: []canonical.Event{event}}, nil
}

// readBody decodes a crmsync.generic/v1 body and lists the property paths the v1 mapping does
// not know.
func readBody(raw []byte) (*Body, []string, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil || members == nil {
		return nil, nil, unusable("body is not a JSON object")
	}
	var schema string
	if err := json.Unmarshal(members["schema"], &schema); err != nil || schema != SchemaV1 {
		return nil, nil, unusable("unknown schema version")
	}
	var body Body
	decoder := json.NewDecoder(bytes.NewReader(raw))
	if err := decoder.Decode(&body); err != nil {
		return nil, nil, unusable("body does not match %s", SchemaV1)
	}
	return &body, unknownKeys(members), nil
}

// newEvent returns the event keyed generic:{webhook-id}, without kind, subject or fields.
func newEvent(id string, body *Body, occurred time.Time, raw []byte) canonical.Event {
	event := canonical.Event{
		Key:            "generic:" + id,
		Source:         Name,
		OccurredAt:     occurred.UTC(),
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(raw),
		ExternalIDs:    map[string]string{"webhook_id": id},
	}
	if body.ExternalID != "" {
		event.ExternalIDs["external_id"] = body.ExternalID
	}
	return event
}

// mapPerson returns the person a delivery is about (valid emails and phones, normalised and
// deduplicated, and a name) and fills contact from it; it also lists the emails and phones that
// did not normalise. A nil person maps to nothing.
func mapPerson(person *Person, contact map[string]string) (canonical.Person, []string) {
	var subject canonical.Person
	if person == nil {
		return subject, nil
	}
	var unmapped []string
	for i, email := range person.Emails {
		if normalised, ok := identity.Email(email); ok {
			subject.Emails = appendUnique(subject.Emails, normalised)
		} else {
			unmapped = append(unmapped, fmt.Sprintf("person.emails[%d]", i))
		}
	}
	for i, phone := range person.Phones {
		if normalised, ok := identity.Phone(phone); ok {
			subject.Phones = appendUnique(subject.Phones, normalised)
		} else {
			unmapped = append(unmapped, fmt.Sprintf("person.phones[%d]", i))
		}
	}
	subject.Name = strings.TrimSpace(person.Name)
	if subject.Name == "" {
		subject.Name = strings.TrimSpace(person.FirstName + " " + person.LastName)
	}
	put(contact, "first_name", person.FirstName)
	put(contact, "last_name", person.LastName)
	put(contact, "company", person.Company)
	put(contact, "job_title", person.JobTitle)
	if len(subject.Emails) > 0 {
		contact["email"] = subject.Emails[0]
	}
	if len(subject.Phones) > 0 {
		contact["phone"] = subject.Phones[0]
	}
	return subject, unmapped
}

// mapAttribution copies a delivery's non-blank attribution into contact; nil maps to nothing.
func mapAttribution(attribution *Attribution, contact map[string]string) {
	if attribution == nil {
		return
	}
	put(contact, "lead_source", attribution.LeadSource)
	put(contact, "campaign", attribution.Campaign)
	put(contact, "utm_source", attribution.UTMSource)
	put(contact, "utm_medium", attribution.UTMMedium)
	put(contact, "utm_campaign", attribution.UTMCampaign)
	put(contact, "utm_term", attribution.UTMTerm)
	put(contact, "utm_content", attribution.UTMContent)
}

// mapLead makes event a lead.submitted whose activity is the form submission
// (form:{external_id, else webhook-id}) and returns that form id as the group-key fallback. A
// lead needs a valid email or phone; an activity sent with it is reported as unmapped.
func mapLead(event *canonical.Event, body *Body, contact map[string]string, id string) (string, error) {
	if len(event.Subject.Emails) == 0 && len(event.Subject.Phones) == 0 {
		return "", unusable("lead without a valid email or phone")
	}
	if body.Activity != nil {
		event.Unmapped = append(event.Unmapped, "activity")
	}
	event.Kind = canonical.KindLeadSubmitted
	if contact["lead_source"] == "" {
		contact["lead_source"] = Name
	}
	formID := body.ExternalID
	if formID == "" {
		formID = id
	}
	event.Activity = &canonical.Activity{
		ID:           "form:" + formID,
		Type:         "form",
		Status:       "submitted",
		Participants: participants(event.Subject, "from"),
	}
	return formID, nil
}

// mapActivityEvent gives event the kind and activity of a reported activity, with the subject
// as participant in the role the activity's type and direction imply, and returns the activity
// id as the group-key fallback.
func mapActivityEvent(event *canonical.Event, reported *Activity, contact map[string]string) (string, error) {
	if reported == nil || strings.TrimSpace(reported.ID) == "" {
		return "", unusable("activity.id missing")
	}
	activity, kind, err := mapActivity(reported)
	if err != nil {
		return "", err
	}
	event.Kind = kind
	activity.Participants = participants(event.Subject, role(reported.Type, reported.Direction))
	event.Activity = activity
	contact["last_activity_at"] = event.OccurredAt.Format(time.RFC3339)
	return activity.ID, nil
}

// mapActivity converts a reported activity to a canonical one (normalised status, times and a
// typed id such as call:{id}) and returns the event kind it implies.
func mapActivity(reported *Activity) (*canonical.Activity, canonical.Kind, error) {
	activity := &canonical.Activity{
		Type:        reported.Type,
		Status:      strings.ToLower(strings.TrimSpace(reported.Status)),
		Subject:     reported.Subject,
		Direction:   reported.Direction,
		DurationSec: reported.DurationSec,
		DealID:      reported.DealID,
	}
	if reported.DurationSec < 0 {
		return nil, "", unusable("activity.duration_sec negative")
	}
	if reported.Direction != "" && reported.Direction != "inbound" && reported.Direction != "outbound" {
		return nil, "", unusable("activity.direction must be inbound or outbound")
	}
	for _, stamp := range []struct {
		name string
		in   string
		out  **time.Time
	}{{"start_at", reported.StartAt, &activity.StartAt}, {"end_at", reported.EndAt, &activity.EndAt}} {
		if stamp.in == "" {
			continue
		}
		parsed, err := time.Parse(time.RFC3339, stamp.in)
		if err != nil {
			return nil, "", unusable("activity.%s not RFC3339", stamp.name)
		}
		parsed = parsed.UTC()
		*stamp.out = &parsed
	}
	id := strings.TrimSpace(reported.ID)
	var kind canonical.Kind
	switch reported.Type {
	case "call":
		kind = canonical.KindCallStatus
	case "meeting":
		kind = canonical.KindMeetingScheduled
		if activity.Status == "canceled" || activity.Status == "cancelled" {
			kind, activity.Status = canonical.KindMeetingCanceled, "canceled"
		} else if activity.Status == "" {
			activity.Status = "scheduled"
		}
	case "email":
		// An email id is its Message-Id, normalised as every email source normalises it, so
		// the same message reported here and by Graph or Mailgun is one activity.
		id = strings.ToLower(strings.Trim(strings.TrimPrefix(id, "email:"), "<> "))
		if id == "" {
			return nil, "", unusable("activity.id missing")
		}
		switch reported.Direction {
		case "inbound":
			kind = canonical.KindEmailReceived
		case "outbound":
			kind = canonical.KindEmailSent
		default:
			kind = canonical.KindEmailEvent
		}
	case "note":
		kind = KindNote
	default:
		return nil, "", unusable("activity.type must be call, meeting, email or note")
	}
	if !strings.HasPrefix(id, reported.Type+":") {
		id = reported.Type + ":" + id
	}
	activity.ID = id
	return activity, kind, nil
}

func role(typ, dir string) string {
	switch typ {
	case "call":
		if dir == "outbound" {
			return "callee"
		}
		return "caller"
	case "email":
		if dir == "outbound" {
			return "to"
		}
		return "from"
	case "meeting":
		return "attendee"
	}
	return "attendee"
}

func participants(p canonical.Person, role string) []canonical.Participant {
	var out []canonical.Participant
	for _, e := range p.Emails {
		out = append(out, canonical.Participant{Role: role, Email: e, Name: p.Name})
	}
	for _, ph := range p.Phones {
		out = append(out, canonical.Participant{Role: role, Phone: ph, Name: p.Name})
	}
	return out
}

// unknownKeys lists the property paths of the body that the v1 mapping does not know.
func unknownKeys(top map[string]json.RawMessage) []string {
	var out []string
	for k, v := range top {
		if !known[""][k] {
			out = append(out, k)
			continue
		}
		if sub, ok := known[k]; ok && k != "" {
			var m map[string]json.RawMessage
			if json.Unmarshal(v, &m) != nil {
				continue
			}
			for sk := range m {
				if !sub[sk] {
					out = append(out, k+"."+sk)
				}
			}
		}
	}
	return out
}

func put(m map[string]string, k, v string) {
	if v = strings.TrimSpace(v); v != "" {
		m[k] = v
	}
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	sort.Strings(s)
	out := s[:1]
	for _, v := range s[1:] {
		if v != out[len(out)-1] {
			out = append(out, v)
		}
	}
	return out
}
