package msgraph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/identity"
)

// DefaultBaseURL is the Graph API base used when api.BaseURL is empty.
const DefaultBaseURL = "https://graph.microsoft.com/v1.0"

const (
	messageSelect = "internetMessageId,from,toRecipients,ccRecipients,subject,sentDateTime,receivedDateTime,conversationId"
	eventSelect   = "iCalUId,organizer,attendees,start,end,isCancelled,subject,lastModifiedDateTime,createdDateTime"
	maxBody       = 4 << 20
)

// Graph's JSON shapes, reduced to what the mapping reads.
type (
	emailAddress struct {
		Name    string `json:"name"`
		Address string `json:"address"`
	}
	recipient struct {
		EmailAddress emailAddress `json:"emailAddress"`
	}
	attendee struct {
		EmailAddress emailAddress `json:"emailAddress"`
		Type         string       `json:"type"`
	}
	dateTimeTimeZone struct {
		DateTime string `json:"dateTime"`
		TimeZone string `json:"timeZone"`
	}
	message struct {
		InternetMessageID string      `json:"internetMessageId"`
		From              *recipient  `json:"from"`
		ToRecipients      []recipient `json:"toRecipients"`
		CcRecipients      []recipient `json:"ccRecipients"`
		Subject           string      `json:"subject"`
		SentDateTime      string      `json:"sentDateTime"`
		ReceivedDateTime  string      `json:"receivedDateTime"`
		ConversationID    string      `json:"conversationId"`
	}
	event struct {
		ICalUID              string            `json:"iCalUId"`
		Organizer            *recipient        `json:"organizer"`
		Attendees            []attendee        `json:"attendees"`
		Start                *dateTimeTimeZone `json:"start"`
		End                  *dateTimeTimeZone `json:"end"`
		IsCancelled          bool              `json:"isCancelled"`
		Subject              string            `json:"subject"`
		LastModifiedDateTime string            `json:"lastModifiedDateTime"`
		CreatedDateTime      string            `json:"createdDateTime"`
	}
)

// Hydrate fetches the message or event behind a thin Graph notification (GET
// {BaseURL}/{resource} with the access_token as a bearer token) and fills the event in: Kind
// (email.received, email.sent, meeting.scheduled or meeting.canceled), Subject (the external
// people), Fields, Activity, GroupKey and OccurredAt; Hydrate is cleared. A deleted resource,
// or a 404, wraps connector.ErrNotFound; 429, 5xx and network failures wrap
// connector.ErrTransient.
func (c *Connector) Hydrate(ctx context.Context, ev *canonical.Event, sec connector.Secret, api connector.API) error {
	if ev == nil || ev.Hydrate == nil || ev.Hydrate.Resource == "" ||
		(ev.Hydrate.Object != "message" && ev.Hydrate.Object != "event") {
		return fmt.Errorf("%w: msgraph: event has no message or event to hydrate", connector.ErrUnusable)
	}
	ref := ev.Hydrate
	if ref.Change == "deleted" {
		// Graph has nothing left to fetch for a deleted item.
		return fmt.Errorf("%w: msgraph: %s deleted", connector.ErrNotFound, ref.Object)
	}
	token := sec.Get(SecretAccessToken)
	if token == "" {
		return errors.New("msgraph: no access_token configured")
	}
	sel := messageSelect
	if ref.Object == "event" {
		sel = eventSelect
	}
	body, err := fetch(ctx, api, ref.Resource, sel, token)
	if err != nil {
		return err
	}
	mailbox := mailboxOf(ref.Resource)
	if ref.Object == "message" {
		var m message
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("%w: msgraph: message is not JSON", connector.ErrUnusable)
		}
		return c.applyMessage(ev, &m, mailbox)
	}
	var e event
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("%w: msgraph: event is not JSON", connector.ErrUnusable)
	}
	return c.applyEvent(ev, &e, mailbox)
}

// resourceURL joins the base and the notification's resource path, refusing anything that
// could leave the base (absolute URLs, dot segments, queries).
func resourceURL(base, resource string) (*url.URL, error) {
	if strings.Contains(resource, "://") || strings.ContainsAny(resource, "?#\\") ||
		strings.HasPrefix(resource, "//") || strings.Contains(resource, "..") {
		return nil, fmt.Errorf("%w: msgraph: malformed resource", connector.ErrUnusable)
	}
	b, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || b.Host == "" {
		return nil, errors.New("msgraph: malformed API base URL")
	}
	u, err := url.Parse(b.String() + "/" + strings.TrimLeft(resource, "/"))
	if err != nil || u.Host != b.Host || u.Scheme != b.Scheme {
		return nil, fmt.Errorf("%w: msgraph: malformed resource", connector.ErrUnusable)
	}
	return u, nil
}

func fetch(ctx context.Context, api connector.API, resource, sel, token string) ([]byte, error) {
	base := api.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := resourceURL(base, resource)
	if err != nil {
		return nil, err
	}
	u.RawQuery = url.Values{"$select": {sel}}.Encode()
	client := api.Client
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, errors.New("msgraph: cannot build request")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	// Event start and end come back in UTC.
	req.Header.Set("Prefer", `outlook.timezone="UTC"`)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: msgraph: fetch: %v", connector.ErrTransient, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("%w: msgraph: read: %v", connector.ErrTransient, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return body, nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return nil, fmt.Errorf("%w: msgraph: status %d", connector.ErrNotFound, resp.StatusCode)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, fmt.Errorf("%w: msgraph: status %d", connector.ErrTransient, resp.StatusCode)
	default:
		return nil, fmt.Errorf("msgraph: status %d", resp.StatusCode)
	}
}

// mailboxOf returns the mailbox owner from users/{id}/..., lower-cased ("" for /me/ or others).
func mailboxOf(resource string) string {
	parts := strings.Split(strings.TrimLeft(resource, "/"), "/")
	if len(parts) >= 2 && strings.EqualFold(parts[0], "users") {
		return strings.ToLower(parts[1])
	}
	if len(parts) >= 1 {
		p := strings.ToLower(parts[0])
		if strings.HasPrefix(p, "users('") && strings.HasSuffix(p, "')") {
			return strings.TrimSuffix(strings.TrimPrefix(p, "users('"), "')")
		}
	}
	return ""
}

// isInternal reports whether a normalised address belongs to the organisation: the mailbox
// owner (when the resource names it by address) or one of the configured internal domains.
func (c *Connector) isInternal(addr, mailbox string) bool {
	return addr == mailbox || c.internal[identity.Domain(addr)]
}

func (c *Connector) applyMessage(ev *canonical.Event, m *message, mailbox string) error {
	from := ""
	fromName := ""
	if m.From != nil {
		from, _ = identity.Email(m.From.EmailAddress.Address)
		fromName = m.From.EmailAddress.Name
	}
	sent := from != "" && c.isInternal(from, mailbox)

	act := &canonical.Activity{Type: "email", Subject: m.Subject, Attrs: map[string]string{}}
	if id := normMessageID(m.InternetMessageID); id != "" {
		act.ID = "email:" + id
	} else {
		// No Message-Id (a draft or a malformed message): fall back to the Graph item.
		act.ID = "email:msgraph:" + ev.Hydrate.Resource
	}
	if m.ConversationID != "" {
		act.Attrs["conversation_id"] = m.ConversationID
	}
	if mailbox != "" {
		act.Attrs["mailbox"] = mailbox
	}
	var subject canonical.Person
	addP := func(role string, r recipient) {
		addr, ok := identity.Email(r.EmailAddress.Address)
		if !ok {
			return
		}
		act.Participants = append(act.Participants, canonical.Participant{Role: role, Email: addr, Name: r.EmailAddress.Name})
		if !c.isInternal(addr, mailbox) && !contains(subject.Emails, addr) {
			subject.Emails = append(subject.Emails, addr)
			if subject.Name == "" && len(subject.Emails) == 1 {
				subject.Name = r.EmailAddress.Name
			}
		}
	}
	if m.From != nil {
		addP("from", *m.From)
	}
	for _, r := range m.ToRecipients {
		addP("to", r)
	}
	for _, r := range m.CcRecipients {
		addP("cc", r)
	}

	var occurred string
	if sent {
		ev.Kind = canonical.KindEmailSent
		act.Direction = "outbound"
		occurred = first(m.SentDateTime, m.ReceivedDateTime)
		ev.Actor = &canonical.Actor{Email: from, Name: fromName, Type: "user"}
	} else {
		ev.Kind = canonical.KindEmailReceived
		act.Direction = "inbound"
		occurred = first(m.ReceivedDateTime, m.SentDateTime)
		if mailbox != "" {
			ev.Actor = &canonical.Actor{ID: mailbox, Type: "user"}
		}
	}
	if occurred != "" {
		t, err := time.Parse(time.RFC3339, occurred)
		if err != nil {
			return fmt.Errorf("%w: msgraph: message time malformed", connector.ErrUnusable)
		}
		ev.OccurredAt = t.UTC()
	}
	if len(act.Attrs) == 0 {
		act.Attrs = nil
	}
	finish(ev, subject, act)
	return nil
}

func (c *Connector) applyEvent(ev *canonical.Event, e *event, mailbox string) error {
	act := &canonical.Activity{Type: "meeting", Subject: e.Subject, Status: "scheduled"}
	ev.Kind = canonical.KindMeetingScheduled
	if e.IsCancelled {
		act.Status = "canceled"
		ev.Kind = canonical.KindMeetingCanceled
	}
	if e.ICalUID != "" {
		act.ID = "meeting:" + e.ICalUID
	} else {
		act.ID = "meeting:msgraph:" + ev.Hydrate.Resource
	}
	var err error
	if act.StartAt, err = graphTime(e.Start); err != nil {
		return err
	}
	if act.EndAt, err = graphTime(e.End); err != nil {
		return err
	}
	var subject canonical.Person
	add := func(role string, a emailAddress) {
		addr, ok := identity.Email(a.Address)
		if !ok {
			return
		}
		act.Participants = append(act.Participants, canonical.Participant{Role: role, Email: addr, Name: a.Name})
		if !c.isInternal(addr, mailbox) && !contains(subject.Emails, addr) {
			subject.Emails = append(subject.Emails, addr)
			if len(subject.Emails) == 1 {
				subject.Name = a.Name
			}
		}
	}
	if e.Organizer != nil {
		add("organizer", e.Organizer.EmailAddress)
		if addr, ok := identity.Email(e.Organizer.EmailAddress.Address); ok && c.isInternal(addr, mailbox) {
			ev.Actor = &canonical.Actor{Email: addr, Name: e.Organizer.EmailAddress.Name, Type: "user"}
		}
	}
	for _, a := range e.Attendees {
		add("attendee", a.EmailAddress)
	}
	if when := first(e.LastModifiedDateTime, e.CreatedDateTime); when != "" {
		t, err := time.Parse(time.RFC3339, when)
		if err != nil {
			return fmt.Errorf("%w: msgraph: event time malformed", connector.ErrUnusable)
		}
		ev.OccurredAt = t.UTC()
	}
	if mailbox != "" {
		act.Attrs = map[string]string{"mailbox": mailbox}
	}
	finish(ev, subject, act)
	return nil
}

// finish sets what every hydrated Graph event shares.
func finish(ev *canonical.Event, subject canonical.Person, act *canonical.Activity) {
	ev.Subject = subject
	ev.Activity = act
	contact := map[string]string{"last_activity_at": ev.OccurredAt.Format(time.RFC3339)}
	if len(subject.Emails) > 0 {
		contact["email"] = subject.Emails[0]
	}
	ev.Fields = map[string]map[string]string{"contact": contact}
	ev.GroupKey = identity.GroupKey(subject.Emails, nil, Name, ev.Hydrate.Resource)
	ev.Hydrate = nil
}

// graphTime reads a dateTimeTimeZone. Hydrate asks for UTC; an IANA zone is honoured, any other
// zone name is refused.
func graphTime(d *dateTimeTimeZone) (*time.Time, error) {
	if d == nil || d.DateTime == "" {
		return nil, nil
	}
	loc := time.UTC
	if tz := d.TimeZone; tz != "" && !strings.EqualFold(tz, "UTC") {
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("%w: msgraph: unknown time zone", connector.ErrUnusable)
		}
		loc = l
	}
	t, err := time.ParseInLocation("2006-01-02T15:04:05", d.DateTime, loc)
	if err != nil {
		return nil, fmt.Errorf("%w: msgraph: event time malformed", connector.ErrUnusable)
	}
	t = t.UTC()
	return &t, nil
}

// normMessageID strips angle brackets and lower-cases a Message-Id.
func normMessageID(s string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(s), "<>"))
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
