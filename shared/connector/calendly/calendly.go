// Package calendly owns crmsync's Calendly (webhooks v2) connector: it authenticates deliveries
// with Calendly-Webhook-Signature (hex HMAC-SHA256 over "t.body" with a 3-minute tolerance) and
// maps invitee.created / invitee.canceled to meeting.scheduled / meeting.canceled events whose
// activity is the scheduled event (meeting:{scheduled_event.uri}), linking reschedules.
package calendly

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/identity"
)

// Name is the connector's source and route name.
const Name = "calendly"

// MappingVersion identifies the mapping this package applies.
const MappingVersion = "calendly/1"

// SecretSigningKey is the secret field holding the webhook signing key.
const SecretSigningKey = "signing_key"

// SecretAPIToken is the secret field holding the API token (used by the list API only).
const SecretAPIToken = "api_token"

// Tolerance is how far the signed timestamp may be from now, in either direction.
const Tolerance = 3 * time.Minute

// The Calendly events this connector maps; other events are quarantined as unusable.
const (
	EventInviteeCreated  = "invitee.created"
	EventInviteeCanceled = "invitee.canceled"
)

const headerSignature = "calendly-webhook-signature"

// mappedPayload lists the payload members the mapping uses.
var mappedPayload = map[string]bool{
	"uri": true, "email": true, "name": true, "first_name": true, "last_name": true,
	"status": true, "timezone": true, "text_reminder_number": true, "rescheduled": true,
	"old_invitee": true, "new_invitee": true, "questions_and_answers": true, "tracking": true,
	"scheduled_event": true, "cancellation": true, "created_at": true, "updated_at": true,
}

// IgnoredPayload lists payload members deliberately not mapped and not reported as unmapped:
// links and scheduling metadata with no CRM meaning.
var IgnoredPayload = []string{
	"cancel_url", "reschedule_url", "event", "routing_form_submission", "payment", "no_show",
	"reconfirmation", "invitee_scheduled_by", "scheduling_method",
}

var ignoredPayload = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range IgnoredPayload {
		m[k] = true
	}
	return m
}()

// trackingFields maps payload.tracking members to contact fields.
var trackingFields = map[string]string{
	"utm_source": "utm_source", "utm_medium": "utm_medium", "utm_campaign": "utm_campaign",
	"utm_term": "utm_term", "utm_content": "utm_content",
}

// Connector is the Calendly webhooks v2 connector.
type Connector struct {
	connector.NoHandshake // the vendor has no subscription handshake
}

// New returns the Calendly connector.
func New() *Connector { return &Connector{} }

var (
	_ connector.Connector = (*Connector)(nil)
	_ connector.Signer    = (*Connector)(nil)
)

// Name returns "calendly".
func (*Connector) Name() string { return Name }

// ContentTypes lists the media type Calendly sends.
func (*Connector) ContentTypes() []string { return []string{"application/json"} }

// Verify checks Calendly-Webhook-Signature (t=<unix>,v1=<hex>): v1 must equal
// hex(HMAC-SHA256(signing_key, t + "." + raw body)) for the current or previous key, and t must
// be within Tolerance of now in either direction.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, now time.Time) (connector.Verified, error) {
	h := strings.TrimSpace(req.Header(headerSignature))
	if h == "" {
		return connector.Verified{}, fmt.Errorf("%w: missing Calendly-Webhook-Signature", connector.ErrUnauthenticated)
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "t":
			ts = strings.TrimSpace(v)
		case "v1":
			if b, err := hex.DecodeString(strings.TrimSpace(v)); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	if ts == "" || len(sigs) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: malformed Calendly-Webhook-Signature", connector.ErrUnauthenticated)
	}
	sec64, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed signature timestamp", connector.ErrUnauthenticated)
	}
	if d := now.Sub(time.Unix(sec64, 0)); d > Tolerance || d < -Tolerance {
		return connector.Verified{}, fmt.Errorf("%w: signature timestamp outside tolerance", connector.ErrUnauthenticated)
	}
	keys := sec.Values(SecretSigningKey)
	if len(keys) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no %s configured", connector.ErrUnauthenticated, SecretSigningKey)
	}
	for _, k := range keys {
		want := mac(k, ts, req.Body)
		for _, s := range sigs {
			if hmac.Equal(want, s) {
				return connector.Verified{}, nil
			}
		}
	}
	return connector.Verified{}, fmt.Errorf("%w: Calendly-Webhook-Signature does not match", connector.ErrUnauthenticated)
}

// Sign sets Calendly-Webhook-Signature as Calendly would, with t = now and sec.Current's
// signing_key.
func (*Connector) Sign(req *connector.Request, sec connector.Secret, now time.Time) error {
	k := sec.Get(SecretSigningKey)
	if k == "" {
		return fmt.Errorf("calendly: sign: no %s in current secret", SecretSigningKey)
	}
	if req.Headers == nil {
		req.Headers = map[string]string{}
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Headers[headerSignature] = "t=" + ts + ",v1=" + hex.EncodeToString(mac(k, ts, req.Body))
	return nil
}

func mac(key, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(ts))
	h.Write([]byte("."))
	h.Write(body)
	return h.Sum(nil)
}

type delivery struct {
	Event     string          `json:"event"`
	CreatedAt string          `json:"created_at"`
	Payload   json.RawMessage `json:"payload"`
}

type payload struct {
	URI                 string `json:"uri"`
	Email               string `json:"email"`
	Name                string `json:"name"`
	FirstName           string `json:"first_name"`
	LastName            string `json:"last_name"`
	Status              string `json:"status"`
	Timezone            string `json:"timezone"`
	TextReminderNumber  string `json:"text_reminder_number"`
	Rescheduled         bool   `json:"rescheduled"`
	OldInvitee          string `json:"old_invitee"`
	NewInvitee          string `json:"new_invitee"`
	QuestionsAndAnswers []struct {
		Question string `json:"question"`
		Answer   string `json:"answer"`
	} `json:"questions_and_answers"`
	Tracking       map[string]any `json:"tracking"`
	ScheduledEvent *struct {
		URI              string `json:"uri"`
		Name             string `json:"name"`
		StartTime        string `json:"start_time"`
		EndTime          string `json:"end_time"`
		EventMemberships []struct {
			User      string `json:"user"`
			UserEmail string `json:"user_email"`
			UserName  string `json:"user_name"`
		} `json:"event_memberships"`
	} `json:"scheduled_event"`
	Cancellation *struct {
		CanceledBy   string `json:"canceled_by"`
		Reason       string `json:"reason"`
		CancelerType string `json:"canceler_type"`
	} `json:"cancellation"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
}

// Parse maps an invitee.created or invitee.canceled delivery to one meeting event.
func (*Connector) Parse(req *connector.Request, _ connector.Secret) (*connector.Parsed, error) {
	var d delivery
	if err := json.Unmarshal(req.Body, &d); err != nil {
		return nil, fmt.Errorf("%w: malformed JSON: %v", connector.ErrUnusable, err)
	}
	var kind canonical.Kind
	var status string
	switch d.Event {
	case EventInviteeCreated:
		kind, status = canonical.KindMeetingScheduled, "scheduled"
	case EventInviteeCanceled:
		kind, status = canonical.KindMeetingCanceled, "canceled"
	default:
		return nil, fmt.Errorf("%w: unmapped Calendly event %q", connector.ErrUnusable, d.Event)
	}
	var p payload
	if len(d.Payload) == 0 || json.Unmarshal(d.Payload, &p) != nil {
		return nil, fmt.Errorf("%w: malformed payload", connector.ErrUnusable)
	}
	if p.URI == "" {
		return nil, fmt.Errorf("%w: no payload.uri", connector.ErrUnusable)
	}
	if p.ScheduledEvent == nil || p.ScheduledEvent.URI == "" {
		return nil, fmt.Errorf("%w: no payload.scheduled_event.uri", connector.ErrUnusable)
	}

	// Event time: when the invitee was created, or (cancel) last updated; else the delivery's
	// created_at.
	timeCandidates := []string{p.CreatedAt, d.CreatedAt}
	if kind == canonical.KindMeetingCanceled {
		timeCandidates = []string{p.UpdatedAt, d.CreatedAt}
	}
	var occurred time.Time
	for _, s := range timeCandidates {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			occurred = t.UTC()
			break
		}
	}
	if occurred.IsZero() {
		// Calendly gave no usable time for this delivery; the receipt time is the best available.
		occurred = req.ReceivedAt.UTC()
	}
	if occurred.IsZero() {
		return nil, fmt.Errorf("%w: no event time", connector.ErrUnusable)
	}

	ev := canonical.Event{
		Key:            "calendly:" + d.Event + ":" + p.URI,
		Source:         Name,
		Kind:           kind,
		OccurredAt:     occurred,
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(req.Body),
		ExternalIDs:    map[string]string{"invitee_uri": p.URI, "scheduled_event_uri": p.ScheduledEvent.URI},
	}
	contact := map[string]string{"last_activity_at": occurred.Format(time.RFC3339)}
	var emails, phones []string
	if e, ok := identity.Email(p.Email); ok {
		emails = []string{e}
		contact["email"] = e
	}
	if ph, ok := identity.Phone(p.TextReminderNumber); ok {
		phones = []string{ph}
		contact["phone"] = ph
	}
	ev.Subject = canonical.Person{Emails: emails, Phones: phones, Name: strings.TrimSpace(p.Name)}
	ev.GroupKey = identity.GroupKey(emails, phones, Name, p.URI)
	setIf(contact, "first_name", p.FirstName)
	setIf(contact, "last_name", p.LastName)
	setIf(contact, "timezone", p.Timezone)

	var unmapped []string
	trackingKeys := make([]string, 0, len(p.Tracking))
	for k := range p.Tracking {
		trackingKeys = append(trackingKeys, k)
	}
	sort.Strings(trackingKeys)
	for _, k := range trackingKeys {
		s, ok := p.Tracking[k].(string)
		if !ok || strings.TrimSpace(s) == "" {
			continue // null or empty tracking values carry nothing
		}
		if f, ok := trackingFields[k]; ok {
			contact[f] = strings.TrimSpace(s)
		} else {
			unmapped = append(unmapped, "payload.tracking."+k)
		}
	}
	for _, qa := range p.QuestionsAndAnswers {
		unmapped = append(unmapped, "payload.questions_and_answers["+qa.Question+"]")
	}
	var members map[string]json.RawMessage
	_ = json.Unmarshal(d.Payload, &members) // already decoded once as a struct
	for k, v := range members {
		if !mappedPayload[k] && !ignoredPayload[k] && string(v) != "null" {
			unmapped = append(unmapped, "payload."+k)
		}
	}
	ev.Unmapped = sortedUnique(unmapped)
	ev.Fields = map[string]map[string]string{"contact": contact}

	se := p.ScheduledEvent
	act := &canonical.Activity{
		ID:      "meeting:" + se.URI,
		Type:    "meeting",
		Status:  status,
		Subject: se.Name,
		Attrs:   map[string]string{"invitee": p.URI},
	}
	if t, err := time.Parse(time.RFC3339Nano, se.StartTime); err == nil {
		t = t.UTC()
		act.StartAt = &t
	}
	if t, err := time.Parse(time.RFC3339Nano, se.EndTime); err == nil {
		t = t.UTC()
		act.EndAt = &t
	}
	act.Participants = append(act.Participants, canonical.Participant{Role: "invitee", Email: firstOr(emails, p.Email), Name: p.Name})
	for _, m := range se.EventMemberships {
		email := m.UserEmail
		if e, ok := identity.Email(email); ok {
			email = e
		}
		act.Participants = append(act.Participants, canonical.Participant{Role: "host", Email: email, Name: m.UserName})
		if ev.Actor == nil && (email != "" || m.User != "") {
			ev.Actor = &canonical.Actor{ID: m.User, Email: email, Name: m.UserName, Role: "host", Type: "user"}
		}
	}
	if kind == canonical.KindMeetingScheduled && p.OldInvitee != "" {
		act.RelatesTo = "invitee:" + p.OldInvitee
		act.Attrs["old_invitee"] = p.OldInvitee
	}
	if p.NewInvitee != "" {
		act.Attrs["new_invitee"] = p.NewInvitee
	}
	if p.Rescheduled {
		act.Attrs["rescheduled"] = "true"
	}
	if c := p.Cancellation; c != nil && c.CancelerType != "" {
		act.Attrs["canceler_type"] = c.CancelerType
	}
	ev.Activity = act
	return &connector.Parsed{Events: []canonical.Event{ev}}, nil
}

func setIf(m map[string]string, k, v string) {
	if v = strings.TrimSpace(v); v != "" {
		m[k] = v
	}
}

func firstOr(xs []string, def string) string {
	if len(xs) > 0 {
		return xs[0]
	}
	return strings.TrimSpace(def)
}

func sortedUnique(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	sort.Strings(in)
	out := in[:1]
	for _, s := range in[1:] {
		if s != out[len(out)-1] {
			out = append(out, s)
		}
	}
	return out
}
