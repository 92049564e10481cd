// Package calendly owns crmsync's Calendly (webhooks v2) connector: it authenticates deliveries
// with Calendly-Webhook-Signature (hex HMAC-SHA256 over "t.body" with a 3-minute tolerance) and
// maps the invitee events to meeting events whose activity is the scheduled event
// (meeting:{scheduled_event.uri}): a booking schedules it, a cancellation cancels it (or, in a
// group event that goes on, only the invitee's participation), a reschedule marks the old meeting
// rescheduled and links the two, and no-show marks change the invitee's participation. The
// subscription's other events are acknowledged and ignored by name.
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

// MappingVersion identifies the mapping this package applies. Version 2: a reschedule's
// cancellation marks the old meeting rescheduled (not canceled) and links it to the new one in
// the meeting key space; a group event's invitee changes only that invitee's participation;
// no-shows are mapped and the subscription's other events are ignored by name.
const MappingVersion = "calendly/2"

// SecretSigningKey is the secret field holding the webhook signing key.
const SecretSigningKey = "signing_key"

// SecretAPIToken is the secret field holding the API token (used by the list API only).
const SecretAPIToken = "api_token"

// Tolerance is how far the signed timestamp may be from now, in either direction.
const Tolerance = 3 * time.Minute

// The Calendly webhook events this connector maps: an invitee booking, cancelling (or
// rescheduling), and being marked or unmarked as a no-show. Their payload is the Invitee resource
// with its scheduled_event.
const (
	EventInviteeCreated  = "invitee.created"
	EventInviteeCanceled = "invitee.canceled"
	EventNoShowCreated   = "invitee_no_show.created"
	EventNoShowDeleted   = "invitee_no_show.deleted"
)

// IgnoredEvents maps every other event a Calendly webhook subscription can send (the event enum
// of Calendly's GET /sample_webhook_data and POST /webhook_subscriptions) to why crmsync maps
// it to nothing. An authentic delivery of one is acknowledged (200, no event) with a log note; an
// event type that is neither mapped nor listed here is quarantined, as a new vendor event
// deserves a look.
var IgnoredEvents = map[string]string{
	"routing_form_submission.created": "a routing form submission names its person only in free-form answers; a submitter who books arrives as invitee.created",
	"event_type.created":              "event type configuration: no person, no interaction",
	"event_type.updated":              "event type configuration: no person, no interaction",
	"event_type.deleted":              "event type configuration: no person, no interaction",
	"meeting_recap.created":           "meeting notes: the meeting itself arrives as invitee events; notes are not synced",
	"meeting_recap.updated":           "meeting notes: the meeting itself arrives as invitee events; notes are not synced",
	"meeting_recap.deleted":           "meeting notes: the meeting itself arrives as invitee events; notes are not synced",
	"contact.created":                 "Calendly's own contact records: crmsync learns people from their bookings' invitee events",
	"contact.updated":                 "Calendly's own contact records: crmsync learns people from their bookings' invitee events",
	"contact.deleted":                 "Calendly's own contact records: crmsync learns people from their bookings' invitee events",
}

// An invitee's participation in a meeting, recorded as the activity attribute
// invitee_status.{invitee uuid}.
const (
	ParticipationActive      = "active"
	ParticipationCanceled    = "canceled"
	ParticipationRescheduled = "rescheduled"
	ParticipationNoShow      = "no_show"
)

const headerSignature = "calendly-webhook-signature"

// mappedPayload lists the payload members the mapping uses.
var mappedPayload = map[string]bool{
	"uri": true, "email": true, "name": true, "first_name": true, "last_name": true,
	"status": true, "timezone": true, "text_reminder_number": true, "rescheduled": true,
	"old_invitee": true, "new_invitee": true, "questions_and_answers": true, "tracking": true,
	"scheduled_event": true, "cancellation": true, "created_at": true, "updated_at": true,
	"event": true, "no_show": true,
}

// IgnoredPayload lists payload members deliberately not mapped and not reported as unmapped:
// links and scheduling metadata with no CRM meaning.
var IgnoredPayload = []string{
	"cancel_url", "reschedule_url", "routing_form_submission", "payment",
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

// scheduledEvent is the Event resource Calendly embeds as payload.scheduled_event.
type scheduledEvent struct {
	URI       string `json:"uri"`
	Name      string `json:"name"`
	Status    string `json:"status"` // active or canceled
	StartTime string `json:"start_time"`
	EndTime   string `json:"end_time"`
	// InviteesCounter counts the event's invitees: total, active, and limit (the most invitees a
	// slot takes: 1 for one-on-one, more for a group event).
	InviteesCounter *struct {
		Total  int `json:"total"`
		Active int `json:"active"`
		Limit  int `json:"limit"`
	} `json:"invitees_counter"`
	EventMemberships []struct {
		User      string `json:"user"`
		UserEmail string `json:"user_email"`
		UserName  string `json:"user_name"`
	} `json:"event_memberships"`
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
	Tracking       map[string]any  `json:"tracking"`
	ScheduledEvent *scheduledEvent `json:"scheduled_event"`
	// Event is the Invitee resource's link to its scheduled event (its URI); read only when
	// scheduled_event is absent.
	Event        json.RawMessage `json:"event"`
	Cancellation *struct {
		CanceledBy   string `json:"canceled_by"`
		Reason       string `json:"reason"`
		CancelerType string `json:"canceler_type"`
	} `json:"cancellation"`
	NoShow *struct {
		URI       string `json:"uri"`
		CreatedAt string `json:"created_at"`
	} `json:"no_show"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`

	// eventURI is the scheduled event's URI: scheduled_event.uri, else event, else the invitee
	// URI's parent.
	eventURI string
}

// change is what one invitee delivery does to the meeting and to the invitee's participation.
type change struct {
	kind canonical.Kind
	// status is the meeting's status; "" leaves it as it is.
	status string
	// participation is the invitee's: active, canceled, rescheduled or no_show.
	participation string
	// meeting is set when the change is the meeting's as a whole (a one-on-one event, or a group
	// event canceled for everyone), not only the invitee's participation.
	meeting bool
}

// Parse maps an invitee delivery (created, canceled, no-show created or deleted) to one meeting
// event; a delivery of an IgnoredEvents event is acknowledged with no event and a note; any other
// event is unusable.
func (*Connector) Parse(req *connector.Request, _ connector.Secret) (*connector.Parsed, error) {
	var envelope delivery
	if err := json.Unmarshal(req.Body, &envelope); err != nil {
		return nil, fmt.Errorf("%w: malformed JSON: %v", connector.ErrUnusable, err)
	}
	if reason, ok := IgnoredEvents[envelope.Event]; ok {
		return &connector.Parsed{Notes: []string{"ignored Calendly event " + envelope.Event + ": " + reason}}, nil
	}
	switch envelope.Event {
	case EventInviteeCreated, EventInviteeCanceled, EventNoShowCreated, EventNoShowDeleted:
	default:
		return nil, fmt.Errorf("%w: unmapped Calendly event %q", connector.ErrUnusable, envelope.Event)
	}
	invitee, err := readPayload(envelope.Payload)
	if err != nil {
		return nil, err
	}
	occurred, err := occurredAt(envelope, invitee, req.ReceivedAt)
	if err != nil {
		return nil, err
	}
	ch := classify(envelope.Event, invitee)

	noShow := envelope.Event == EventNoShowCreated || envelope.Event == EventNoShowDeleted
	contact, subject := mapInvitee(invitee, occurred)
	var unmapped []string
	if noShow {
		// A no-show mark is the host's act, not the invitee's: it proposes only the identities
		// that find the contact, and its payload (the invitee again) was reviewed with the booking.
		contact = identityFields(contact)
	} else {
		unmapped = mapTracking(contact, invitee.Tracking)
		unmapped = append(unmapped, unmappedPayload(envelope.Payload, invitee)...)
	}
	activity, actor := buildActivity(envelope.Event, ch, invitee, subject.Emails)
	key := "calendly:" + envelope.Event + ":" + invitee.URI
	externalIDs := map[string]string{"invitee_uri": invitee.URI, "scheduled_event_uri": invitee.eventURI}
	if noShow && invitee.NoShow != nil && invitee.NoShow.URI != "" {
		// An invitee can be marked, unmarked and marked again: each mark is its own fact.
		key += ":" + invitee.NoShow.URI
		externalIDs["no_show_uri"] = invitee.NoShow.URI
	}
	event := canonical.Event{
		Key:            key,
		Source:         Name,
		Kind:           ch.kind,
		OccurredAt:     occurred,
		GroupKey:       identity.GroupKey(subject.Emails, subject.Phones, Name, invitee.URI),
		Subject:        subject,
		Actor:          actor,
		Fields:         map[string]map[string]string{"contact": contact},
		Activity:       activity,
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(req.Body),
		ExternalIDs:    externalIDs,
		Unmapped:       sortedUnique(unmapped),
	}
	return &connector.Parsed{Events: []canonical.Event{event}}, nil
}

// classify returns what a mapped delivery does. A booking schedules the meeting. A cancellation
// ends the invitee's participation; it cancels the meeting only when the meeting ends with it
// (see endsMeeting), and a cancellation for a reschedule (rescheduled: true) marks the meeting
// rescheduled instead, never canceled. A no-show mark (or its removal) changes only the
// invitee's participation.
func classify(event string, invitee *payload) change {
	switch event {
	case EventInviteeCreated:
		return change{kind: canonical.KindMeetingScheduled, status: "scheduled", participation: ParticipationActive,
			meeting: !groupEvent(invitee.ScheduledEvent)}
	case EventInviteeCanceled:
		ends := endsMeeting(invitee.ScheduledEvent)
		switch {
		case invitee.Rescheduled && ends:
			return change{kind: canonical.KindMeetingScheduled, status: "rescheduled", participation: ParticipationRescheduled, meeting: true}
		case invitee.Rescheduled:
			return change{kind: canonical.KindMeetingScheduled, status: "scheduled", participation: ParticipationRescheduled}
		case ends:
			return change{kind: canonical.KindMeetingCanceled, status: "canceled", participation: ParticipationCanceled, meeting: true}
		default:
			return change{kind: canonical.KindMeetingScheduled, status: "scheduled", participation: ParticipationCanceled}
		}
	case EventNoShowCreated:
		return change{kind: canonical.KindMeetingScheduled, participation: ParticipationNoShow}
	default: // EventNoShowDeleted: the mark was removed, the invitee attended
		return change{kind: canonical.KindMeetingScheduled, participation: ParticipationActive}
	}
}

// groupEvent reports whether the scheduled event takes more than one invitee per slot
// (invitees_counter.limit > 1). Without a counter the event is taken for one-on-one.
func groupEvent(se *scheduledEvent) bool {
	return se != nil && se.InviteesCounter != nil && se.InviteesCounter.Limit > 1
}

// endsMeeting reports whether an invitee's cancellation ends the meeting for everyone: always
// for a one-on-one event; for a group event only when Calendly reports the event itself canceled
// (status canceled, as when the host cancels it) or no invitee left active.
func endsMeeting(se *scheduledEvent) bool {
	if !groupEvent(se) {
		return true
	}
	return strings.EqualFold(strings.TrimSpace(se.Status), "canceled") || se.InviteesCounter.Active <= 0
}

// readPayload decodes the invitee payload and checks it names the invitee and, through
// scheduled_event.uri, the Invitee's event link or its own URI, its scheduled event.
func readPayload(raw json.RawMessage) (*payload, error) {
	var invitee payload
	if len(raw) == 0 || json.Unmarshal(raw, &invitee) != nil {
		return nil, fmt.Errorf("%w: malformed payload", connector.ErrUnusable)
	}
	if invitee.URI == "" {
		return nil, fmt.Errorf("%w: no payload.uri", connector.ErrUnusable)
	}
	var link string
	_ = json.Unmarshal(invitee.Event, &link) // a string URI, or nothing usable
	switch {
	case invitee.ScheduledEvent != nil && invitee.ScheduledEvent.URI != "":
		invitee.eventURI = invitee.ScheduledEvent.URI
	case strings.HasPrefix(link, "http"):
		invitee.eventURI = link
	default:
		invitee.eventURI = eventOfInvitee(invitee.URI)
	}
	if invitee.eventURI == "" {
		return nil, fmt.Errorf("%w: no payload.scheduled_event.uri", connector.ErrUnusable)
	}
	return &invitee, nil
}

// eventOfInvitee returns the scheduled event URI an invitee URI lives under
// ({event uri}/invitees/{invitee uuid}), or "" when the URI has no such form.
func eventOfInvitee(inviteeURI string) string {
	i := strings.LastIndex(inviteeURI, "/invitees/")
	if i <= 0 {
		return ""
	}
	return inviteeURI[:i]
}

// meetingID is the activity id of a scheduled event's meeting.
func meetingID(eventURI string) string { return "meeting:" + eventURI }

// inviteeID returns the invitee's UUID (the last segment of its URI), the suffix of its
// participation attributes.
func inviteeID(inviteeURI string) string {
	trimmed := strings.TrimRight(inviteeURI, "/")
	return trimmed[strings.LastIndex(trimmed, "/")+1:]
}

// occurredAt returns the event time: when the invitee was created (created), last updated
// (canceled) or marked a no-show (no-show created); else the delivery's created_at; else when
// crmsync received the delivery.
func occurredAt(envelope delivery, invitee *payload, receivedAt time.Time) (time.Time, error) {
	var timeCandidates []string
	switch envelope.Event {
	case EventInviteeCreated:
		timeCandidates = []string{invitee.CreatedAt, envelope.CreatedAt}
	case EventInviteeCanceled:
		timeCandidates = []string{invitee.UpdatedAt, envelope.CreatedAt}
	case EventNoShowCreated:
		if invitee.NoShow != nil {
			timeCandidates = append(timeCandidates, invitee.NoShow.CreatedAt)
		}
		timeCandidates = append(timeCandidates, envelope.CreatedAt)
	default:
		timeCandidates = []string{envelope.CreatedAt}
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

// identityFields keeps only the contact's email and phone.
func identityFields(contact map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range []string{"email", "phone"} {
		if v, ok := contact[k]; ok {
			out[k] = v
		}
	}
	return out
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

// buildActivity returns the meeting activity (meeting:{scheduled event uri}) with the invitee
// and every host as participants, the invitee's participation and the reschedule links, and the
// first host that identifies as the event's actor (nil if none does).
func buildActivity(event string, ch change, invitee *payload, emails []string) (*canonical.Activity, *canonical.Actor) {
	activity := &canonical.Activity{
		ID:     meetingID(invitee.eventURI),
		Type:   "meeting",
		Status: ch.status,
		Attrs: map[string]string{
			"invitee": invitee.URI,
			"invitee_status." + inviteeID(invitee.URI): ch.participation,
		},
	}
	activity.Participants = append(activity.Participants, canonical.Participant{Role: "invitee", Email: firstOr(emails, invitee.Email), Name: invitee.Name})
	var actor *canonical.Actor
	if scheduled := invitee.ScheduledEvent; scheduled != nil {
		activity.Subject = scheduled.Name
		if start, err := time.Parse(time.RFC3339Nano, scheduled.StartTime); err == nil {
			start = start.UTC()
			activity.StartAt = &start
		}
		if end, err := time.Parse(time.RFC3339Nano, scheduled.EndTime); err == nil {
			end = end.UTC()
			activity.EndAt = &end
		}
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
	}
	addRescheduleAttrs(activity, event, ch, invitee)
	return activity, actor
}

// addRescheduleAttrs links a reschedule's two meetings in the meeting key space and records the
// reschedule and cancellation details Calendly gives. The new meeting names the old one in
// RelatesTo (and rescheduled_from.{invitee}); the old one names the new one in
// rescheduled_to.{invitee}. When the change is the meeting's as a whole, the meeting-level
// attributes rescheduled_from / rescheduled_to, old_invitee / new_invitee, rescheduled and
// canceler_type are set too; a group event's meeting keeps them for its own fate.
func addRescheduleAttrs(activity *canonical.Activity, event string, ch change, invitee *payload) {
	id := inviteeID(invitee.URI)
	switch {
	case event == EventInviteeCreated && invitee.OldInvitee != "":
		if old := eventOfInvitee(invitee.OldInvitee); old != "" && meetingID(old) != activity.ID {
			activity.RelatesTo = meetingID(old)
			activity.Attrs["rescheduled_from."+id] = meetingID(old)
			if ch.meeting {
				activity.Attrs["rescheduled_from"] = meetingID(old)
			}
		}
		if ch.meeting {
			activity.Attrs["old_invitee"] = invitee.OldInvitee
		}
	case event == EventInviteeCanceled && invitee.Rescheduled:
		if next := eventOfInvitee(invitee.NewInvitee); next != "" && meetingID(next) != activity.ID {
			activity.Attrs["rescheduled_to."+id] = meetingID(next)
			if ch.meeting {
				activity.Attrs["rescheduled_to"] = meetingID(next)
			}
		}
		if ch.meeting {
			activity.Attrs["rescheduled"] = "true"
			if invitee.NewInvitee != "" {
				activity.Attrs["new_invitee"] = invitee.NewInvitee
			}
		}
	}
	if cancellation := invitee.Cancellation; event == EventInviteeCanceled && ch.meeting && cancellation != nil && cancellation.CancelerType != "" {
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
