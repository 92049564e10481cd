// Package metaleads owns crmsync's Meta Lead Ads connector (route /webhooks/meta-leads): the
// Page webhook subscription handshake (hub.challenge), X-Hub-Signature-256 verification, parsing
// of "leadgen" changes into thin notification events, and hydrating those events through the
// Graph API (GET /{leadgen_id}) into lead.submitted events. Every change of a batched delivery is
// parsed on its own; a bad one is rejected alone.
package metaleads

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/url"
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
	Name = "meta-leads"
	// MappingVersion identifies the mapping this package applies.
	MappingVersion = "meta-leads/1"

	// SecretAppSecret is the secret field holding the Meta app secret (signs deliveries).
	SecretAppSecret = "app_secret"
	// SecretVerifyToken is the secret field holding the handshake verify token.
	SecretVerifyToken = "verify_token"
	// SecretAccessToken is the secret field holding the Page access token used to hydrate leads.
	SecretAccessToken = "access_token"

	headerSignature256  = "x-hub-signature-256"
	headerSignatureSHA1 = "x-hub-signature"
)

// Connector is the Meta Lead Ads connector. The zero value is ready to use.
type Connector struct{}

// New returns the Meta Lead Ads connector.
func New() *Connector { return &Connector{} }

var (
	_ connector.Connector = (*Connector)(nil)
	_ connector.Signer    = (*Connector)(nil)
	_ connector.Hydrator  = (*Connector)(nil)
)

// Name returns "meta-leads".
func (*Connector) Name() string { return Name }

// ContentTypes returns application/json.
func (*Connector) ContentTypes() []string { return []string{"application/json"} }

// Handshake answers Meta's subscription check: a GET carrying hub.mode. When hub.mode is
// "subscribe" and hub.verify_token equals a configured verify_token (constant time), it answers
// 200 text/plain with hub.challenge; otherwise 403.
func (*Connector) Handshake(req *connector.Request, sec connector.Secret) (*connector.Response, bool) {
	if req.Method != http.MethodGet {
		return nil, false
	}
	q := query(req)
	if !q.Has("hub.mode") && !q.Has("hub.verify_token") && !q.Has("hub.challenge") {
		return nil, false
	}
	forbidden := &connector.Response{Status: http.StatusForbidden, ContentType: "text/plain", Body: "forbidden"}
	if q.Get("hub.mode") != "subscribe" {
		return forbidden, true
	}
	got := []byte(q.Get("hub.verify_token"))
	for _, want := range sec.Values(SecretVerifyToken) {
		if connector.Equal([]byte(want), got) {
			return &connector.Response{Status: http.StatusOK, ContentType: "text/plain", Body: q.Get("hub.challenge")}, true
		}
	}
	return forbidden, true
}

// Verify checks X-Hub-Signature-256 (sha256=<hex HMAC-SHA256(app_secret, raw body)>) with every
// configured app_secret, current then previous. The legacy SHA-1 header is ignored.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, _ time.Time) (connector.Verified, error) {
	h := strings.TrimSpace(req.Header(headerSignature256))
	if h == "" {
		return connector.Verified{}, fmt.Errorf("%w: missing X-Hub-Signature-256", connector.ErrUnauthenticated)
	}
	algo, hexSig, ok := strings.Cut(h, "=")
	if !ok || algo != "sha256" {
		return connector.Verified{}, fmt.Errorf("%w: malformed X-Hub-Signature-256", connector.ErrUnauthenticated)
	}
	given, err := hex.DecodeString(hexSig)
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed X-Hub-Signature-256", connector.ErrUnauthenticated)
	}
	secrets := sec.Values(SecretAppSecret)
	if len(secrets) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no app_secret configured", connector.ErrUnauthenticated)
	}
	for _, s := range secrets {
		if connector.Equal(mac(sha256.New, s, req.Body), given) {
			return connector.Verified{}, nil
		}
	}
	return connector.Verified{}, fmt.Errorf("%w: signature mismatch", connector.ErrUnauthenticated)
}

// Sign sets X-Hub-Signature-256 and the legacy X-Hub-Signature from sec.Current's app_secret, as
// Meta does.
func (*Connector) Sign(req *connector.Request, sec connector.Secret, _ time.Time) error {
	s := sec.Get(SecretAppSecret)
	if s == "" {
		return errors.New("meta-leads: no current app_secret")
	}
	if req.Headers == nil {
		req.Headers = map[string]string{}
	}
	req.Headers[headerSignature256] = "sha256=" + hex.EncodeToString(mac(sha256.New, s, req.Body))
	req.Headers[headerSignatureSHA1] = "sha1=" + hex.EncodeToString(mac(sha1.New, s, req.Body))
	return nil
}

// query returns the request's query parameters, parsing RawQuery when Query is not filled in.
func query(req *connector.Request) url.Values {
	if req.Query != nil {
		return req.Query
	}
	q, _ := url.ParseQuery(req.RawQuery)
	return q
}

func mac(h func() hash.Hash, key string, body []byte) []byte {
	m := hmac.New(h, []byte(key))
	m.Write(body)
	return m.Sum(nil)
}

// delivery is the Page webhook envelope; entries are decoded one by one.
type delivery struct {
	Object string            `json:"object"`
	Entry  []json.RawMessage `json:"entry"`
}

// entry is one entry of a delivery, with its id and time kept raw so a rejected change can be
// stored as a delivery of its own.
type entry struct {
	ID      json.RawMessage   `json:"id,omitempty"`
	Time    json.RawMessage   `json:"time,omitempty"`
	Changes []json.RawMessage `json:"changes"`
}

type change struct {
	Field string          `json:"field"`
	Value json.RawMessage `json:"value"`
}

// leadgenValue is a "leadgen" change's value.
type leadgenValue struct {
	LeadgenID   flexString `json:"leadgen_id"`
	PageID      flexString `json:"page_id"`
	FormID      flexString `json:"form_id"`
	AdgroupID   flexString `json:"adgroup_id"`
	AdID        flexString `json:"ad_id"`
	CreatedTime flexInt    `json:"created_time"`
}

var knownValueKeys = map[string]bool{
	"leadgen_id": true, "page_id": true, "form_id": true, "adgroup_id": true, "ad_id": true, "created_time": true,
}

func unusable(format string, a ...any) error {
	return fmt.Errorf("%w: meta-leads: "+format, append([]any{connector.ErrUnusable}, a...)...)
}

// Parse handles every change of every entry on its own (Meta batches many entries, each with
// many changes, in one delivery). Each "leadgen" change becomes a thin KindNotification event
// keyed meta-leads:{leadgen_id}; changes of other fields are noted and skipped. A malformed
// entry or leadgen change (no leadgen_id, a value or time that does not decode) is a Rejection
// whose Index counts changes across entries in order and whose Raw is a delivery holding only
// that change. The delivery as a whole is unusable only when it is not a Page webhook delivery
// or holds neither a leadgen change nor a rejected item.
func (*Connector) Parse(req *connector.Request, _ connector.Secret) (*connector.Parsed, error) {
	var d delivery
	if err := json.Unmarshal(req.Body, &d); err != nil {
		return nil, unusable("body is not a Page webhook delivery")
	}
	out := &connector.Parsed{}
	index := 0
	for ei, rawEntry := range d.Entry {
		var e entry
		if err := json.Unmarshal(rawEntry, &e); err != nil {
			out.Rejected = append(out.Rejected, connector.Rejection{Index: index,
				Reason: fmt.Sprintf("entry[%d] malformed", ei), Raw: single(d.Object, rawEntry)})
			index++
			continue
		}
		var entryID flexString
		var entryTime flexInt
		idErr := decodeOptional(e.ID, &entryID)
		timeErr := decodeOptional(e.Time, &entryTime)
		for ci, raw := range e.Changes {
			at := index
			index++
			reject := func(reason string) {
				one := entry{ID: e.ID, Time: e.Time, Changes: []json.RawMessage{raw}}
				b, _ := json.Marshal(one)
				out.Rejected = append(out.Rejected, connector.Rejection{Index: at,
					Reason: fmt.Sprintf("entry[%d].changes[%d]: %s", ei, ci, reason), Raw: single(d.Object, b)})
			}
			var c change
			if err := json.Unmarshal(raw, &c); err != nil {
				reject("malformed")
				continue
			}
			if c.Field != "leadgen" {
				out.Notes = append(out.Notes, "ignored change field: "+noteSafe(c.Field))
				continue
			}
			if idErr != nil || timeErr != nil {
				reject("entry id or time malformed")
				continue
			}
			var v leadgenValue
			if err := json.Unmarshal(c.Value, &v); err != nil {
				reject("value malformed")
				continue
			}
			if v.LeadgenID == "" {
				reject("no leadgen_id")
				continue
			}
			ev := leadEvent(v, c.Value, raw, entryID, entryTime, req.ReceivedAt)
			if err := ev.Validate(); err != nil {
				reject("maps to an invalid event")
				continue
			}
			out.Events = append(out.Events, ev)
		}
	}
	if len(out.Events) == 0 && len(out.Rejected) == 0 {
		return nil, unusable("no leadgen change in delivery")
	}
	return out, nil
}

// leadEvent maps one leadgen change to its thin event.
func leadEvent(v leadgenValue, value, raw json.RawMessage, entryID flexString, entryTime flexInt, receivedAt time.Time) canonical.Event {
	ev := canonical.Event{
		Key:            "meta-leads:" + string(v.LeadgenID),
		Source:         Name,
		Kind:           canonical.KindNotification,
		GroupKey:       identity.GroupKey(nil, nil, Name, string(v.LeadgenID)),
		MappingVersion: MappingVersion,
		// The change object describes this lead: its bytes are identical across retries of
		// the delivery, whatever else the batch holds.
		PayloadHash: canonical.PayloadHash(raw),
		Hydrate:     &canonical.HydrateRef{Object: "lead", Resource: string(v.LeadgenID)},
		ExternalIDs: map[string]string{"leadgen_id": string(v.LeadgenID)},
	}
	pageID := v.PageID
	if pageID == "" {
		pageID = entryID
	}
	putID(ev.ExternalIDs, "page_id", pageID)
	putID(ev.ExternalIDs, "form_id", v.FormID)
	putID(ev.ExternalIDs, "ad_id", v.AdID)
	putID(ev.ExternalIDs, "adgroup_id", v.AdgroupID)
	switch {
	case v.CreatedTime > 0:
		ev.OccurredAt = time.Unix(int64(v.CreatedTime), 0).UTC()
	case entryTime > 0:
		ev.OccurredAt = unixMaybeMillis(int64(entryTime))
	default:
		// Meta gave no time for this lead: the receipt time stands in until hydration
		// replaces it with the lead's created_time.
		ev.OccurredAt = receivedAt.UTC()
	}
	var vm map[string]json.RawMessage
	if json.Unmarshal(value, &vm) == nil {
		for k := range vm {
			if !knownValueKeys[k] {
				ev.Unmapped = append(ev.Unmapped, "entry.changes.value."+k)
			}
		}
		ev.Unmapped = sortedUnique(ev.Unmapped)
	}
	return ev
}

// decodeOptional decodes raw into v unless it is absent.
func decodeOptional(raw json.RawMessage, v json.Unmarshaler) error {
	if len(raw) == 0 {
		return nil
	}
	return v.UnmarshalJSON(raw)
}

// single wraps one raw entry as a delivery of its own.
func single(object string, rawEntry json.RawMessage) []byte {
	b, err := json.Marshal(struct {
		Object string            `json:"object,omitempty"`
		Entry  []json.RawMessage `json:"entry"`
	}{object, []json.RawMessage{rawEntry}})
	if err != nil {
		// rawEntry came out of a decoded document, so it is valid JSON.
		return rawEntry
	}
	return b
}

// unixMaybeMillis reads an entry time, which Meta sends in seconds (and some samples in ms).
func unixMaybeMillis(n int64) time.Time {
	if n > 1e12 {
		return time.UnixMilli(n).UTC()
	}
	return time.Unix(n, 0).UTC()
}

func putID(m map[string]string, k string, v flexString) {
	if v != "" {
		m[k] = string(v)
	}
}

// noteSafe keeps a vendor field name short and printable for a log note.
func noteSafe(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strconv.Quote(s)
}

// flexString accepts a JSON string or number (Meta sends ids both ways).
type flexString string

// UnmarshalJSON implements json.Unmarshaler.
func (f *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = flexString(strings.TrimSpace(s))
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*f = flexString(n.String())
	return nil
}

// flexInt accepts a JSON integer or a string holding one.
type flexInt int64

// UnmarshalJSON implements json.Unmarshaler.
func (f *flexInt) UnmarshalJSON(b []byte) error {
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	if s == "" {
		return nil
	}
	n, err := strconv.ParseInt(string(s), 10, 64)
	if err != nil {
		fl, ferr := strconv.ParseFloat(string(s), 64)
		if ferr != nil || fl < 0 || fl > 1e15 {
			return fmt.Errorf("not an integer time")
		}
		n = int64(fl)
	}
	*f = flexInt(n)
	return nil
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
