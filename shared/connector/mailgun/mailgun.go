// Package mailgun owns crmsync's Mailgun event-webhook connector: it authenticates deliveries
// with the signature object inside the JSON body (hex HMAC-SHA256 over timestamp + token, 5-minute
// tolerance both ways; a subaccount's delivery may instead be verified by its parent-signature
// with the primary account's key) and hands the token back as a nonce for the replay cache, and it
// maps each event (delivered, opened, clicked, failed, unsubscribed, ...) to one email.event whose
// activity is the email it concerns (email:{Message-Id}), with the recipient's own outcome on it
// and, for unsubscribes and complaints, the contact's opt-out fields. Its Lister reads Mailgun's
// Events API so reconciliation and backfill recover notifications that never arrived.
package mailgun

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/identity"
)

// Name is the connector's source and route name.
const Name = "mailgun"

// MappingVersion identifies the mapping this package applies.
const MappingVersion = "mailgun/2"

// SecretSigningKey is the secret field holding the Mailgun HTTP webhook signing key.
const SecretSigningKey = "signing_key"

// SecretParentSigningKey is the optional secret field holding the primary (parent) account's
// HTTP webhook signing key: a subaccount's delivery carries a parent-signature made with it, so
// one key verifies every subaccount's deliveries.
const SecretParentSigningKey = "parent_signing_key"

// QuarantineStatus is the answer to an authentic delivery that is quarantined as unusable:
// Mailgun stops retrying only on 406 Not Acceptable (any other code but 200 is retried for 8 h),
// and retrying an unusable delivery cannot help.
const QuarantineStatus = 406

// Tolerance is how far the signed timestamp may be from now, in either direction.
const Tolerance = 5 * time.Minute

// NonceTTL is how long past the end of the tolerance window a token stays claimed.
const NonceTTL = time.Hour

// mapped lists the event-data members the mapping uses.
var mapped = map[string]bool{
	"id": true, "event": true, "timestamp": true, "recipient": true, "message": true,
	"severity": true, "reason": true, "url": true, "delivery-status": true,
}

// Ignored lists event-data members deliberately not mapped and not reported as unmapped:
// delivery plumbing and client details with no CRM meaning (account, domain, api-key-id and
// delivered-at are in every current webhook payload).
var Ignored = []string{
	"log-level", "flags", "envelope", "storage", "campaigns", "tags", "recipient-domain",
	"recipient-provider", "method", "geolocation", "client-info", "ip", "batch", "routes",
	"originating-ip", "primary-dkim", "account", "domain", "api-key-id", "delivered-at",
}

// Activity statuses of a failed event, by its severity. The timeline ranks them for email
// activities: a temporary failure (Mailgun retries delivery) ranks with accepted, below
// delivered, so it never overrides a delivery; a permanent failure (Mailgun dropped the message)
// outranks every other email status, so it is final. A failed event without a known severity
// keeps the status "failed".
const (
	StatusTemporaryFail = "temporary_fail"
	StatusPermanentFail = "permanent_fail"
)

// RecipientStatusAttr prefixes the activity attribute holding one recipient's own outcome:
// recipient_status.<email> = that recipient's status, ranked by the timeline like the activity's
// own status (timeline.RankedAttrPrefix), so one message to several recipients keeps each
// recipient's outcome visible and a temporary failure never overrides that recipient's delivery.
const RecipientStatusAttr = "recipient_status."

// Contact fields an opt-out event (unsubscribed, complained) proposes; config/policy.yaml
// governs them (the consent group).
const (
	// FieldEmailOptOut is "true" once the recipient unsubscribed or complained.
	FieldEmailOptOut = "email_opt_out"
	// FieldEmailOptOutReason is the event that opted the recipient out: unsubscribed or complained.
	FieldEmailOptOutReason = "email_opt_out_reason"
	// FieldEmailOptOutAt is when it happened (RFC 3339).
	FieldEmailOptOutAt = "email_opt_out_at"
)

// optOut lists the events that opt the recipient out of email.
var optOut = map[string]bool{"unsubscribed": true, "complained": true}

var ignored = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range Ignored {
		m[k] = true
	}
	return m
}()

// Connector is the Mailgun event-webhook connector.
type Connector struct {
	connector.NoHandshake // the vendor has no subscription handshake
}

// New returns the Mailgun connector.
func New() *Connector { return &Connector{} }

var (
	_ connector.Connector          = (*Connector)(nil)
	_ connector.Signer             = (*Connector)(nil)
	_ connector.QuarantineAnswerer = (*Connector)(nil)
)

// Name returns "mailgun".
func (*Connector) Name() string { return Name }

// ContentTypes lists the media type Mailgun's event webhooks send.
func (*Connector) ContentTypes() []string { return []string{"application/json"} }

// QuarantineAnswer is the answer to a delivery quarantined as unusable: 406, so Mailgun stops
// retrying it (the payload is kept in the quarantine and can be released after a mapping fix).
func (*Connector) QuarantineAnswer() connector.Response {
	return connector.Response{Status: QuarantineStatus, ContentType: "application/json", Body: `{"status":"quarantined"}`}
}

type signature struct {
	Timestamp       json.RawMessage `json:"timestamp"`
	Token           string          `json:"token"`
	Signature       string          `json:"signature"`
	ParentSignature string          `json:"parent-signature"`
}

// timestampText returns the timestamp as Mailgun sent it (a string of digits, or a number).
func (s signature) timestampText() (string, bool) {
	raw := strings.TrimSpace(string(s.Timestamp))
	if raw == "" {
		return "", false
	}
	if raw[0] == '"' {
		if err := json.Unmarshal(s.Timestamp, &raw); err != nil {
			return "", false
		}
	}
	if raw == "" {
		return "", false
	}
	for _, r := range raw {
		if r < '0' || r > '9' {
			return "", false
		}
	}
	return raw, true
}

// Verify checks the body's signature object: signature must equal hex(HMAC-SHA256(signing_key,
// timestamp + token)) for the current or previous key — or, for a subaccount's delivery, its
// parent-signature must equal the same HMAC made with the primary account's key
// (parent_signing_key, else signing_key) — and timestamp must be within Tolerance of now in either
// direction. The event data itself is not signed by Mailgun; the returned nonce
// ("mailgun:"+token) must be claimed in the replay cache.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, now time.Time) (connector.Verified, error) {
	var body struct {
		Signature *signature `json:"signature"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return connector.Verified{}, fmt.Errorf("%w: body is not a JSON object", connector.ErrUnauthenticated)
	}
	s := body.Signature
	if s == nil || s.Token == "" || (s.Signature == "" && s.ParentSignature == "") {
		return connector.Verified{}, fmt.Errorf("%w: missing signature", connector.ErrUnauthenticated)
	}
	ts, ok := s.timestampText()
	if !ok {
		return connector.Verified{}, fmt.Errorf("%w: malformed signature timestamp", connector.ErrUnauthenticated)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed signature timestamp", connector.ErrUnauthenticated)
	}
	signedAt := time.Unix(secs, 0)
	if d := now.Sub(signedAt); d > Tolerance {
		return connector.Verified{}, fmt.Errorf("%w: signature timestamp too old", connector.ErrUnauthenticated)
	} else if d < -Tolerance {
		return connector.Verified{}, fmt.Errorf("%w: signature timestamp in the future", connector.ErrUnauthenticated)
	}
	sig, sigErr := decodeSignature(s.Signature)
	parent, parentErr := decodeSignature(s.ParentSignature)
	if sigErr != nil && parentErr != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed signature", connector.ErrUnauthenticated)
	}
	keys, parentKeys := sec.Values(SecretSigningKey), parentKeys(sec)
	if len(keys) == 0 && len(parentKeys) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no %s configured", connector.ErrUnauthenticated, SecretSigningKey)
	}
	if matches(sig, keys, ts, s.Token) || matches(parent, parentKeys, ts, s.Token) {
		return connector.Verified{
			Nonce:        "mailgun:" + s.Token,
			NonceExpires: signedAt.Add(Tolerance + NonceTTL),
		}, nil
	}
	if len(parent) > 0 {
		return connector.Verified{}, fmt.Errorf("%w: neither signature nor parent-signature matches", connector.ErrUnauthenticated)
	}
	return connector.Verified{}, fmt.Errorf("%w: signature does not match", connector.ErrUnauthenticated)
}

// decodeSignature decodes a hex signature; an empty one decodes to nothing.
func decodeSignature(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("no signature")
	}
	return hex.DecodeString(s)
}

// parentKeys are the keys a parent-signature is checked with: the primary account's key when
// configured, else the signing key (an operator who holds only the primary account's key has put
// it there).
func parentKeys(sec connector.Secret) []string {
	if keys := sec.Values(SecretParentSigningKey); len(keys) > 0 {
		return keys
	}
	return sec.Values(SecretSigningKey)
}

// matches reports whether sig is the HMAC of timestamp + token under one of keys (constant-time
// per key).
func matches(sig []byte, keys []string, ts, token string) bool {
	if len(sig) == 0 {
		return false
	}
	ok := false
	for _, k := range keys {
		if hmac.Equal(mac(k, ts, token), sig) {
			ok = true
		}
	}
	return ok
}

// Sign writes the signature object into the JSON body as Mailgun would, with timestamp = now
// and sec.Current's signing_key (and, when sec.Current has parent_signing_key, the
// parent-signature a subaccount's delivery carries). An existing token is kept; otherwise a 50-character token is
// derived from the event data and the timestamp (deterministic, so samples are reproducible).
// The body is re-encoded; its other members are kept.
func (*Connector) Sign(req *connector.Request, sec connector.Secret, now time.Time) error {
	k := sec.Get(SecretSigningKey)
	if k == "" {
		return fmt.Errorf("mailgun: sign: no %s in current secret", SecretSigningKey)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(req.Body, &obj); err != nil || obj == nil {
		return fmt.Errorf("mailgun: sign: body is not a JSON object")
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	var old signature
	_ = json.Unmarshal(obj["signature"], &old)
	token := old.Token
	if token == "" {
		sum := sha256.Sum256(append([]byte(ts+"."), obj["event-data"]...))
		token = hex.EncodeToString(sum[:])[:50]
	}
	members := map[string]string{
		"timestamp": ts,
		"token":     token,
		"signature": hex.EncodeToString(mac(k, ts, token)),
	}
	if parentKey := sec.Get(SecretParentSigningKey); parentKey != "" {
		// A subaccount's delivery: Mailgun adds the primary account's signature.
		members["parent-signature"] = hex.EncodeToString(mac(parentKey, ts, token))
	}
	sig, err := json.Marshal(members)
	if err != nil {
		return err
	}
	obj["signature"] = sig
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	req.Body = body
	return nil
}

func mac(key, ts, token string) []byte {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(ts))
	h.Write([]byte(token))
	return h.Sum(nil)
}

type eventData struct {
	ID        string      `json:"id"`
	Event     string      `json:"event"`
	Timestamp json.Number `json:"timestamp"`
	Recipient string      `json:"recipient"`
	Severity  string      `json:"severity"`
	Reason    string      `json:"reason"`
	URL       string      `json:"url"`
	Message   *struct {
		Headers *struct {
			MessageID string `json:"message-id"`
			From      string `json:"from"`
			To        string `json:"to"`
			Subject   string `json:"subject"`
		} `json:"headers"`
	} `json:"message"`
	DeliveryStatus *struct {
		Code json.RawMessage `json:"code"`
	} `json:"delivery-status"`
}

// Parse maps one Mailgun event to one email.event.
func (*Connector) Parse(req *connector.Request, _ connector.Secret) (*connector.Parsed, error) {
	raw, data, eventName, err := readEventData(req.Body)
	if err != nil {
		return nil, err
	}
	message, err := readMessage(data)
	if err != nil {
		return nil, err
	}
	occurred, ok := floatTime(data.Timestamp)
	if !ok {
		// Mailgun gave no usable event time; the receipt time is the best available.
		occurred = req.ReceivedAt.UTC()
	}
	if occurred.IsZero() {
		return nil, fmt.Errorf("%w: no event time", connector.ErrUnusable)
	}
	recipient, emails := recipientOf(data.Recipient, message.to)

	event := canonical.Event{
		Key:            "mailgun:" + data.ID,
		Source:         Name,
		Kind:           canonical.KindEmailEvent,
		OccurredAt:     occurred,
		GroupKey:       identity.GroupKey(emails, nil, Name, message.id),
		Subject:        canonical.Person{Emails: emails},
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(raw),
		ExternalIDs:    map[string]string{"event_id": data.ID, "message_id": message.id},
	}
	switch {
	case eventName == "opened" || eventName == "clicked":
		// Opens and clicks are the recipient's own activity; delivery outcomes are not.
		event.Fields = map[string]map[string]string{"contact": {"last_activity_at": occurred.Format(time.RFC3339)}}
	case optOut[eventName] && len(emails) > 0:
		// The recipient asked for no more email (an unsubscribe link, a spam complaint).
		event.Fields = map[string]map[string]string{"contact": {
			FieldEmailOptOut: "true", FieldEmailOptOutReason: eventName, FieldEmailOptOutAt: occurred.Format(time.RFC3339),
		}}
	}
	event.Activity, event.Actor = buildActivity(data, eventName, message, recipient)
	event.Unmapped = unmappedMembers(raw)
	return &connector.Parsed{Events: []canonical.Event{event}}, nil
}

// readEventData decodes the body's event-data member, checks it has an id and an event, and
// returns it raw, decoded, and with its event name lower-cased.
func readEventData(body []byte) (json.RawMessage, *eventData, string, error) {
	var envelope struct {
		EventData json.RawMessage `json:"event-data"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return nil, nil, "", fmt.Errorf("%w: malformed JSON: %v", connector.ErrUnusable, err)
	}
	raw := envelope.EventData
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, "", fmt.Errorf("%w: no event-data", connector.ErrUnusable)
	}
	var data eventData
	if err := json.Unmarshal(raw, &data); err != nil {
		return nil, nil, "", fmt.Errorf("%w: malformed event-data: %v", connector.ErrUnusable, err)
	}
	eventName := strings.ToLower(strings.TrimSpace(data.Event))
	switch {
	case data.ID == "":
		return nil, nil, "", fmt.Errorf("%w: no event-data.id", connector.ErrUnusable)
	case eventName == "":
		return nil, nil, "", fmt.Errorf("%w: no event-data.event", connector.ErrUnusable)
	}
	return raw, &data, eventName, nil
}

// message is the email an event concerns, from the event's message headers.
type message struct {
	id      string // normalised Message-Id
	from    string
	to      string
	subject string
}

// readMessage returns the headers of the email an event concerns; an event without a
// Message-Id is unusable.
func readMessage(data *eventData) (message, error) {
	var email message
	if data.Message != nil && data.Message.Headers != nil {
		headers := data.Message.Headers
		email = message{id: NormalizeMessageID(headers.MessageID), from: headers.From, to: headers.To, subject: headers.Subject}
	}
	if email.id == "" {
		return message{}, fmt.Errorf("%w: no event-data.message.headers.message-id", connector.ErrUnusable)
	}
	return email, nil
}

// recipientOf returns the event's recipient (else the message's To), normalised when it is a
// valid email, and the valid email as the subject's emails.
func recipientOf(recipient, to string) (string, []string) {
	recipient = strings.TrimSpace(recipient)
	if recipient == "" {
		recipient = to
	}
	var emails []string
	if email, ok := identity.Email(recipient); ok {
		emails = []string{email}
		recipient = email
	}
	return recipient, emails
}

// ActivityStatus returns the email activity status of a Mailgun event: the event name, except a
// failed event, which becomes temporary_fail or permanent_fail by its severity.
func ActivityStatus(eventName, severity string) string {
	if eventName != "failed" {
		return eventName
	}
	switch strings.ToLower(strings.TrimSpace(severity)) {
	case "temporary":
		return StatusTemporaryFail
	case "permanent":
		return StatusPermanentFail
	}
	return eventName
}

// buildActivity returns the outbound email activity (email:{Message-Id}) with the event's status
// (see ActivityStatus), also kept per recipient (RecipientStatusAttr), sender and recipient as
// participants and the event's details as attributes, and the sender as actor when the From
// header is a valid email (else nil).
func buildActivity(data *eventData, eventName string, email message, recipient string) (*canonical.Activity, *canonical.Actor) {
	status := ActivityStatus(eventName, data.Severity)
	activity := &canonical.Activity{
		ID:        "email:" + email.id,
		Type:      "email",
		Status:    status,
		Direction: "outbound",
		Subject:   email.subject,
		Attrs:     map[string]string{"mailgun_event_id": data.ID},
	}
	if recipient != "" {
		activity.Attrs[RecipientStatusAttr+recipient] = status
	}
	var actor *canonical.Actor
	if email.from != "" {
		sender := canonical.Participant{Role: "from", Email: strings.TrimSpace(email.from)}
		if normalised, ok := identity.Email(email.from); ok {
			sender.Email = normalised
			actor = &canonical.Actor{Email: normalised, Role: "sender", Type: "user"}
		}
		activity.Participants = append(activity.Participants, sender)
	}
	if recipient != "" {
		activity.Participants = append(activity.Participants, canonical.Participant{Role: "to", Email: recipient})
	}
	for attr, value := range map[string]string{"severity": data.Severity, "reason": data.Reason, "url": data.URL} {
		if value = strings.TrimSpace(value); value != "" {
			activity.Attrs[attr] = value
		}
	}
	if status := data.DeliveryStatus; status != nil {
		if code := strings.Trim(strings.TrimSpace(string(status.Code)), `"`); code != "" && code != "null" {
			activity.Attrs["delivery_status_code"] = code
		}
	}
	return activity, actor
}

// unmappedMembers lists, sorted, the non-null event-data members neither mapped nor
// deliberately ignored.
func unmappedMembers(raw json.RawMessage) []string {
	var members map[string]json.RawMessage
	_ = json.Unmarshal(raw, &members) // decoded once already as a struct
	var unmapped []string
	for name, value := range members {
		if !mapped[name] && !ignored[name] && string(value) != "null" {
			unmapped = append(unmapped, "event-data."+name)
		}
	}
	sort.Strings(unmapped)
	return unmapped
}

// NormalizeMessageID returns a Message-Id without surrounding whitespace or angle brackets,
// lower-cased: the form email activity ids use.
func NormalizeMessageID(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "<")
	s = strings.TrimSuffix(s, ">")
	return strings.ToLower(strings.TrimSpace(s))
}

// floatTime converts Mailgun's float seconds to a UTC time with microsecond precision.
func floatTime(n json.Number) (time.Time, bool) {
	if n == "" {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 || f > 1e11 {
		return time.Time{}, false
	}
	sec := math.Floor(f)
	micro := math.Round((f - sec) * 1e6)
	return time.Unix(int64(sec), int64(micro)*1000).UTC(), true
}
