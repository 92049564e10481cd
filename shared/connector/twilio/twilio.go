// Package twilio owns crmsync's Twilio Voice connector: it authenticates status callbacks with
// X-Twilio-Signature (HMAC-SHA1 with the auth token over the public URL and the sorted POST
// parameters, or over the URL alone with bodySHA256 for JSON bodies; the shared key and the
// announced algorithm under a Webhooks Rule), trying the configured public URL and the URLs
// rebuilt from the API Gateway request, and maps each callback to one canonical call.status event
// whose activity is the conversation (call:{ParentCallSid}, else call:{CallSid}), so every status
// update of both legs of a call merges into one timeline entry, on the external party: never a
// configured company number.
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
// to one call.status event; the secret's company_numbers decide which party is external.
func (*Connector) Parse(req *connector.Request, sec connector.Secret) (*connector.Parsed, error) {
	var (
		params        url.Values
		hashed        []byte
		extraUnmapped []string
	)
	if isJSON(req.Header("content-type")) || (len(req.Body) > 0 && req.Body[0] == '{') {
		decoded, nested, err := jsonParams(req.Body)
		if err != nil {
			return nil, err
		}
		params, extraUnmapped, hashed = decoded, nested, req.Body
	} else {
		decoded, err := url.ParseQuery(string(req.Body))
		if err != nil {
			return nil, fmt.Errorf("%w: malformed form body", connector.ErrUnusable)
		}
		params, hashed = decoded, []byte(decoded.Encode())
	}
	event, err := mapCall(params, req.ReceivedAt, CompanyNumbers(sec))
	if err != nil {
		return nil, err
	}
	event.PayloadHash = canonical.PayloadHash(hashed)
	event.Unmapped = sortedUnique(append(event.Unmapped, extraUnmapped...))
	return &connector.Parsed{Events: []canonical.Event{*event}}, nil
}

// jsonParams flattens a JSON object's scalar members into parameters; nested members are
// reported as unmapped.
func jsonParams(body []byte) (url.Values, []string, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil || members == nil {
		return nil, nil, fmt.Errorf("%w: body is not a JSON object", connector.ErrUnusable)
	}
	params := url.Values{}
	var unmapped []string
	for name, raw := range members {
		var value any
		decoder := json.NewDecoder(strings.NewReader(string(raw)))
		decoder.UseNumber()
		if err := decoder.Decode(&value); err != nil {
			return nil, nil, fmt.Errorf("%w: malformed JSON member", connector.ErrUnusable)
		}
		switch scalar := value.(type) {
		case string:
			params.Set(name, scalar)
		case json.Number:
			params.Set(name, scalar.String())
		case bool:
			params.Set(name, strconv.FormatBool(scalar))
		case nil:
		default:
			unmapped = append(unmapped, name)
		}
	}
	return params, unmapped, nil
}

// callback is what the mapping reads from a status callback's parameters.
type callback struct {
	callSid  string
	parent   string // ParentCallSid: set on a child leg (a <Dial> leg, the second leg of click-to-call)
	status   string // CallStatus, lower-cased
	sequence string // SequenceNumber
	key      string // the event key: twilio:call:{CallSid}:{SequenceNumber, else CallStatus}
	// rawDirection is Twilio's Direction, lower-cased (inbound, outbound-api, outbound-dial...).
	rawDirection string
	// direction is the conversation's direction as seen from the external party: on a parent (or
	// single) leg Twilio's Direction ("inbound", "outbound", "" when neither); on a child leg
	// "inbound" when the external party is From, "outbound" when it is To, else "" (the parent
	// leg says).
	direction string
	from, to  string
	// external is the external party's number (see externalParty); "" when there is none.
	external string
	// externalIsFrom is set when external is From (the caller).
	externalIsFrom bool
}

// root returns the call that identifies the conversation: the parent leg's CallSid on a child
// leg, else the leg's own.
func (c callback) root() string {
	if c.parent != "" {
		return c.parent
	}
	return c.callSid
}

// readCallback reads a callback's call, status, sequence, direction and external party, and
// derives its event key; a callback without CallSid, or with neither SequenceNumber nor
// CallStatus, is unusable.
func readCallback(params url.Values, company map[string]bool) (callback, error) {
	call := callback{
		callSid:  strings.TrimSpace(params.Get("CallSid")),
		parent:   strings.TrimSpace(params.Get("ParentCallSid")),
		status:   strings.ToLower(strings.TrimSpace(params.Get("CallStatus"))),
		sequence: strings.TrimSpace(params.Get("SequenceNumber")),
	}
	if call.callSid == "" {
		return callback{}, fmt.Errorf("%w: no CallSid", connector.ErrUnusable)
	}
	if call.parent == call.callSid {
		call.parent = ""
	}
	switch {
	case call.sequence != "":
		call.key = "twilio:call:" + call.callSid + ":" + call.sequence
	case call.status != "":
		call.key = "twilio:call:" + call.callSid + ":" + call.status
	default:
		return callback{}, fmt.Errorf("%w: neither SequenceNumber nor CallStatus", connector.ErrUnusable)
	}
	call.rawDirection = strings.ToLower(strings.TrimSpace(params.Get("Direction")))
	call.from, call.to = params.Get("From"), params.Get("To")
	call.external, call.externalIsFrom = externalParty(call, company)
	switch {
	case call.parent != "" && call.external == "":
	case call.parent != "" && call.externalIsFrom:
		call.direction = "inbound"
	case call.parent != "":
		call.direction = "outbound"
	case call.rawDirection == "inbound":
		call.direction = "inbound"
	case strings.HasPrefix(call.rawDirection, "outbound"):
		call.direction = "outbound"
	}
	return call, nil
}

// externalParty returns the number of the party that is not the company, and whether it is From:
//
//   - inbound: the caller (From), unless it is a company number;
//   - outbound-api / outbound-dial: the callee (To), unless it is a company number (an agent's
//     phone, the rep's leg of click-to-call); then, on a child leg, the parent's external party,
//     which is the child's From unless that is a company number too (a <Dial> presents the
//     parent's caller ID unless callerId overrides it);
//   - any other direction: From, unless it is a company number.
//
// "" means the leg names no external party (its event then has no subject and joins the
// conversation's activity through the leg that does).
func externalParty(call callback, company map[string]bool) (string, bool) {
	ours := func(number string) bool {
		e164, ok := identity.Phone(number)
		return ok && company[e164]
	}
	fromOrNone := func() (string, bool) {
		if ours(call.from) {
			return "", false
		}
		return call.from, true
	}
	switch {
	case call.rawDirection == "inbound":
		return fromOrNone()
	case strings.HasPrefix(call.rawDirection, "outbound"):
		if !ours(call.to) {
			return call.to, false
		}
		if call.parent != "" {
			return fromOrNone()
		}
		return "", false
	default:
		return fromOrNone()
	}
}

// SecretCompanyNumbers is the optional secret field listing the company's own numbers — its Twilio
// numbers and the agents' and reps' phones that calls are forwarded to — separated by commas,
// semicolons or new lines, each in any format identity.Phone reads (E.164 preferred). A company
// number is never a call's external party.
const SecretCompanyNumbers = "company_numbers"

// CompanyNumbers returns the secret's company numbers (current and previous) in E.164.
func CompanyNumbers(sec connector.Secret) map[string]bool {
	out := map[string]bool{}
	for _, list := range sec.Values(SecretCompanyNumbers) {
		for _, raw := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ';' || r == '\n' }) {
			if e164, ok := identity.Phone(raw); ok {
				out[e164] = true
			}
		}
	}
	return out
}

// callTime returns the callback's Timestamp, else when crmsync received it.
func callTime(timestamp string, receivedAt time.Time) (time.Time, error) {
	occurred, ok := parseTimestamp(timestamp)
	if !ok {
		// Twilio sends Timestamp only with status-callback events; without it the vendor gives
		// no event time, so the receipt time is the best available.
		occurred = receivedAt.UTC()
	}
	if occurred.IsZero() {
		return time.Time{}, fmt.Errorf("%w: no event time", connector.ErrUnusable)
	}
	return occurred, nil
}

// mapCall maps one callback's parameters to a call.status event (without its payload hash); the
// company numbers decide the external party.
func mapCall(params url.Values, receivedAt time.Time, company map[string]bool) (*canonical.Event, error) {
	call, err := readCallback(params, company)
	if err != nil {
		return nil, err
	}
	occurred, err := callTime(params.Get("Timestamp"), receivedAt)
	if err != nil {
		return nil, err
	}

	event := &canonical.Event{
		Key:            call.key,
		Source:         Name,
		Kind:           canonical.KindCallStatus,
		OccurredAt:     occurred,
		MappingVersion: MappingVersion,
		ExternalIDs:    map[string]string{"call_sid": call.callSid},
	}
	var phones []string
	if e164, ok := identity.Phone(call.external); ok {
		phones = []string{e164}
	}
	event.GroupKey = identity.GroupKey(nil, phones, Name, call.root())
	event.Subject = canonical.Person{Phones: phones}
	if call.externalIsFrom && len(phones) > 0 {
		event.Subject.Name = strings.TrimSpace(params.Get("CallerName")) // CallerName describes From
	}
	event.Fields = map[string]map[string]string{"contact": callContact(call, phones, occurred)}
	event.Activity = buildActivity(params, call)
	if call.parent != "" {
		event.ExternalIDs["parent_call_sid"] = call.parent
	}
	if accountSid := params.Get("AccountSid"); accountSid != "" {
		event.ExternalIDs["account_sid"] = accountSid
		event.Actor = &canonical.Actor{ID: "twilio:" + accountSid, Type: "vendor"}
	}
	event.Unmapped = unmappedParams(params)
	return event, nil
}

// callContact returns the contact fields a callback sets: the activity time, the external
// party's phone and the call's last status.
func callContact(call callback, phones []string, occurred time.Time) map[string]string {
	contact := map[string]string{"last_activity_at": occurred.Format(time.RFC3339)}
	if len(phones) > 0 {
		contact["phone"] = phones[0]
	}
	if call.status != "" {
		contact["last_call_status"] = call.status
	}
	return contact
}

// buildActivity returns the conversation's call activity — call:{ParentCallSid} on a child leg,
// else call:{CallSid}, so both legs of one call are one activity — with both parties, the
// duration and the Twilio details a timeline shows. Every leg records its own status as
// leg_status.{CallSid}; a child leg records its Direction and AnsweredBy as
// leg_direction.{CallSid} and leg_answered_by.{CallSid} and its parent as parent_call_sid, and
// leaves twilio_direction, answered_by and sequence_number to the parent leg.
func buildActivity(params url.Values, call callback) *canonical.Activity {
	activity := &canonical.Activity{
		ID:        "call:" + call.root(),
		Type:      "call",
		Status:    call.status,
		Direction: call.direction,
		Participants: []canonical.Participant{
			{Role: "caller", Phone: phoneOrRaw(call.from)},
			{Role: "callee", Phone: phoneOrRaw(call.to)},
		},
		Attrs: map[string]string{},
	}
	if duration := strings.TrimSpace(params.Get("CallDuration")); duration != "" {
		if seconds, err := strconv.Atoi(duration); err == nil && seconds >= 0 {
			activity.DurationSec = seconds
		}
	}
	set := func(name, value string) {
		if value != "" {
			activity.Attrs[name] = value
		}
	}
	set("callback_source", params.Get("CallbackSource"))
	if call.parent != "" {
		set("parent_call_sid", call.parent)
		set("leg_direction."+call.callSid, call.rawDirection)
		set("leg_answered_by."+call.callSid, params.Get("AnsweredBy"))
	} else {
		set("twilio_direction", call.rawDirection)
		set("answered_by", params.Get("AnsweredBy"))
		set("sequence_number", call.sequence)
	}
	set("leg_status."+call.callSid, call.status)
	if len(activity.Attrs) == 0 {
		activity.Attrs = nil
	}
	return activity
}

// unmappedParams lists, sorted, the parameters neither mapped nor deliberately ignored.
func unmappedParams(params url.Values) []string {
	var unmapped []string
	for name := range params {
		if !mapped[name] && !ignored[name] {
			unmapped = append(unmapped, name)
		}
	}
	return sortedUnique(unmapped)
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
