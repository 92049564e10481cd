package typeform

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// DefaultAPIBaseURL is Typeform's API base, used when api.BaseURL is empty.
const DefaultAPIBaseURL = "https://api.typeform.com"

// SecretFormIDs is the optional secret field listing the form ids (comma-separated) whose
// responses List reads; without it every form the token can see is read (GET /forms).
const SecretFormIDs = "form_ids"

// ListedKeyPrefix starts the key of a response found by listing: typeform:response:{token}.
// The list API does not return the webhook's event_id, so a listed response cannot have the
// webhook's key typeform:{event_id}; the response token is the business id instead, and
// reconciliation matches a listed response to a delivered one by its activity (form:{token},
// status submitted).
const ListedKeyPrefix = "typeform:response:"

// listPageSize is the page size asked of the responses endpoint (Typeform's maximum).
const listPageSize = 1000

var _ connector.Lister = (*Connector)(nil)

type form struct {
	ID    string `json:"id"`
	Title string `json:"title"`
}

// List returns one lead.submitted event per completed response submitted inside
// [since, until) to the configured forms (SecretFormIDs, else every form of GET /forms), read
// from GET /forms/{id}/responses (since, until, completed=true, page_size 1000, paging with
// before=<last token>) with the secret's api_token as a Bearer token. Each response is wrapped
// as the form_response webhook delivery would carry it (form id and title, token, landed_at,
// submitted_at, hidden, answers) and mapped by Parse, so fields, identities and the activity
// (form:{token}) are those of the webhook; the key is ListedKeyPrefix + token and the payload
// hash that of the rebuilt delivery.
func (c *Connector) List(ctx context.Context, since, until time.Time, sec connector.Secret, api connector.API) ([]canonical.Event, error) {
	token := sec.Get(SecretAPIToken)
	if token == "" {
		return nil, fmt.Errorf("typeform: list: the secret needs %s", SecretAPIToken)
	}
	base := api.BaseURL
	if base == "" {
		base = DefaultAPIBaseURL
	}
	hdr := http.Header{"Authorization": {"Bearer " + token}}
	forms, err := listForms(ctx, api, base, hdr, sec.Get(SecretFormIDs))
	if err != nil {
		return nil, err
	}
	var out []canonical.Event
	for _, f := range forms {
		evs, err := c.listResponses(ctx, api, base, hdr, f, since, until)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

func listForms(ctx context.Context, api connector.API, base string, hdr http.Header, ids string) ([]form, error) {
	var out []form
	if strings.TrimSpace(ids) != "" {
		for _, id := range strings.Split(ids, ",") {
			if id = strings.TrimSpace(id); id == "" {
				continue
			}
			body, err := connector.GetJSON(ctx, api, connector.JoinURL(base, "/forms/"+url.PathEscape(id)), hdr)
			if err != nil {
				return nil, fmt.Errorf("typeform: list: form %s: %w", id, err)
			}
			f := form{ID: id}
			_ = json.Unmarshal(body, &f) // the title is a nicety; the id is what matters
			f.ID = id
			out = append(out, f)
		}
		return out, nil
	}
	for pg, count := 1, 1; pg <= count && pg <= connector.MaxListPages; pg++ {
		body, err := connector.GetJSON(ctx, api, connector.JoinURL(base, fmt.Sprintf("/forms?page=%d&page_size=200", pg)), hdr)
		if err != nil {
			return nil, fmt.Errorf("typeform: list forms: %w", err)
		}
		var page struct {
			PageCount int    `json:"page_count"`
			Items     []form `json:"items"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("typeform: list forms: not a form list: %v", err)
		}
		count = page.PageCount
		for _, f := range page.Items {
			if f.ID != "" {
				out = append(out, f)
			}
		}
	}
	return out, nil
}

func (c *Connector) listResponses(ctx context.Context, api connector.API, base string, hdr http.Header, f form, since, until time.Time) ([]canonical.Event, error) {
	q := url.Values{"page_size": {fmt.Sprint(listPageSize)}, "completed": {"true"}}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339))
	}
	if !until.IsZero() {
		q.Set("until", until.UTC().Format(time.RFC3339))
	}
	var out []canonical.Event
	seen := map[string]bool{}
	for n := 0; n < connector.MaxListPages; n++ {
		body, err := connector.GetJSON(ctx, api, connector.JoinURL(base, "/forms/"+url.PathEscape(f.ID)+"/responses?"+q.Encode()), hdr)
		if err != nil {
			return nil, fmt.Errorf("typeform: list responses of %s: %w", f.ID, err)
		}
		var page struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("typeform: list responses of %s: not a response list: %v", f.ID, err)
		}
		last := ""
		for _, raw := range page.Items {
			ev, tok, err := c.listedResponse(raw, f, since, until)
			if err != nil {
				return nil, err
			}
			last = tok
			if ev != nil && !seen[ev.Key] {
				seen[ev.Key] = true
				out = append(out, *ev)
			}
		}
		if len(page.Items) < listPageSize || last == "" || q.Get("before") == last {
			return out, nil
		}
		q.Set("before", last)
	}
	return out, nil
}

// listedResponse maps one listed response; ev is nil for responses outside the window or not
// completed. tok is the response token (the paging cursor).
func (c *Connector) listedResponse(raw json.RawMessage, f form, since, until time.Time) (ev *canonical.Event, tok string, err error) {
	var r struct {
		Token        string          `json:"token"`
		ResponseType string          `json:"response_type"`
		LandedAt     string          `json:"landed_at"`
		SubmittedAt  string          `json:"submitted_at"`
		Hidden       json.RawMessage `json:"hidden,omitempty"`
		Answers      json.RawMessage `json:"answers,omitempty"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Token == "" {
		return nil, "", fmt.Errorf("typeform: list: malformed response")
	}
	submitted, err := time.Parse(time.RFC3339Nano, r.SubmittedAt)
	if err != nil || (r.ResponseType != "" && r.ResponseType != "completed") || !connector.InWindow(submitted.UTC(), since, until) {
		return nil, r.Token, nil
	}
	fr := map[string]any{"form_id": f.ID, "token": r.Token, "landed_at": r.LandedAt, "submitted_at": r.SubmittedAt,
		"definition": map[string]any{"id": f.ID, "title": f.Title}}
	if len(r.Hidden) > 0 && string(r.Hidden) != "null" {
		fr["hidden"] = r.Hidden
	}
	if len(r.Answers) > 0 && string(r.Answers) != "null" {
		fr["answers"] = r.Answers
	}
	body, err := json.Marshal(map[string]any{"event_id": "response:" + r.Token, "event_type": EventFormResponse, "form_response": fr})
	if err != nil {
		return nil, r.Token, err
	}
	parsed, err := c.Parse(&connector.Request{Method: http.MethodPost, Body: body, ReceivedAt: submitted.UTC()}, connector.Secret{})
	if err != nil {
		return nil, r.Token, fmt.Errorf("typeform: list: map response: %w", err)
	}
	e := parsed.Events[0]
	e.Key = ListedKeyPrefix + r.Token
	delete(e.ExternalIDs, "event_id") // there is none: the response was listed, not delivered
	return &e, r.Token, nil
}
