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
	messageSelect = "internetMessageId,from,toRecipients,ccRecipients,subject,sentDateTime,receivedDateTime,conversationId,isDraft"
	eventSelect   = "iCalUId,organizer,attendees,start,end,isCancelled,subject,lastModifiedDateTime,createdDateTime"
	userSelect    = "mail,userPrincipalName"
	maxBody       = 4 << 20
	// maxOwners bounds the mailbox-owner cache; it is emptied when full.
	maxOwners = 10000
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
		IsDraft           bool        `json:"isDraft"`
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
	user struct {
		Mail              string `json:"mail"`
		UserPrincipalName string `json:"userPrincipalName"`
	}
	graphError struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
)

// owner is a mailbox owner's normalised addresses (mail, then userPrincipalName).
type owner struct{ addrs []string }

// mailbox is the mailbox a notification's resource names: the path segment after users/ (a
// user id or an address) and its owner's addresses.
type mailbox struct {
	id    string
	addrs []string
}

// primary is the mailbox's address, else its id.
func (m mailbox) primary() string {
	if len(m.addrs) > 0 {
		return m.addrs[0]
	}
	return m.id
}

// Hydrate fetches the message or event behind a thin Graph notification and fills the event in:
// Kind (email.received, email.sent, meeting.scheduled or meeting.canceled), Subject (the
// external people), Fields, Activity, GroupKey and OccurredAt; Hydrate is cleared. The mailbox
// owner (Graph names the mailbox by user id) is resolved with GET /users/{id} and cached; a
// message whose from is the owner (or in an internal domain) is sent, and the owner is never the
// subject. Drafts, deleted messages and lifecycle events (object LifecycleObject: the ledger
// records them for the subscription manager) are skipped (connector.Skip). A deleted event, or one
// with isCancelled, is a canceled meeting. Errors: 404/410 wrap connector.ErrNotFound; 429, 5xx
// and network failures connector.ErrTransient; 401/403 (after one token refresh when a token
// source is configured, see WithTokenSource) and other 4xx connector.ErrPermanent; the token
// source's failures keep their class.
func (c *Connector) Hydrate(ctx context.Context, ev *canonical.Event, sec connector.Secret, api connector.API) error {
	if ev != nil && ev.Hydrate != nil && ev.Hydrate.Object == LifecycleObject {
		// Nothing to fetch or apply: the ledger entry the worker writes for this skip is what the
		// subscription manager reads (shared/graphsub).
		return connector.Skip("msgraph: lifecycle " + quote(ev.Hydrate.Change) + " of " + quote(ev.ExternalIDs["subscription_id"]) +
			": recorded for the subscription manager")
	}
	if ev == nil || ev.Hydrate == nil || ev.Hydrate.Resource == "" ||
		(ev.Hydrate.Object != "message" && ev.Hydrate.Object != "event") {
		return fmt.Errorf("%w: msgraph: event has no message or event to hydrate", connector.ErrUnusable)
	}
	ref := ev.Hydrate
	if ref.Object == "message" && ref.Change == "deleted" {
		// Deleting mail does not undo it: nothing to apply, nothing left to fetch.
		return connector.Skip("msgraph: message deleted")
	}
	g := &graphClient{c: c, api: api, sec: sec, tenant: ev.ExternalIDs["tenant_id"]}
	sel := messageSelect
	if ref.Object == "event" {
		sel = eventSelect
	}
	body, err := g.get(ctx, canonicalPath(ref.Resource), sel)
	if err != nil {
		return err
	}
	if ref.Object == "message" {
		var m message
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("%w: msgraph: message is not JSON", connector.ErrUnusable)
		}
		if m.IsDraft {
			return connector.Skip("msgraph: message is a draft")
		}
		mb, err := g.mailbox(ctx, mailboxOf(ref.Resource))
		if err != nil {
			return err
		}
		return c.applyMessage(ev, &m, mb)
	}
	var e event
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("%w: msgraph: event is not JSON", connector.ErrUnusable)
	}
	mb, err := g.mailbox(ctx, mailboxOf(ref.Resource))
	if err != nil {
		return err
	}
	return c.applyEvent(ev, &e, mb)
}

// canonicalPath lower-cases the collection names of a resource path (Graph sends
// Users/{id}/Messages/{id}; paths are case-insensitive there, ids are not).
func canonicalPath(resource string) string {
	parts := strings.Split(resource, "/")
	for i, p := range parts {
		switch strings.ToLower(p) {
		case "users", "messages", "events", "calendar", "calendars", "mailfolders":
			parts[i] = strings.ToLower(p)
		}
	}
	return strings.Join(parts, "/")
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

// graphClient makes one hydration's Graph calls.
type graphClient struct {
	c      *Connector
	api    connector.API
	sec    connector.Secret
	tenant string
}

// get GETs {BaseURL}/{path}?$select=sel and returns a 200 answer's body. With a token source, a
// 401 invalidates the tenant's token and retries once with a new one.
func (g *graphClient) get(ctx context.Context, path, sel string) ([]byte, error) {
	base := g.api.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := resourceURL(base, path)
	if err != nil {
		return nil, err
	}
	u.RawQuery = url.Values{"$select": {sel}}.Encode()
	for attempt := 0; ; attempt++ {
		token, err := g.token(ctx)
		if err != nil {
			return nil, err
		}
		status, body, err := g.do(ctx, u, token)
		if err != nil {
			return nil, err
		}
		if status == http.StatusUnauthorized && g.c.tokens != nil && attempt == 0 {
			g.c.tokens.Invalidate(g.tenant)
			continue
		}
		return classify(status, body)
	}
}

// token returns the bearer token: the token source's for the notification's tenant, else the
// secret's static access_token. A token source's unclassified failure counts as transient.
func (g *graphClient) token(ctx context.Context) (string, error) {
	if g.c.tokens == nil {
		if t := g.sec.Get(SecretAccessToken); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("%w: msgraph: no token source or access_token configured", connector.ErrPermanent)
	}
	t, err := g.c.tokens.Token(ctx, g.tenant)
	switch {
	case err == nil && t == "":
		return "", fmt.Errorf("%w: msgraph: the token source gave an empty token", connector.ErrTransient)
	case err == nil:
		return t, nil
	case errors.Is(err, connector.ErrTransient) || errors.Is(err, connector.ErrPermanent):
		return "", fmt.Errorf("msgraph: %w", err)
	default:
		return "", fmt.Errorf("%w: msgraph: %w", connector.ErrTransient, err)
	}
}

func (g *graphClient) do(ctx context.Context, u *url.URL, token string) (int, []byte, error) {
	client := g.api.Client
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, nil, errors.New("msgraph: cannot build request")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	// Event start and end come back in UTC; ids stay the same when an item moves folders (an
	// organizer's canceled meeting moves to Deleted Items).
	req.Header.Set("Prefer", `outlook.timezone="UTC", IdType="ImmutableId"`)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, fmt.Errorf("%w: msgraph: fetch: %v", connector.ErrTransient, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: msgraph: read: %v", connector.ErrTransient, err)
	}
	return resp.StatusCode, body, nil
}

// classify maps a Graph answer to its body or a classified error.
func classify(status int, body []byte) ([]byte, error) {
	switch {
	case status == http.StatusOK:
		return body, nil
	case status == http.StatusNotFound || status == http.StatusGone:
		return nil, fmt.Errorf("%w: msgraph: status %d", connector.ErrNotFound, status)
	case status == http.StatusTooManyRequests || status >= 500:
		return nil, fmt.Errorf("%w: msgraph: status %d", connector.ErrTransient, status)
	case status >= 400:
		var ge graphError
		_ = json.Unmarshal(body, &ge)
		return nil, fmt.Errorf("%w: msgraph: status %d, error code %s", connector.ErrPermanent, status, quote(ge.Error.Code))
	default:
		return nil, fmt.Errorf("msgraph: unexpected status %d", status)
	}
}

// mailbox resolves the mailbox a resource names: an address is its own owner; a user id is
// looked up (GET /users/{id}?$select=mail,userPrincipalName) once and cached. An empty id (a
// /me/ resource) resolves to no owner.
func (g *graphClient) mailbox(ctx context.Context, id string) (mailbox, error) {
	if id == "" {
		return mailbox{}, nil
	}
	if strings.Contains(id, "@") {
		if addr, ok := identity.Email(id); ok {
			return mailbox{id: id, addrs: []string{addr}}, nil
		}
	}
	g.c.mu.Lock()
	o, ok := g.c.owners[id]
	g.c.mu.Unlock()
	if ok {
		return mailbox{id: id, addrs: o.addrs}, nil
	}
	body, err := g.get(ctx, "users/"+url.PathEscape(id), userSelect)
	if err != nil {
		return mailbox{}, err
	}
	var u user
	if err := json.Unmarshal(body, &u); err != nil {
		return mailbox{}, fmt.Errorf("%w: msgraph: user is not JSON", connector.ErrUnusable)
	}
	for _, a := range []string{u.Mail, u.UserPrincipalName} {
		if addr, ok := identity.Email(a); ok && !contains(o.addrs, addr) {
			o.addrs = append(o.addrs, addr)
		}
	}
	if len(o.addrs) == 0 {
		return mailbox{}, fmt.Errorf("%w: msgraph: mailbox owner has no address", connector.ErrUnusable)
	}
	g.c.mu.Lock()
	if len(g.c.owners) >= maxOwners {
		g.c.owners = map[string]owner{}
	}
	g.c.owners[id] = o
	g.c.mu.Unlock()
	return mailbox{id: id, addrs: o.addrs}, nil
}

// mailboxOf returns the mailbox a resource names, users/{id}/... or users('{id}')/...,
// lower-cased: a user id or an address ("" for /me/ or others).
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

// isInternal reports whether a normalised address belongs to the organisation: one of the
// mailbox owner's addresses or one of the configured internal domains.
func (c *Connector) isInternal(addr string, mb mailbox) bool {
	return contains(mb.addrs, addr) || c.internal[identity.Domain(addr)]
}

func (c *Connector) applyMessage(ev *canonical.Event, m *message, mb mailbox) error {
	from := ""
	fromName := ""
	if m.From != nil {
		from, _ = identity.Email(m.From.EmailAddress.Address)
		fromName = m.From.EmailAddress.Name
	}
	sent := from != "" && c.isInternal(from, mb)

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
	if mb.id != "" {
		act.Attrs["mailbox"] = mb.primary()
	}
	var subject canonical.Person
	addP := func(role string, r recipient) {
		addr, ok := identity.Email(r.EmailAddress.Address)
		if !ok {
			return
		}
		act.Participants = append(act.Participants, canonical.Participant{Role: role, Email: addr, Name: r.EmailAddress.Name})
		if !c.isInternal(addr, mb) && !contains(subject.Emails, addr) {
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
		if mb.id != "" {
			ev.Actor = &canonical.Actor{ID: mb.id, Type: "user"}
			if len(mb.addrs) > 0 {
				ev.Actor.Email = mb.addrs[0]
			}
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

func (c *Connector) applyEvent(ev *canonical.Event, e *event, mb mailbox) error {
	act := &canonical.Activity{Type: "meeting", Subject: e.Subject, Status: "scheduled"}
	ev.Kind = canonical.KindMeetingScheduled
	// An organizer's cancellation deletes the event from the organizer's calendar (it moves to
	// Deleted Items) and marks the attendees' copies isCancelled.
	if e.IsCancelled || ev.Hydrate.Change == "deleted" {
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
		if !c.isInternal(addr, mb) && !contains(subject.Emails, addr) {
			subject.Emails = append(subject.Emails, addr)
			if len(subject.Emails) == 1 {
				subject.Name = a.Name
			}
		}
	}
	if e.Organizer != nil {
		add("organizer", e.Organizer.EmailAddress)
		if addr, ok := identity.Email(e.Organizer.EmailAddress.Address); ok && c.isInternal(addr, mb) {
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
	if mb.id != "" {
		act.Attrs = map[string]string{"mailbox": mb.primary()}
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
