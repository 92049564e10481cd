// Package typeform owns crmsync's Typeform connector: it authenticates deliveries with
// Typeform-Signature (sha256=base64(HMAC-SHA256(secret, raw body))) and maps each form response
// to one lead.submitted event (key typeform:{event_id}) whose activity is the submission
// (form:{response token}), with answers and hidden fields mapped to contact fields by field ref.
package typeform

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
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
const Name = "typeform"

// MappingVersion identifies the mapping this package applies.
const MappingVersion = "typeform/1"

// SecretSigningKey is the secret field holding the webhook secret.
const SecretSigningKey = "signing_key"

// SecretAPIToken is the secret field holding the API token (used by the list API only).
const SecretAPIToken = "api_token"

// The Typeform event types this connector maps.
const (
	EventFormResponse        = "form_response"
	EventFormResponsePartial = "form_response_partial"
)

const headerSignature = "typeform-signature"

// RefFields maps normalised field refs (lower-case, '-' and ' ' as '_') of answers and hidden
// fields to contact fields. "account.name" and "account.domain" target the account entity.
var RefFields = map[string]string{
	"email": "email", "email_address": "email", "work_email": "email",
	"phone": "phone", "phone_number": "phone", "mobile": "phone",
	"first_name": "first_name", "firstname": "first_name", "given_name": "first_name",
	"last_name": "last_name", "lastname": "last_name", "surname": "last_name", "family_name": "last_name",
	"company": "company", "company_name": "company", "organization": "company", "organisation": "company",
	"job_title": "job_title", "title": "job_title", "role": "job_title",
	"campaign": "campaign", "utm_source": "utm_source", "utm_medium": "utm_medium",
	"utm_campaign": "utm_campaign", "utm_term": "utm_term", "utm_content": "utm_content",
	"timezone": "timezone",
	"domain":   "account.domain", "company_domain": "account.domain", "website": "account.domain",
}

// Connector is the Typeform webhook connector.
type Connector struct {
	connector.NoHandshake // the vendor has no subscription handshake
}

// New returns the Typeform connector.
func New() *Connector { return &Connector{} }

var (
	_ connector.Connector = (*Connector)(nil)
	_ connector.Signer    = (*Connector)(nil)
)

// Name returns "typeform".
func (*Connector) Name() string { return Name }

// ContentTypes lists the media type Typeform sends.
func (*Connector) ContentTypes() []string { return []string{"application/json"} }

// Verify checks Typeform-Signature: "sha256=" + base64(HMAC-SHA256(signing_key, raw body)) for
// the current or previous key. Typeform signs no timestamp.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, _ time.Time) (connector.Verified, error) {
	h := strings.TrimSpace(req.Header(headerSignature))
	if h == "" {
		return connector.Verified{}, fmt.Errorf("%w: missing Typeform-Signature", connector.ErrUnauthenticated)
	}
	b64, ok := strings.CutPrefix(h, "sha256=")
	if !ok {
		return connector.Verified{}, fmt.Errorf("%w: Typeform-Signature is not sha256", connector.ErrUnauthenticated)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: malformed Typeform-Signature", connector.ErrUnauthenticated)
	}
	keys := sec.Values(SecretSigningKey)
	if len(keys) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no %s configured", connector.ErrUnauthenticated, SecretSigningKey)
	}
	for _, k := range keys {
		if hmac.Equal(mac(k, req.Body), sig) {
			return connector.Verified{}, nil
		}
	}
	return connector.Verified{}, fmt.Errorf("%w: Typeform-Signature does not match", connector.ErrUnauthenticated)
}

// Sign sets Typeform-Signature as Typeform would, with sec.Current's signing_key.
func (*Connector) Sign(req *connector.Request, sec connector.Secret, _ time.Time) error {
	k := sec.Get(SecretSigningKey)
	if k == "" {
		return fmt.Errorf("typeform: sign: no %s in current secret", SecretSigningKey)
	}
	if req.Headers == nil {
		req.Headers = map[string]string{}
	}
	req.Headers[headerSignature] = "sha256=" + base64.StdEncoding.EncodeToString(mac(k, req.Body))
	return nil
}

func mac(key string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(key))
	h.Write(body)
	return h.Sum(nil)
}

type delivery struct {
	EventID      string `json:"event_id"`
	EventType    string `json:"event_type"`
	FormResponse *struct {
		FormID      string         `json:"form_id"`
		Token       string         `json:"token"`
		LandedAt    string         `json:"landed_at"`
		SubmittedAt string         `json:"submitted_at"`
		Hidden      map[string]any `json:"hidden"`
		Definition  struct {
			ID     string `json:"id"`
			Title  string `json:"title"`
			Fields []struct {
				ID    string `json:"id"`
				Ref   string `json:"ref"`
				Type  string `json:"type"`
				Title string `json:"title"`
			} `json:"fields"`
		} `json:"definition"`
		Answers []answer `json:"answers"`
	} `json:"form_response"`
}

type answer struct {
	Type  string `json:"type"`
	Field struct {
		ID   string `json:"id"`
		Ref  string `json:"ref"`
		Type string `json:"type"`
	} `json:"field"`
	Text        string          `json:"text"`
	Email       string          `json:"email"`
	PhoneNumber string          `json:"phone_number"`
	URL         string          `json:"url"`
	Number      json.RawMessage `json:"number"`
	Choice      *struct {
		Label string `json:"label"`
		Other string `json:"other"`
	} `json:"choice"`
}

// value returns an answer's single textual value, or "" for answers with no single value
// (choices, files, payments, booleans...).
func (a answer) value() string {
	switch a.Type {
	case "text":
		return a.Text
	case "email":
		return a.Email
	case "phone_number":
		return a.PhoneNumber
	case "url":
		return a.URL
	case "number":
		return strings.TrimSpace(string(a.Number))
	case "choice":
		if a.Choice != nil {
			if a.Choice.Label != "" {
				return a.Choice.Label
			}
			return a.Choice.Other
		}
	}
	return ""
}

func normRef(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.NewReplacer("-", "_", " ", "_").Replace(s)
}

// Parse maps a form_response (or form_response_partial) delivery to one lead.submitted event.
func (*Connector) Parse(req *connector.Request, _ connector.Secret) (*connector.Parsed, error) {
	var d delivery
	if err := json.Unmarshal(req.Body, &d); err != nil {
		return nil, fmt.Errorf("%w: malformed JSON: %v", connector.ErrUnusable, err)
	}
	status := ""
	switch d.EventType {
	case EventFormResponse:
		status = "submitted"
	case EventFormResponsePartial:
		status = "partial"
	default:
		return nil, fmt.Errorf("%w: unmapped Typeform event type %q", connector.ErrUnusable, d.EventType)
	}
	fr := d.FormResponse
	switch {
	case d.EventID == "":
		return nil, fmt.Errorf("%w: no event_id", connector.ErrUnusable)
	case fr == nil:
		return nil, fmt.Errorf("%w: no form_response", connector.ErrUnusable)
	case fr.Token == "":
		return nil, fmt.Errorf("%w: no form_response.token", connector.ErrUnusable)
	}

	var occurred time.Time
	for _, s := range []string{fr.SubmittedAt, fr.LandedAt} {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			occurred = t.UTC()
			break
		}
	}
	if occurred.IsZero() {
		// Typeform gave no usable time (partial responses may lack submitted_at); the receipt
		// time is the best available.
		occurred = req.ReceivedAt.UTC()
	}
	if occurred.IsZero() {
		return nil, fmt.Errorf("%w: no event time", connector.ErrUnusable)
	}

	contact := map[string]string{}
	account := map[string]string{}
	var emails, phones, unmapped []string
	assign := func(target, v string) bool {
		v = strings.TrimSpace(v)
		if v == "" {
			return false
		}
		switch target {
		case "email":
			e, ok := identity.Email(v)
			if !ok {
				return false
			}
			emails = append(emails, e)
			v = e
		case "phone":
			p, ok := identity.Phone(v)
			if !ok {
				return false
			}
			phones = append(phones, p)
			v = p
		case "account.domain":
			dom := domainOf(v)
			if dom == "" {
				return false
			}
			if _, set := account["domain"]; !set {
				account["domain"] = dom
			}
			return true
		}
		if _, set := contact[target]; !set {
			contact[target] = v
		}
		if target == "company" {
			if _, set := account["name"]; !set {
				account["name"] = v
			}
		}
		return true
	}

	// Answers first: what the person typed beats what a link pre-filled.
	for _, a := range fr.Answers {
		ref := a.Field.Ref
		if ref == "" {
			ref = a.Field.ID
		}
		target := RefFields[normRef(a.Field.Ref)]
		if target == "" {
			switch a.Type {
			case "email":
				target = "email"
			case "phone_number":
				target = "phone"
			}
		}
		if target == "" || !assign(target, a.value()) {
			unmapped = append(unmapped, "form_response.answers[ref="+ref+"]")
		}
	}
	hiddenKeys := make([]string, 0, len(fr.Hidden))
	for k := range fr.Hidden {
		hiddenKeys = append(hiddenKeys, k)
	}
	sort.Strings(hiddenKeys)
	for _, k := range hiddenKeys {
		s := scalar(fr.Hidden[k])
		if s == "" {
			continue // empty hidden fields carry nothing
		}
		if target := RefFields[normRef(k)]; target == "" || !assign(target, s) {
			unmapped = append(unmapped, "form_response.hidden."+k)
		}
	}
	contact["lead_source"] = Name
	contact["last_activity_at"] = occurred.Format(time.RFC3339)

	ev := canonical.Event{
		Key:            "typeform:" + d.EventID,
		Source:         Name,
		Kind:           canonical.KindLeadSubmitted,
		OccurredAt:     occurred,
		GroupKey:       identity.GroupKey(emails, phones, Name, fr.Token),
		Subject:        canonical.Person{Emails: uniq(emails), Phones: uniq(phones)},
		Fields:         map[string]map[string]string{"contact": contact},
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(req.Body),
		ExternalIDs:    map[string]string{"event_id": d.EventID, "response_token": fr.Token},
		Unmapped:       sortedUnique(unmapped),
	}
	if first, last := contact["first_name"], contact["last_name"]; first != "" || last != "" {
		ev.Subject.Name = strings.TrimSpace(first + " " + last)
	}
	if len(account) > 0 {
		ev.Fields["account"] = account
	}
	formID := fr.FormID
	if formID == "" {
		formID = fr.Definition.ID
	}
	act := &canonical.Activity{
		ID:      "form:" + fr.Token,
		Type:    "form",
		Status:  status,
		Subject: fr.Definition.Title,
	}
	if formID != "" {
		ev.ExternalIDs["form_id"] = formID
		act.Attrs = map[string]string{"form_id": formID}
	}
	if len(ev.Subject.Emails) > 0 || len(ev.Subject.Phones) > 0 {
		p := canonical.Participant{Role: "from", Name: ev.Subject.Name}
		if len(ev.Subject.Emails) > 0 {
			p.Email = ev.Subject.Emails[0]
		}
		if len(ev.Subject.Phones) > 0 {
			p.Phone = ev.Subject.Phones[0]
		}
		act.Participants = []canonical.Participant{p}
	}
	ev.Activity = act
	return &connector.Parsed{Events: []canonical.Event{ev}}, nil
}

// scalar renders a hidden-field value (Typeform sends strings) as text.
func scalar(v any) string {
	switch x := v.(type) {
	case string:
		return strings.TrimSpace(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

// domainOf returns the lower-case host of a website or bare domain answer.
func domainOf(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	h := strings.TrimPrefix(strings.ToLower(u.Hostname()), "www.")
	if !strings.Contains(h, ".") || strings.ContainsAny(h, " @") {
		return ""
	}
	return h
}

func uniq(in []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
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
