package mailgun

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// DefaultAPIBaseURL is Mailgun's US API base, used when api.BaseURL is empty (EU domains use
// https://api.eu.mailgun.net: configure it as the base URL).
const DefaultAPIBaseURL = "https://api.mailgun.net"

// SecretAPIKey is the secret field holding a Mailgun API key allowed to read the domain's events
// (sent as HTTP Basic auth, user "api"); only the Events API lister needs it.
const SecretAPIKey = "api_key"

// SecretDomain is the secret field naming the sending domain whose events are listed
// (GET /v3/{domain}/events).
const SecretDomain = "domain"

// ListPageSize is the page size asked of the Events API (its maximum).
const ListPageSize = 300

var _ connector.Lister = (*Connector)(nil)

// eventsPage is one page of GET /v3/{domain}/events: the events and the paging URLs.
type eventsPage struct {
	Items  []json.RawMessage `json:"items"`
	Paging struct {
		Next string `json:"next"`
	} `json:"paging"`
}

// List returns the email.event each Mailgun event of the domain inside [since, until) stands for,
// exactly as its webhook delivery would have produced it: it reads the Events API,
// GET /v3/{domain}/events?begin=<since>&end=<until>&ascending=yes&limit=300 with the secret's
// api_key (Basic auth, user "api"), and follows paging.next until a page has no items (Mailgun
// always returns a next URL; the one after the last page answers an empty page). Each next URL is
// requested under the configured base URL (its path and query kept), so the API key is only ever
// sent to the configured host. Each item is an event-data object, mapped by Parse, so the event
// has the webhook's key (mailgun:{event-data.id}) and fields. Items Parse cannot use (e.g. mailing
// list events without a Message-Id, which a webhook would have quarantined) and items outside the
// window are skipped. The payload hash is the hash of the listed item, which may differ from the
// webhook's event-data (the webhook carries more members): a webhook arriving after its backfill
// is flagged as a conflicting payload and not applied, which is why reconciliation waits out
// Mailgun's 8-hour retry period before listing.
func (c *Connector) List(ctx context.Context, since, until time.Time, sec connector.Secret, api connector.API) ([]canonical.Event, error) {
	key, domain := sec.Get(SecretAPIKey), strings.TrimSpace(sec.Get(SecretDomain))
	if key == "" || domain == "" {
		return nil, fmt.Errorf("mailgun: list events: the secret needs %s and %s", SecretAPIKey, SecretDomain)
	}
	base := api.BaseURL
	if base == "" {
		base = DefaultAPIBaseURL
	}
	eventsPath := "/v3/" + url.PathEscape(domain) + "/events"
	q := url.Values{"limit": {strconv.Itoa(ListPageSize)}, "ascending": {"yes"}}
	if !since.IsZero() {
		q.Set("begin", strconv.FormatInt(since.Unix(), 10))
	}
	if !until.IsZero() {
		q.Set("end", strconv.FormatInt(until.Unix(), 10))
	}
	next := connector.JoinURL(base, eventsPath+"?"+q.Encode())
	hdr := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("api:"+key))}}
	seen := map[string]bool{}
	var out []canonical.Event
	for pages := 0; next != "" && pages < connector.MaxListPages && !seen[next]; pages++ {
		seen[next] = true
		body, err := connector.GetJSON(ctx, api, next, hdr)
		if err != nil {
			return nil, fmt.Errorf("mailgun: list events: %w", err)
		}
		var page eventsPage
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("mailgun: list events: page is not an events list: %v", err)
		}
		if len(page.Items) == 0 {
			break
		}
		for _, raw := range page.Items {
			ev, ok, err := c.listedEvent(raw, since, until)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, *ev)
			}
		}
		if next, err = rebase(base, eventsPath, page.Paging.Next); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// rebase returns the next page's URL under base: the path and query of Mailgun's paging URL,
// which must lie under the domain's events path. An empty paging URL ends the listing.
func rebase(base, eventsPath, next string) (string, error) {
	if next == "" {
		return "", nil
	}
	u, err := url.Parse(next)
	if err != nil || (u.Path != eventsPath && !strings.HasPrefix(u.Path, eventsPath+"/")) {
		return "", fmt.Errorf("mailgun: list events: paging.next is not a page of %s", eventsPath)
	}
	p := u.EscapedPath()
	if u.RawQuery != "" {
		p += "?" + u.RawQuery
	}
	return connector.JoinURL(base, p), nil
}

// listedEvent maps one listed event-data item as its webhook delivery; ok is false for items
// Parse cannot use and for items outside the window.
func (c *Connector) listedEvent(raw json.RawMessage, since, until time.Time) (*canonical.Event, bool, error) {
	delivery, err := json.Marshal(map[string]json.RawMessage{"event-data": raw})
	if err != nil {
		return nil, false, fmt.Errorf("mailgun: list events: malformed item: %v", err)
	}
	parsed, err := c.Parse(&connector.Request{Body: delivery}, connector.Secret{})
	if errors.Is(err, connector.ErrUnusable) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("mailgun: list events: %w", err)
	}
	ev := parsed.Events[0]
	if !connector.InWindow(ev.OccurredAt, since, until) {
		return nil, false, nil
	}
	return &ev, true, nil
}
