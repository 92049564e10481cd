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
	var envelope delivery
	if err := json.Unmarshal(req.Body, &envelope); err != nil {
		return nil, fmt.Errorf("%w: malformed JSON: %v", connector.ErrUnusable, err)
	}
	kind, status, err := mapEventType(envelope.Event)
	if err != nil {
		return nil, err
	}
	invitee, err := readPayload(envelope.Payload)
	if err != nil {
		return nil, err
	}
	occurred, err := occurredAt(kind, invitee, envelope, req.ReceivedAt)
	if err != nil {
		return nil, err
	}

	contact, subject := mapInvitee(invitee, occurred)
	unmapped := mapTracking(contact, invitee.Tracking)
	unmapped = append(unmapped, unmappedPayload(envelope.Payload, invitee)...)
	activity, actor := buildActivity(kind, status, invitee, subject.Emails)
	event := canonical.Event{
		Key:            "calendly:" + envelope.Event + ":" + invitee.URI,
		Source:         Name,
		Kind:           kind,
		OccurredAt:     occurred,
		GroupKey:       identity.GroupKey(subject.Emails, subject.Phones, Name, invitee.URI),
		Subject:        subject,
		Actor:          actor,
		Fields:         map[string]map[string]string{"contact": contact},
		Activity:       activity,
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(req.Body),
		ExternalIDs:    map[string]string{"invitee_uri": invitee.URI, "scheduled_event_uri": invitee.ScheduledEvent.URI},
		Unmapped:       sortedUnique(unmapped),
	}
	return &connector.Parsed{Events: []canonical.Event{event}}, nil
}

// mapEventType returns the event kind and activity status of a mapped Calendly event.
func mapEventType(event string) (canonical.Kind, string, error) {
	switch event {
	case EventInviteeCreated:
		return canonical.KindMeetingScheduled, "scheduled", nil
	case EventInviteeCanceled:
		return canonical.KindMeetingCanceled, "canceled", nil
	}
	return "", "", fmt.Errorf("%w: unmapped Calendly event %q", connector.ErrUnusable, event)
}

// readPayload decodes the invitee payload and checks it names the invitee and its scheduled
// event.
func readPayload(raw json.RawMessage) (*payload, error) {
	var invitee payload
	if len(raw) == 0 || json.Unmarshal(raw, &invitee) != nil {
		return nil, fmt.Errorf("%w: malformed payload", connector.ErrUnusable)
	}
	if invitee.URI == "" {
		return nil, fmt.Errorf("%w: no payload.uri", connector.ErrUnusable)
	}
	if invitee.ScheduledEvent == nil || invitee.ScheduledEvent.URI == "" {
		return nil, fmt.Errorf("%w: no payload.scheduled_event.uri", connector.ErrUnusable)
	}
	return &invitee, nil
}

// occurredAt returns the event time: when the invitee was created, or (cancel) last updated;
// else the delivery's created_at; else when crmsync received the delivery.
func occurredAt(kind canonical.Kind, invitee *payload, envelope delivery, receivedAt time.Time) (time.Time, error) {
	timeCandidates := []string{invitee.CreatedAt, envelope.CreatedAt}
	if kind == canonical.KindMeetingCanceled {
		timeCandidates = []string{invitee.UpdatedAt, envelope.CreatedAt}
	}
	var occurred time.Time
	for _, text := range timeCandidates {
		if parsed, err := time.Parse(time.RFC3339Nano, text); err == nil {
			occurred = parsed.UTC()
			break
		}
	}
	if occurred.IsZero() {
		// Calendly gave no usable time for this delivery; the receipt time is the best available.
		occurred = receivedAt.UTC()
	}
	if occurred.IsZero() {
		return time.Time{}, fmt.Errorf("%w: no event time", connector.ErrUnusable)
	}
	return occurred, nil
}

// mapInvitee returns the invitee's contact fields and the person the event is about.
func mapInvitee(invitee *payload, occurred time.Time) (map[string]string, canonical.Person) {
	contact := map[string]string{"last_activity_at": occurred.Format(time.RFC3339)}
	var emails, phones []string
	if email, ok := identity.Email(invitee.Email); ok {
		emails = []string{email}
		contact["email"] = email
	}
	if phone, ok := identity.Phone(invitee.TextReminderNumber); ok {
		phones = []string{phone}
		contact["phone"] = phone
	}
	setIf(contact, "first_name", invitee.FirstName)
	setIf(contact, "last_name", invitee.LastName)
	setIf(contact, "timezone", invitee.Timezone)
	return contact, canonical.Person{Emails: emails, Phones: phones, Name: strings.TrimSpace(invitee.Name)}
}

// mapTracking copies the UTM members of payload.tracking into contact and returns the paths of
// the other non-empty tracking members, which nothing maps.
func mapTracking(contact map[string]string, tracking map[string]any) []string {
	var unmapped []string
	trackingKeys := make([]string, 0, len(tracking))
	for key := range tracking {
		trackingKeys = append(trackingKeys, key)
	}
	sort.Strings(trackingKeys)
	for _, key := range trackingKeys {
		value, ok := tracking[key].(string)
		if !ok || strings.TrimSpace(value) == "" {
			continue // null or empty tracking values carry nothing
		}
		if field, ok := trackingFields[key]; ok {
			contact[field] = strings.TrimSpace(value)
		} else {
			unmapped = append(unmapped, "payload.tracking."+key)
		}
	}
	return unmapped
}

// unmappedPayload returns the paths of the payload the mapping does not use: every question
// answered, and every non-null member neither mapped nor deliberately ignored.
func unmappedPayload(raw json.RawMessage, invitee *payload) []string {
	var unmapped []string
	for _, questionAndAnswer := range invitee.QuestionsAndAnswers {
		unmapped = append(unmapped, "payload.questions_and_answers["+questionAndAnswer.Question+"]")
	}
	var members map[string]json.RawMessage
	_ = json.Unmarshal(raw, &members) // already decoded once as a struct
	for key, value := range members {
		if !mappedPayload[key] && !ignoredPayload[key] && string(value) != "null" {
			unmapped = append(unmapped, "payload."+key)
		}
	}
	return unmapped
}

// buildActivity returns the meeting activity (meeting:{scheduled_event.uri}) with the invitee
// and every host as participants, and the first host that identifies as the event's actor (nil
// if none does).
func buildActivity(kind canonical.Kind, status string, invitee *payload, emails []string) (*canonical.Activity, *canonical.Actor) {
	scheduled := invitee.ScheduledEvent
	activity := &canonical.Activity{
		ID:      "meeting:" + scheduled.URI,
		Type:    "meeting",
		Status:  status,
		Subject: scheduled.Name,
		Attrs:   map[string]string{"invitee": invitee.URI},
	}
	if start, err := time.Parse(time.RFC3339Nano, scheduled.StartTime); err == nil {
		start = start.UTC()
		activity.StartAt = &start
	}
	if end, err := time.Parse(time.RFC3339Nano, scheduled.EndTime); err == nil {
		end = end.UTC()
		activity.EndAt = &end
	}
	activity.Participants = append(activity.Participants, canonical.Participant{Role: "invitee", Email: firstOr(emails, invitee.Email), Name: invitee.Name})
	var actor *canonical.Actor
	for _, membership := range scheduled.EventMemberships {
		email := membership.UserEmail
		if normalised, ok := identity.Email(email); ok {
			email = normalised
		}
		activity.Participants = append(activity.Participants, canonical.Participant{Role: "host", Email: email, Name: membership.UserName})
		if actor == nil && (email != "" || membership.User != "") {
			actor = &canonical.Actor{ID: membership.User, Email: email, Name: membership.UserName, Role: "host", Type: "user"}
		}
	}
	addRescheduleAttrs(activity, kind, invitee)
	return activity, actor
}

// addRescheduleAttrs links a rescheduled meeting to the invitee it replaces and records the
// reschedule and cancellation details Calendly gives.
func addRescheduleAttrs(activity *canonical.Activity, kind canonical.Kind, invitee *payload) {
	if kind == canonical.KindMeetingScheduled && invitee.OldInvitee != "" {
		activity.RelatesTo = "invitee:" + invitee.OldInvitee
		activity.Attrs["old_invitee"] = invitee.OldInvitee
	}
	if invitee.NewInvitee != "" {
		activity.Attrs["new_invitee"] = invitee.NewInvitee
	}
	if invitee.Rescheduled {
		activity.Attrs["rescheduled"] = "true"
	}
	if cancellation := invitee.Cancellation; cancellation != nil && cancellation.CancelerType != "" {
		activity.Attrs["canceler_type"] = cancellation.CancelerType
	}
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
