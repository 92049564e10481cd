// Package twilio owns crmsync's Twilio Voice connector: it authenticates status callbacks with
// X-Twilio-Signature (HMAC-SHA1 over the public URL and the sorted POST parameters, or over the
// URL alone with bodySHA256 for JSON bodies), and maps each callback to one canonical call.status
// event whose activity is the call (call:{CallSid}), so every status update of a call merges into
// one timeline entry.
package twilio

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/mail"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/identity"
)

// Name is the connector's source and route name.
const Name = "twilio"

// MappingVersion identifies the mapping this package applies.
const MappingVersion = "twilio/1"

// SecretAuthToken is the secret field holding the Twilio auth token that signs callbacks.
const SecretAuthToken = "auth_token"

// SecretAccountSID is the secret field holding the account SID (used by the list API only).
const SecretAccountSID = "account_sid"

const (
	headerSignature = "x-twilio-signature"
	paramBodySHA256 = "bodySHA256"
)

// mapped lists the callback parameters the mapping uses.
var mapped = map[string]bool{
	"AccountSid": true, "CallSid": true, "CallStatus": true, "SequenceNumber": true,
	"Timestamp": true, "From": true, "To": true, "Direction": true, "CallDuration": true,
	"ParentCallSid": true, "CallerName": true, "CallbackSource": true, "AnsweredBy": true,
}

// Ignored lists the callback parameters that are deliberately not mapped and not reported as
// unmapped: they duplicate mapped values (Caller/Called mirror From/To, Duration is billed
// minutes) or describe geography Twilio guesses from the number.
var Ignored = []string{
	"ApiVersion", "Called", "Caller", "CalledVia", "Duration", "ForwardedFrom", "StirVerstat",
	"CallToken", "CallerCity", "CallerState", "CallerZip", "CallerCountry",
	"CalledCity", "CalledState", "CalledZip", "CalledCountry",
	"FromCity", "FromState", "FromZip", "FromCountry",
	"ToCity", "ToState", "ToZip", "ToCountry",
}

var ignored = func() map[string]bool {
	m := make(map[string]bool, len(Ignored))
	for _, k := range Ignored {
		m[k] = true
	}
	return m
}()

// Connector is the Twilio Voice status-callback connector.
type Connector struct {
	connector.NoHandshake // the vendor has no subscription handshake
}

// New returns the Twilio connector.
func New() *Connector { return &Connector{} }

var (
	_ connector.Connector = (*Connector)(nil)
	_ connector.Signer    = (*Connector)(nil)
)

// Name returns "twilio".
func (*Connector) Name() string { return Name }

// ContentTypes lists the media types Twilio sends: form-encoded status callbacks, and JSON for
// the requests Twilio signs with bodySHA256.
func (*Connector) ContentTypes() []string {
	return []string{"application/x-www-form-urlencoded", "application/json"}
}

// Verify checks X-Twilio-Signature against every auth_token in sec (current, then previous),
// over req.PublicURL with and without an explicit default port. When the URL carries
// bodySHA256 the URL alone is signed and the body must hash to that value; otherwise the body's
// form parameters, sorted by name, are appended to the URL. Twilio signs no timestamp.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, _ time.Time) (connector.Verified, error) {
	sigText := strings.TrimSpace(req.Header(headerSignature))
	if sigText == "" {
		return connector.Verified{}, fmt.Errorf("%w: missing X-Twilio-Signature", connector.ErrUnauthenticated)
	}
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed X-Twilio-Signature", connector.ErrUnauthenticated)
	}
	tokens := sec.Values(SecretAuthToken)
	if len(tokens) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no %s configured", connector.ErrUnauthenticated, SecretAuthToken)
	}
	if req.PublicURL == "" {
		return connector.Verified{}, fmt.Errorf("%w: no public URL to verify against", connector.ErrUnauthenticated)
	}
	var suffix string
	if want, ok := bodySHA256(req.PublicURL); ok {
		got := sha256.Sum256(req.Body)
		wantBytes, err := hex.DecodeString(strings.ToLower(want))
		if err != nil || !hmac.Equal(got[:], wantBytes) {
			return connector.Verified{}, fmt.Errorf("%w: body does not match bodySHA256", connector.ErrUnauthenticated)
		}
	} else {
		params, err := url.ParseQuery(string(req.Body))
		if err != nil {
			return connector.Verified{}, fmt.Errorf("%w: malformed form body", connector.ErrUnauthenticated)
		}
		suffix = SortedParams(params)
	}
	for _, tok := range tokens {
		for _, u := range URLVariants(req.PublicURL) {
			if hmac.Equal(mac(tok, u+suffix), sig) {
				return connector.Verified{}, nil
			}
		}
	}
	return connector.Verified{}, fmt.Errorf("%w: X-Twilio-Signature does not match", connector.ErrUnauthenticated)
}

// Sign sets X-Twilio-Signature as Twilio would, with sec.Current's auth_token. A JSON body
// (Content-Type application/json) is signed the bodySHA256 way: the parameter is appended to
// req.PublicURL (and req.RawQuery/req.Query) when missing, and the URL alone is signed.
func (*Connector) Sign(req *connector.Request, sec connector.Secret, _ time.Time) error {
	tok := sec.Get(SecretAuthToken)
	if tok == "" {
		return fmt.Errorf("twilio: sign: no %s in current secret", SecretAuthToken)
	}
	if req.Headers == nil {
		req.Headers = map[string]string{}
	}
	var suffix string
	if isJSON(req.Header("content-type")) {
		if _, ok := bodySHA256(req.PublicURL); !ok {
			sum := sha256.Sum256(req.Body)
			param := paramBodySHA256 + "=" + hex.EncodeToString(sum[:])
			sep := "?"
			if strings.Contains(req.PublicURL, "?") {
				sep = "&"
			}
			req.PublicURL += sep + param
			if req.RawQuery != "" {
				req.RawQuery += "&"
			}
			req.RawQuery += param
			req.Query, _ = url.ParseQuery(req.RawQuery)
		}
	} else {
		params, err := url.ParseQuery(string(req.Body))
		if err != nil {
			return fmt.Errorf("twilio: sign: malformed form body: %v", err)
		}
		suffix = SortedParams(params)
	}
	req.Headers[headerSignature] = base64.StdEncoding.EncodeToString(mac(tok, req.PublicURL+suffix))
	return nil
}

func mac(key, msg string) []byte {
	h := hmac.New(sha1.New, []byte(key))
	h.Write([]byte(msg))
	return h.Sum(nil)
}

func isJSON(contentType string) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(ct), "application/json")
}

// bodySHA256 returns the bodySHA256 query parameter of a URL, if present.
func bodySHA256(raw string) (string, bool) {
	_, q, ok := strings.Cut(raw, "?")
	if !ok {
		return "", false
	}
	q, _, _ = strings.Cut(q, "#")
	vals, _ := url.ParseQuery(q)
	v := vals.Get(paramBodySHA256)
	return v, v != ""
}

// SortedParams returns the string Twilio appends to the URL before signing: every parameter
// name followed by its value, sorted by name (several values of one name sorted too), with no
// separators.
func SortedParams(params url.Values) string {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		vals := append([]string(nil), params[k]...)
		sort.Strings(vals)
		for _, v := range vals {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	return b.String()
}

// URLVariants returns the URL as given, then the same URL with the scheme's default port added
// when absent (https :443, http :80) or removed when present, as Twilio's validators try both.
// The rest of the URL is kept byte for byte.
func URLVariants(raw string) []string {
	out := []string{raw}
	i := strings.Index(raw, "://")
	if i < 0 {
		return out
	}
	scheme := strings.ToLower(raw[:i])
	var port string
	switch scheme {
	case "https":
		port = "443"
	case "http":
		port = "80"
	default:
		return out
	}
	rest := raw[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, host := "", authority
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		userinfo, host = authority[:at+1], authority[at+1:]
	}
	var alt string
	switch {
	case strings.HasSuffix(host, ":"+port):
		alt = strings.TrimSuffix(host, ":"+port)
	case hasPort(host):
		return out // a non-default port is signed as is
	default:
		alt = host + ":" + port
	}
	return append(out, raw[:i+3]+userinfo+alt+tail)
}

func hasPort(host string) bool {
	c := strings.LastIndexByte(host, ':')
	return c >= 0 && c > strings.LastIndexByte(host, ']')
}

// Parse maps one status callback (form-encoded, or a flat JSON object of the same parameters)
// to one call.status event.
func (*Connector) Parse(req *connector.Request, _ connector.Secret) (*connector.Parsed, error) {
	var (
		params  url.Values
		hashed  []byte
		extraUn []string
	)
	if isJSON(req.Header("content-type")) || (len(req.Body) > 0 && req.Body[0] == '{') {
		p, un, err := jsonParams(req.Body)
		if err != nil {
			return nil, err
		}
		params, extraUn, hashed = p, un, req.Body
	} else {
		p, err := url.ParseQuery(string(req.Body))
		if err != nil {
			return nil, fmt.Errorf("%w: malformed form body", connector.ErrUnusable)
		}
		params, hashed = p, []byte(p.Encode())
	}
	ev, err := mapCall(params, req.ReceivedAt)
	if err != nil {
		return nil, err
	}
	ev.PayloadHash = canonical.PayloadHash(hashed)
	ev.Unmapped = sortedUnique(append(ev.Unmapped, extraUn...))
	return &connector.Parsed{Events: []canonical.Event{*ev}}, nil
}

// jsonParams flattens a JSON object's scalar members into parameters; nested members are
// reported as unmapped.
func jsonParams(body []byte) (url.Values, []string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, nil, fmt.Errorf("%w: body is not a JSON object", connector.ErrUnusable)
	}
	params := url.Values{}
	var unmapped []string
	for k, raw := range obj {
		var v any
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("%w: malformed JSON member", connector.ErrUnusable)
		}
		switch x := v.(type) {
		case string:
			params.Set(k, x)
		case json.Number:
			params.Set(k, x.String())
		case bool:
			params.Set(k, strconv.FormatBool(x))
		case nil:
		default:
			unmapped = append(unmapped, k)
		}
	}
	return params, unmapped, nil
}

func mapCall(p url.Values, receivedAt time.Time) (*canonical.Event, error) {
	callSid := strings.TrimSpace(p.Get("CallSid"))
	if callSid == "" {
		return nil, fmt.Errorf("%w: no CallSid", connector.ErrUnusable)
	}
	status := strings.ToLower(strings.TrimSpace(p.Get("CallStatus")))
	seq := strings.TrimSpace(p.Get("SequenceNumber"))
	var key string
	switch {
	case seq != "":
		key = "twilio:call:" + callSid + ":" + seq
	case status != "":
		key = "twilio:call:" + callSid + ":" + status
	default:
		return nil, fmt.Errorf("%w: neither SequenceNumber nor CallStatus", connector.ErrUnusable)
	}

	occurred, ok := parseTimestamp(p.Get("Timestamp"))
	if !ok {
		// Twilio sends Timestamp only with status-callback events; without it the vendor gives
		// no event time, so the receipt time is the best available.
		occurred = receivedAt.UTC()
	}
	if occurred.IsZero() {
		return nil, fmt.Errorf("%w: no event time", connector.ErrUnusable)
	}

	rawDir := strings.ToLower(strings.TrimSpace(p.Get("Direction")))
	from, to := p.Get("From"), p.Get("To")
	direction, external := "", ""
	switch {
	case rawDir == "inbound":
		direction, external = "inbound", from
	case strings.HasPrefix(rawDir, "outbound"):
		direction, external = "outbound", to
	default:
		external = from
	}

	ev := &canonical.Event{
		Key:            key,
		Source:         Name,
		Kind:           canonical.KindCallStatus,
		OccurredAt:     occurred,
		MappingVersion: MappingVersion,
		ExternalIDs:    map[string]string{"call_sid": callSid},
	}
	var phones []string
	if e164, ok := identity.Phone(external); ok {
		phones = []string{e164}
	}
	ev.GroupKey = identity.GroupKey(nil, phones, Name, callSid)
	ev.Subject = canonical.Person{Phones: phones, Name: strings.TrimSpace(p.Get("CallerName"))}
	if direction == "outbound" {
		ev.Subject.Name = "" // CallerName describes From, which is ours on outbound calls
	}

	contact := map[string]string{"last_activity_at": occurred.Format(time.RFC3339)}
	if len(phones) > 0 {
		contact["phone"] = phones[0]
	}
	if status != "" {
		contact["last_call_status"] = status
	}
	ev.Fields = map[string]map[string]string{"contact": contact}

	act := &canonical.Activity{
		ID:        "call:" + callSid,
		Type:      "call",
		Status:    status,
		Direction: direction,
		Participants: []canonical.Participant{
			{Role: "caller", Phone: phoneOrRaw(from)},
			{Role: "callee", Phone: phoneOrRaw(to)},
		},
		Attrs: map[string]string{},
	}
	if d := strings.TrimSpace(p.Get("CallDuration")); d != "" {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 {
			act.DurationSec = n
		}
	}
	if rawDir != "" {
		act.Attrs["twilio_direction"] = rawDir
	}
	if v := p.Get("AnsweredBy"); v != "" {
		act.Attrs["answered_by"] = v
	}
	if v := p.Get("CallbackSource"); v != "" {
		act.Attrs["callback_source"] = v
	}
	if v := p.Get("ParentCallSid"); v != "" {
		act.Attrs["parent_call_sid"] = v
		ev.ExternalIDs["parent_call_sid"] = v
	}
	if seq != "" {
		act.Attrs["sequence_number"] = seq
	}
	if len(act.Attrs) == 0 {
		act.Attrs = nil
	}
	ev.Activity = act
	if sid := p.Get("AccountSid"); sid != "" {
		ev.ExternalIDs["account_sid"] = sid
		ev.Actor = &canonical.Actor{ID: "twilio:" + sid, Type: "vendor"}
	}

	for k := range p {
		if !mapped[k] && !ignored[k] {
			ev.Unmapped = append(ev.Unmapped, k)
		}
	}
	ev.Unmapped = sortedUnique(ev.Unmapped)
	return ev, nil
}

func phoneOrRaw(s string) string {
	if e, ok := identity.Phone(s); ok {
		return e
	}
	return strings.TrimSpace(s)
}

// parseTimestamp parses Twilio's RFC 2822 / RFC 1123Z Timestamp.
func parseTimestamp(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, false
	}
	for _, layout := range []string{time.RFC1123Z, time.RFC1123} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	if t, err := mail.ParseDate(s); err == nil {
		return t.UTC(), true
	}
	return time.Time{}, false
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
