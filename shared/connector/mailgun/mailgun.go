// Package mailgun owns crmsync's Mailgun event-webhook connector: it authenticates deliveries
// with the signature object inside the JSON body (hex HMAC-SHA256 over timestamp + token, 5-minute
// tolerance both ways) and hands the token back as a nonce for the replay cache, and it maps each
// event (delivered, opened, clicked, failed, ...) to one email.event whose activity is the email
// it concerns (email:{Message-Id}).
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
const MappingVersion = "mailgun/1"

// SecretSigningKey is the secret field holding the Mailgun HTTP webhook signing key.
const SecretSigningKey = "signing_key"

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
// delivery plumbing and client details with no CRM meaning.
var Ignored = []string{
	"log-level", "flags", "envelope", "storage", "campaigns", "tags", "recipient-domain",
	"recipient-provider", "method", "geolocation", "client-info", "ip", "batch", "routes",
	"originating-ip", "primary-dkim",
}

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
	_ connector.Connector = (*Connector)(nil)
	_ connector.Signer    = (*Connector)(nil)
)

// Name returns "mailgun".
func (*Connector) Name() string { return Name }

// ContentTypes lists the media type Mailgun's event webhooks send.
func (*Connector) ContentTypes() []string { return []string{"application/json"} }

type signature struct {
	Timestamp json.RawMessage `json:"timestamp"`
	Token     string          `json:"token"`
	Signature string          `json:"signature"`
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
// timestamp + token)) for the current or previous key, and timestamp must be within Tolerance
// of now in either direction. The event data itself is not signed by Mailgun; the returned
// nonce ("mailgun:"+token) must be claimed in the replay cache.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, now time.Time) (connector.Verified, error) {
	var body struct {
		Signature *signature `json:"signature"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return connector.Verified{}, fmt.Errorf("%w: body is not a JSON object", connector.ErrUnauthenticated)
	}
	s := body.Signature
	if s == nil || s.Token == "" || s.Signature == "" {
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
	sig, err := hex.DecodeString(strings.TrimSpace(s.Signature))
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed signature", connector.ErrUnauthenticated)
	}
	keys := sec.Values(SecretSigningKey)
	if len(keys) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no %s configured", connector.ErrUnauthenticated, SecretSigningKey)
	}
	for _, k := range keys {
		if hmac.Equal(mac(k, ts, s.Token), sig) {
			return connector.Verified{
				Nonce:        "mailgun:" + s.Token,
				NonceExpires: signedAt.Add(Tolerance + NonceTTL),
			}, nil
		}
	}
	return connector.Verified{}, fmt.Errorf("%w: signature does not match", connector.ErrUnauthenticated)
}

// Sign writes the signature object into the JSON body as Mailgun would, with timestamp = now
// and sec.Current's signing_key. An existing token is kept; otherwise a 50-character token is
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
	sig, err := json.Marshal(map[string]string{
		"timestamp": ts,
		"token":     token,
		"signature": hex.EncodeToString(mac(k, ts, token)),
	})
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
	var body struct {
		EventData json.RawMessage `json:"event-data"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		return nil, fmt.Errorf("%w: malformed JSON: %v", connector.ErrUnusable, err)
	}
	if len(body.EventData) == 0 || string(body.EventData) == "null" {
		return nil, fmt.Errorf("%w: no event-data", connector.ErrUnusable)
	}
	var ed eventData
	if err := json.Unmarshal(body.EventData, &ed); err != nil {
		return nil, fmt.Errorf("%w: malformed event-data: %v", connector.ErrUnusable, err)
	}
	event := strings.ToLower(strings.TrimSpace(ed.Event))
	switch {
	case ed.ID == "":
		return nil, fmt.Errorf("%w: no event-data.id", connector.ErrUnusable)
	case event == "":
		return nil, fmt.Errorf("%w: no event-data.event", connector.ErrUnusable)
	}
	var msgID, from, to, subject string
	if ed.Message != nil && ed.Message.Headers != nil {
		h := ed.Message.Headers
		msgID, from, to, subject = NormalizeMessageID(h.MessageID), h.From, h.To, h.Subject
	}
	if msgID == "" {
		return nil, fmt.Errorf("%w: no event-data.message.headers.message-id", connector.ErrUnusable)
	}
	occurred, ok := floatTime(ed.Timestamp)
	if !ok {
		// Mailgun gave no usable event time; the receipt time is the best available.
		occurred = req.ReceivedAt.UTC()
	}
	if occurred.IsZero() {
		return nil, fmt.Errorf("%w: no event time", connector.ErrUnusable)
	}

	recipient := strings.TrimSpace(ed.Recipient)
	if recipient == "" {
		recipient = to
	}
	var emails []string
	if e, ok := identity.Email(recipient); ok {
		emails = []string{e}
		recipient = e
	}

	ev := canonical.Event{
		Key:            "mailgun:" + ed.ID,
		Source:         Name,
		Kind:           canonical.KindEmailEvent,
		OccurredAt:     occurred,
		GroupKey:       identity.GroupKey(emails, nil, Name, msgID),
		Subject:        canonical.Person{Emails: emails},
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(body.EventData),
		ExternalIDs:    map[string]string{"event_id": ed.ID, "message_id": msgID},
	}
	if event == "opened" || event == "clicked" {
		// Opens and clicks are the recipient's own activity; delivery outcomes are not.
		ev.Fields = map[string]map[string]string{"contact": {"last_activity_at": occurred.Format(time.RFC3339)}}
	}
	act := &canonical.Activity{
		ID:        "email:" + msgID,
		Type:      "email",
		Status:    event,
		Direction: "outbound",
		Subject:   subject,
		Attrs:     map[string]string{"mailgun_event_id": ed.ID},
	}
	if from != "" {
		p := canonical.Participant{Role: "from", Email: strings.TrimSpace(from)}
		if e, ok := identity.Email(from); ok {
			p.Email = e
			ev.Actor = &canonical.Actor{Email: e, Role: "sender", Type: "user"}
		}
		act.Participants = append(act.Participants, p)
	}
	if recipient != "" {
		act.Participants = append(act.Participants, canonical.Participant{Role: "to", Email: recipient})
	}
	for k, v := range map[string]string{"severity": ed.Severity, "reason": ed.Reason, "url": ed.URL} {
		if v = strings.TrimSpace(v); v != "" {
			act.Attrs[k] = v
		}
	}
	if ds := ed.DeliveryStatus; ds != nil {
		if c := strings.Trim(strings.TrimSpace(string(ds.Code)), `"`); c != "" && c != "null" {
			act.Attrs["delivery_status_code"] = c
		}
	}
	ev.Activity = act

	var members map[string]json.RawMessage
	_ = json.Unmarshal(body.EventData, &members) // decoded once already as a struct
	var unmapped []string
	for k, v := range members {
		if !mapped[k] && !ignored[k] && string(v) != "null" {
			unmapped = append(unmapped, "event-data."+k)
		}
	}
	sort.Strings(unmapped)
	ev.Unmapped = unmapped
	return &connector.Parsed{Events: []canonical.Event{ev}}, nil
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
