package calendly

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// DefaultAPIBaseURL is Calendly's API v2 base, used when api.BaseURL is empty.
const DefaultAPIBaseURL = "https://api.calendly.com"

// SecretOrganization is the optional secret field holding the organization URI whose scheduled
// events are listed; without it List asks GET /users/me for the token owner's organization.
const SecretOrganization = "organization"

var _ connector.Lister = (*Connector)(nil)

type page struct {
	Collection []json.RawMessage `json:"collection"`
	Pagination struct {
		NextPageToken *string `json:"next_page_token"`
	} `json:"pagination"`
}

type invitee struct {
	URI       string `json:"uri"`
	Status    string `json:"status"`
	CreatedAt string `json:"created_at"`
	UpdatedAt string `json:"updated_at"`
	NoShow    *struct {
		CreatedAt string `json:"created_at"`
	} `json:"no_show"`
}

// List returns the invitee.created, invitee.canceled and invitee_no_show.created events Calendly
// would have delivered for invitees created, canceled (or rescheduled) or marked no-show inside
// [since, until): it reads GET /scheduled_events for
// the organization (min_start_time = since: a meeting booked in the window starts after it was
// booked), then GET /scheduled_events/{uuid}/invitees for each, following next_page_token, with
// the secret's api_token as a Bearer token. Each invitee is wrapped with its scheduled event
// exactly as a webhook delivery's payload (the invitee object plus "scheduled_event") and
// mapped by Parse, so the event has the webhook's key, calendly:{event}:{invitee uri}, and the
// same fields. The payload hash is the hash of that rebuilt delivery, which differs from the
// webhook's raw body hash: a webhook arriving after its backfill is flagged as a conflicting
// payload and not applied (the record already holds its facts), which is why reconciliation
// waits out Calendly's retry period before listing.
func (c *Connector) List(ctx context.Context, since, until time.Time, sec connector.Secret, api connector.API) ([]canonical.Event, error) {
	token := sec.Get(SecretAPIToken)
	if token == "" {
		return nil, fmt.Errorf("calendly: list: the secret needs %s", SecretAPIToken)
	}
	base := api.BaseURL
	if base == "" {
		base = DefaultAPIBaseURL
	}
	hdr := http.Header{"Authorization": {"Bearer " + token}}
	org := sec.Get(SecretOrganization)
	if org == "" {
		body, err := connector.GetJSON(ctx, api, connector.JoinURL(base, "/users/me"), hdr)
		if err != nil {
			return nil, fmt.Errorf("calendly: list: who am I: %w", err)
		}
		var me struct {
			Resource struct {
				CurrentOrganization string `json:"current_organization"`
			} `json:"resource"`
		}
		if err := json.Unmarshal(body, &me); err != nil || me.Resource.CurrentOrganization == "" {
			return nil, fmt.Errorf("calendly: list: /users/me names no current_organization")
		}
		org = me.Resource.CurrentOrganization
	}
	q := url.Values{"organization": {org}, "count": {"100"}, "sort": {"start_time:asc"}}
	if !since.IsZero() {
		q.Set("min_start_time", since.UTC().Format(time.RFC3339))
	}
	var out []canonical.Event
	err := pages(ctx, api, base, "/scheduled_events", q, hdr, func(raw json.RawMessage) error {
		var se struct {
			URI string `json:"uri"`
		}
		if err := json.Unmarshal(raw, &se); err != nil || se.URI == "" {
			return fmt.Errorf("calendly: list: malformed scheduled event")
		}
		uuid := path.Base(strings.TrimRight(se.URI, "/"))
		return pages(ctx, api, base, "/scheduled_events/"+url.PathEscape(uuid)+"/invitees", url.Values{"count": {"100"}}, hdr,
			func(inv json.RawMessage) error {
				evs, err := c.listedInvitee(inv, raw, since, until)
				out = append(out, evs...)
				return err
			})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// pages reads a Calendly collection, following next_page_token, calling fn for each item.
func pages(ctx context.Context, api connector.API, base, p string, q url.Values, hdr http.Header, fn func(json.RawMessage) error) error {
	seen := map[string]bool{}
	for n := 0; n < connector.MaxListPages; n++ {
		u := connector.JoinURL(base, p+"?"+q.Encode())
		if seen[u] {
			return nil
		}
		seen[u] = true
		body, err := connector.GetJSON(ctx, api, u, hdr)
		if err != nil {
			return fmt.Errorf("calendly: list %s: %w", p, err)
		}
		var pg page
		if err := json.Unmarshal(body, &pg); err != nil {
			return fmt.Errorf("calendly: list %s: not a collection: %v", p, err)
		}
		for _, it := range pg.Collection {
			if err := fn(it); err != nil {
				return err
			}
		}
		if pg.Pagination.NextPageToken == nil || *pg.Pagination.NextPageToken == "" {
			return nil
		}
		q = cloneValues(q)
		q.Set("page_token", *pg.Pagination.NextPageToken)
	}
	return nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// listedInvitee returns the events one listed invitee stands for in the window: its creation,
// its cancellation when it is canceled (a reschedule's, when it says rescheduled), and its
// no-show mark when it has one. A removed no-show mark leaves no trace in the invitee, so
// invitee_no_show.deleted cannot be listed.
func (c *Connector) listedInvitee(raw, scheduledEvent json.RawMessage, since, until time.Time) ([]canonical.Event, error) {
	var inv invitee
	if err := json.Unmarshal(raw, &inv); err != nil || inv.URI == "" {
		return nil, fmt.Errorf("calendly: list: malformed invitee")
	}
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(raw, &payload); err != nil {
		return nil, fmt.Errorf("calendly: list: malformed invitee")
	}
	payload["scheduled_event"] = scheduledEvent
	var out []canonical.Event
	add := func(event, at string) error {
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil || !connector.InWindow(t.UTC(), since, until) {
			return nil
		}
		body, err := json.Marshal(map[string]any{"event": event, "created_at": at, "payload": payload})
		if err != nil {
			return err
		}
		parsed, err := c.Parse(&connector.Request{Method: http.MethodPost, Body: body, ReceivedAt: t.UTC()}, connector.Secret{})
		if err != nil {
			return fmt.Errorf("calendly: list: map invitee: %w", err)
		}
		out = append(out, parsed.Events...)
		return nil
	}
	if err := add(EventInviteeCreated, inv.CreatedAt); err != nil {
		return nil, err
	}
	if strings.EqualFold(inv.Status, "canceled") {
		if err := add(EventInviteeCanceled, inv.UpdatedAt); err != nil {
			return nil, err
		}
	}
	if inv.NoShow != nil {
		if err := add(EventNoShowCreated, inv.NoShow.CreatedAt); err != nil {
			return nil, err
		}
	}
	return out, nil
}
