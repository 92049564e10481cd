// Package typeform owns crmsync's Typeform connector: it authenticates deliveries with
// Typeform-Signature (sha256=base64(HMAC-SHA256(secret, raw body))) and maps each form response
// to one lead.submitted event (key typeform:{event_id}) whose activity is the submission
// (form:{response token}). Answers, hidden fields, variables and the score are mapped to contact
// and custom fields by the form's mapping (config/typeform.yaml, see Mapping), else by defaults:
// known field refs, the answer's type and the question's title; the rest is listed as unmapped.
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
const MappingVersion = "typeform/2"

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
	mapping               *Mapping
}

// New returns the Typeform connector with the embedded mapping (DefaultMapping); should that
// not validate, it maps by the defaults alone (the webhook function refuses to start instead).
func New() *Connector {
	m, err := DefaultMapping()
	if err != nil {
		m = nil
	}
	return &Connector{mapping: m}
}

// NewWithMapping returns the Typeform connector mapping by m; nil maps by the defaults alone.
func NewWithMapping(m *Mapping) *Connector { return &Connector{mapping: m} }

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
	EventID      string        `json:"event_id"`
	EventType    string        `json:"event_type"`
	FormResponse *formResponse `json:"form_response"`
}

// formResponse is a delivery's form_response member: one person's submission of one form. It
// aliases an unnamed struct rather than defining a type because JSON decoding errors, which are
// kept as quarantine reasons, spell out the struct's type.
type formResponse = struct {
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
	Answers    []answer   `json:"answers"`
	Variables  []variable `json:"variables"`
	Calculated struct {
		Score json.RawMessage `json:"score"`
	} `json:"calculated"`
}

// variable is one of a response's variables (Typeform's logic variables, score among them).
type variable struct {
	Key    string          `json:"key"`
	Type   string          `json:"type"`
	Text   string          `json:"text"`
	Number json.RawMessage `json:"number"`
}

// value returns the variable's text or number.
func (v variable) value() string {
	if v.Type == "text" {
		return v.Text
	}
	return numberText(v.Number)
}

// numberText renders a JSON number ("" for null or absent).
func numberText(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if s == "null" {
		return ""
	}
	return s
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
	FileURL     string          `json:"file_url"`
	Date        string          `json:"date"`
	Boolean     *bool           `json:"boolean"`
	Number      json.RawMessage `json:"number"`
	Choice      *struct {
		Label string `json:"label"`
		Other string `json:"other"`
	} `json:"choice"`
	Choices *struct {
		Labels []string `json:"labels"`
		Other  string   `json:"other"`
	} `json:"choices"`
}

// value returns an answer's value as text: booleans as true/false, several choices joined with
// "; ", dates as sent (YYYY-MM-DD); "" for answers with no usable value (payments...).
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
		return numberText(a.Number)
	case "file_url":
		return a.FileURL
	case "date":
		return a.Date
	case "boolean":
		if a.Boolean != nil {
			return strconv.FormatBool(*a.Boolean)
		}
	case "choices":
		if a.Choices != nil {
			labels := append([]string(nil), a.Choices.Labels...)
			if a.Choices.Other != "" {
				labels = append(labels, a.Choices.Other)
			}
			return strings.Join(labels, "; ")
		}
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
func (c *Connector) Parse(req *connector.Request, _ connector.Secret) (*connector.Parsed, error) {
	envelope, status, err := readEnvelope(req.Body)
	if err != nil {
		return nil, err
	}
	response := envelope.FormResponse
	occurred, err := occurredAt(response, req.ReceivedAt)
	if err != nil {
		return nil, err
	}
	fields := newResponseFields(c.mapping, formIDOf(response))
	// Answers first: what the person typed beats what a link pre-filled.
	fields.mapAnswers(response.Answers, fieldTitles(response))
	fields.mapHidden(response.Hidden)
	fields.mapVariables(response.Variables)
	fields.mapScore(response.Calculated.Score)
	fields.contact["lead_source"] = Name
	fields.contact["last_activity_at"] = occurred.Format(time.RFC3339)

	event := buildEvent(req.Body, envelope, occurred, fields)
	event.Activity = buildActivity(response, status, event.Subject)
	return &connector.Parsed{Events: []canonical.Event{event}}, nil
}

// readEnvelope decodes a delivery, checks it carries a mapped event type, an event_id and a
// form response with a token, and returns it with the activity status its event type implies.
func readEnvelope(body []byte) (*delivery, string, error) {
	var envelope delivery
	if err := json.Unmarshal(body, &envelope); err != nil {
		return nil, "", fmt.Errorf("%w: malformed JSON: %v", connector.ErrUnusable, err)
	}
	status := ""
	switch envelope.EventType {
	case EventFormResponse:
		status = "submitted"
	case EventFormResponsePartial:
		status = "partial"
	default:
		return nil, "", fmt.Errorf("%w: unmapped Typeform event type %q", connector.ErrUnusable, envelope.EventType)
	}
	response := envelope.FormResponse
	switch {
	case envelope.EventID == "":
		return nil, "", fmt.Errorf("%w: no event_id", connector.ErrUnusable)
	case response == nil:
		return nil, "", fmt.Errorf("%w: no form_response", connector.ErrUnusable)
	case response.Token == "":
		return nil, "", fmt.Errorf("%w: no form_response.token", connector.ErrUnusable)
	}
	return &envelope, status, nil
}

// occurredAt returns when the response was submitted, else when its form was opened, else when
// crmsync received the delivery.
func occurredAt(response *formResponse, receivedAt time.Time) (time.Time, error) {
	var occurred time.Time
	for _, text := range []string{response.SubmittedAt, response.LandedAt} {
		if parsed, err := time.Parse(time.RFC3339Nano, text); err == nil {
			occurred = parsed.UTC()
			break
		}
	}
	if occurred.IsZero() {
		// Typeform gave no usable time (partial responses may lack submitted_at); the receipt
		// time is the best available.
		occurred = receivedAt.UTC()
	}
	if occurred.IsZero() {
		return time.Time{}, fmt.Errorf("%w: no event time", connector.ErrUnusable)
	}
	return occurred, nil
}

// responseFields collects what a response's answers and hidden fields say about the person:
// contact and account fields, the normalised identities, and the paths nothing mapped.
type responseFields struct {
	mapping  *Mapping // nil: defaults only
	formID   string
	contact  map[string]string
	account  map[string]string
	emails   []string
	phones   []string
	unmapped []string
}

func newResponseFields(m *Mapping, formID string) *responseFields {
	return &responseFields{mapping: m, formID: formID, contact: map[string]string{}, account: map[string]string{}}
}

// mapAnswers assigns each answer to the field the form's mapping names for it (by ref, then by
// title), else to the field its ref, its type or its question title implies, and records answers
// that map to nothing as unmapped. titles are the questions' titles by field id.
func (fields *responseFields) mapAnswers(answers []answer, titles map[string]string) {
	for _, reply := range answers {
		ref := reply.Field.Ref
		if ref == "" {
			ref = reply.Field.ID
		}
		title := titles[reply.Field.ID]
		target := fields.mapping.answerTarget(fields.formID, reply.Field.Ref, title)
		if target == "" {
			target = RefFields[normRef(reply.Field.Ref)]
		}
		if target == "" {
			switch reply.Type {
			case "email":
				target = "email"
			case "phone_number":
				target = "phone"
			case "text":
				target = TitleField(title)
			}
		}
		if target == "" || !fields.assign(target, reply.value()) {
			fields.unmapped = append(fields.unmapped, "form_response.answers[ref="+ref+"]")
		}
	}
}

// mapHidden assigns non-empty hidden fields, in key order, to the field the form's mapping or,
// failing that, their name names, and records the ones that map to nothing as unmapped.
func (fields *responseFields) mapHidden(hidden map[string]any) {
	hiddenKeys := make([]string, 0, len(hidden))
	for key := range hidden {
		hiddenKeys = append(hiddenKeys, key)
	}
	sort.Strings(hiddenKeys)
	for _, key := range hiddenKeys {
		value := scalar(hidden[key])
		if value == "" {
			continue // empty hidden fields carry nothing
		}
		target := fields.mapping.hiddenTarget(fields.formID, key)
		if target == "" {
			target = RefFields[normRef(key)]
		}
		if target == "" || !fields.assign(target, value) {
			fields.unmapped = append(fields.unmapped, "form_response.hidden."+key)
		}
	}
}

// mapVariables assigns the variables the form's mapping names and records the others (with a
// value) as unmapped: form_response.variables[key=<key>].
func (fields *responseFields) mapVariables(variables []variable) {
	for _, v := range variables {
		value := strings.TrimSpace(v.value())
		if v.Key == "" || value == "" {
			continue
		}
		target := fields.mapping.variableTarget(fields.formID, v.Key)
		if target == "" || !fields.assign(target, value) {
			fields.unmapped = append(fields.unmapped, "form_response.variables[key="+v.Key+"]")
		}
	}
}

// mapScore assigns calculated.score where the form's mapping names a field for it, else records
// it as unmapped.
func (fields *responseFields) mapScore(score json.RawMessage) {
	value := numberText(score)
	if value == "" {
		return
	}
	if target := fields.mapping.scoreTarget(fields.formID); target == "" || !fields.assign(target, value) {
		fields.unmapped = append(fields.unmapped, "form_response.calculated.score")
	}
}

// fieldTitles returns the response's question titles by field id, from its form definition.
func fieldTitles(response *formResponse) map[string]string {
	titles := make(map[string]string, len(response.Definition.Fields))
	for _, f := range response.Definition.Fields {
		titles[f.ID] = f.Title
	}
	return titles
}

// assign stores value in target (a contact field, "account.domain", or fullName: first word
// to first_name, the rest to last_name) unless that field is already set, normalising emails, phones and domains; it reports false when value is blank or
// does not normalise. A company also names the account.
func (fields *responseFields) assign(target, value string) bool {
	value = strings.TrimSpace(value)
	if value == "" {
		return false
	}
	switch target {
	case "email":
		email, ok := identity.Email(value)
		if !ok {
			return false
		}
		fields.emails = append(fields.emails, email)
		value = email
	case "phone":
		phone, ok := identity.Phone(value)
		if !ok {
			return false
		}
		fields.phones = append(fields.phones, phone)
		value = phone
	case fullName:
		first, last, _ := strings.Cut(strings.Join(strings.Fields(value), " "), " ")
		if last != "" {
			setOnce(fields.contact, "last_name", last)
		}
		setOnce(fields.contact, "first_name", first)
		return true
	case "account.domain":
		domain := domainOf(value)
		if domain == "" {
			return false
		}
		setOnce(fields.account, "domain", domain)
		return true
	}
	setOnce(fields.contact, target, value)
	if target == "company" {
		setOnce(fields.account, "name", value)
	}
	return true
}

// setOnce sets fields[key] to value unless the key is already set.
func setOnce(fields map[string]string, key, value string) {
	if _, set := fields[key]; !set {
		fields[key] = value
	}
}

// buildSubject names the person the response is about: every distinct email and phone, and the
// first and last name answered.
func buildSubject(fields *responseFields) canonical.Person {
	subject := canonical.Person{Emails: uniq(fields.emails), Phones: uniq(fields.phones)}
	if first, last := fields.contact["first_name"], fields.contact["last_name"]; first != "" || last != "" {
		subject.Name = strings.TrimSpace(first + " " + last)
	}
	return subject
}

// buildEvent assembles the lead.submitted event (without its activity) from the envelope and
// the mapped fields.
func buildEvent(body []byte, envelope *delivery, occurred time.Time, fields *responseFields) canonical.Event {
	response := envelope.FormResponse
	event := canonical.Event{
		Key:            "typeform:" + envelope.EventID,
		Source:         Name,
		Kind:           canonical.KindLeadSubmitted,
		OccurredAt:     occurred,
		GroupKey:       identity.GroupKey(fields.emails, fields.phones, Name, response.Token),
		Subject:        buildSubject(fields),
		Fields:         map[string]map[string]string{"contact": fields.contact},
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(body),
		ExternalIDs:    map[string]string{"event_id": envelope.EventID, "response_token": response.Token},
		Unmapped:       sortedUnique(fields.unmapped),
	}
	if len(fields.account) > 0 {
		event.Fields["account"] = fields.account
	}
	if formID := formIDOf(response); formID != "" {
		event.ExternalIDs["form_id"] = formID
	}
	return event
}

// formIDOf returns the response's form id, falling back to its form definition's id.
func formIDOf(response *formResponse) string {
	if response.FormID != "" {
		return response.FormID
	}
	return response.Definition.ID
}

// buildActivity returns the submission activity (form:{token}) with the subject, when it has an
// email or phone, as the "from" participant.
func buildActivity(response *formResponse, status string, subject canonical.Person) *canonical.Activity {
	activity := &canonical.Activity{
		ID:      "form:" + response.Token,
		Type:    "form",
		Status:  status,
		Subject: response.Definition.Title,
	}
	if formID := formIDOf(response); formID != "" {
		activity.Attrs = map[string]string{"form_id": formID}
	}
	if len(subject.Emails) > 0 || len(subject.Phones) > 0 {
		participant := canonical.Participant{Role: "from", Name: subject.Name}
		if len(subject.Emails) > 0 {
			participant.Email = subject.Emails[0]
		}
		if len(subject.Phones) > 0 {
			participant.Phone = subject.Phones[0]
		}
		activity.Participants = []canonical.Participant{participant}
	}
	return activity
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
