package graphsub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// graphError is a failed Graph call: the status and Graph's error code (never the request's
// token nor the message, which may echo request data).
type graphError struct {
	Op     string
	Status int
	Code   string
}

func (e *graphError) Error() string {
	s := fmt.Sprintf("graph %s: status %d", e.Op, e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	return s
}

// isStatus reports whether err is a Graph answer with the given status.
func isStatus(err error, status int) bool {
	var ge *graphError
	return errors.As(err, &ge) && ge.Status == status
}

// guidRE matches a Graph user id.
var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// graphExpiryLayout is how Graph writes expirationDateTime.
const graphExpiryLayout = "2006-01-02T15:04:05.0000000Z"

// call sends one Graph request (body marshalled as JSON when not nil) to the API root plus path,
// or to an absolute URL on the same host (a nextLink), and decodes a JSON answer into out.
func (m *Manager) call(ctx context.Context, op, method, pathOrURL string, body, out any) error {
	target, err := m.graphURL(pathOrURL)
	if err != nil {
		return err
	}
	var rdr io.Reader
	if body != nil {
		payload, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("graph %s: %w", op, err)
		}
		rdr = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rdr)
	if err != nil {
		return fmt.Errorf("graph %s: cannot build request", op)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	// Immutable ids, as the subscriptions are created with: the delta's ids then match the ids
	// in the notifications' resources.
	req.Header.Set("Prefer", `outlook.timezone="UTC", odata.maxpagesize=50, IdType="ImmutableId"`)
	resp, err := m.d.HTTP.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("graph %s: %w", op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("graph %s: read: %w", op, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		return &graphError{Op: op, Status: resp.StatusCode, Code: safeCode(e.Error.Code)}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("graph %s: answer is not JSON: %w", op, err)
		}
	}
	return nil
}

// graphURL resolves a path against the API root; an absolute URL must be on the root's host.
func (m *Manager) graphURL(pathOrURL string) (string, error) {
	if !strings.Contains(pathOrURL, "://") {
		return m.cfg.GraphBaseURL + "/" + strings.TrimLeft(pathOrURL, "/"), nil
	}
	u, err := url.Parse(pathOrURL)
	b, berr := url.Parse(m.cfg.GraphBaseURL)
	if err != nil || berr != nil || u.Scheme != b.Scheme || u.Host != b.Host {
		return "", errors.New("graph: next link leaves the API host")
	}
	return u.String(), nil
}

// safeCode keeps a Graph error code when it looks like one.
func safeCode(c string) string {
	if len(c) > 80 || strings.Trim(c, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.") != "" {
		return ""
	}
	return c
}

// subscription is Graph's subscription resource, reduced to what the manager reads and writes.
type subscription struct {
	ID                        string `json:"id,omitempty"`
	ChangeType                string `json:"changeType,omitempty"`
	NotificationURL           string `json:"notificationUrl,omitempty"`
	LifecycleNotificationURL  string `json:"lifecycleNotificationUrl,omitempty"`
	Resource                  string `json:"resource,omitempty"`
	ExpirationDateTime        string `json:"expirationDateTime,omitempty"`
	ClientState               string `json:"clientState,omitempty"`
	LatestSupportedTLSVersion string `json:"latestSupportedTlsVersion,omitempty"`
}

// changeTypes are the changes subscribed to per resource: deleted events carry cancellations.
var changeTypes = map[string]string{ResourceMessages: "created,updated", ResourceEvents: "created,updated,deleted"}

// userID resolves a mailbox (id or address) to its Graph user id.
func (m *Manager) userID(ctx context.Context, mailbox string) (string, error) {
	var u struct {
		ID string `json:"id"`
	}
	if err := m.call(ctx, "get user", http.MethodGet, "users/"+url.PathEscape(mailbox)+"?$select=id,mail,userPrincipalName", nil, &u); err != nil {
		return "", err
	}
	switch {
	case u.ID != "":
		return u.ID, nil
	case guidRE.MatchString(mailbox):
		return strings.ToLower(mailbox), nil // configured by id already
	}
	return "", errors.New("graph get user: answer has no id")
}

// create subscribes to the state's resource and returns the new subscription.
func (m *Manager) create(ctx context.Context, s *State, clientState string, expires time.Time) (subscription, error) {
	req := subscription{
		ChangeType: changeTypes[s.Resource], NotificationURL: m.cfg.NotificationURL, LifecycleNotificationURL: m.cfg.LifecycleURL,
		Resource: "users/" + s.UserID + "/" + s.Resource, ExpirationDateTime: expires.UTC().Format(graphExpiryLayout),
		ClientState: clientState, LatestSupportedTLSVersion: "v1_2",
	}
	var out subscription
	if err := m.call(ctx, "create subscription", http.MethodPost, "subscriptions", req, &out); err != nil {
		return out, err
	}
	if out.ID == "" {
		return out, errors.New("graph create subscription: answer has no id")
	}
	return out, nil
}

// renew extends a subscription (which also reauthorizes it) and returns its new expiry.
func (m *Manager) renew(ctx context.Context, id string, expires time.Time) (subscription, error) {
	var out subscription
	err := m.call(ctx, "renew subscription", http.MethodPatch, "subscriptions/"+url.PathEscape(id),
		subscription{ExpirationDateTime: expires.UTC().Format(graphExpiryLayout)}, &out)
	return out, err
}

// reauthorize answers reauthorizationRequired without changing the expiry.
func (m *Manager) reauthorize(ctx context.Context, id string) error {
	return m.call(ctx, "reauthorize subscription", http.MethodPost, "subscriptions/"+url.PathEscape(id)+"/reauthorize", nil, nil)
}

// remove deletes a subscription; one Graph no longer has is not an error.
func (m *Manager) remove(ctx context.Context, id string) error {
	err := m.call(ctx, "delete subscription", http.MethodDelete, "subscriptions/"+url.PathEscape(id), nil, nil)
	if isStatus(err, http.StatusNotFound) {
		return nil
	}
	return err
}

// deltaItem is one message or event of a delta page.
type deltaItem struct {
	ID                   string          `json:"id"`
	ETag                 string          `json:"@odata.etag"`
	ReceivedDateTime     string          `json:"receivedDateTime"`
	LastModifiedDateTime string          `json:"lastModifiedDateTime"`
	Removed              json.RawMessage `json:"@removed"`
}

type deltaPage struct {
	Value     []deltaItem `json:"value"`
	NextLink  string      `json:"@odata.nextLink"`
	DeltaLink string      `json:"@odata.deltaLink"`
}

// maxDeltaPages bounds one delta round (50 items a page).
const maxDeltaPages = 200

// delta runs one delta round from first, following nextLink until the deltaLink, and returns
// the items that still exist.
func (m *Manager) delta(ctx context.Context, first string) ([]deltaItem, error) {
	var out []deltaItem
	next := first
	for page := 0; next != ""; page++ {
		if page == maxDeltaPages {
			return nil, fmt.Errorf("graph delta: more than %d pages", maxDeltaPages)
		}
		var p deltaPage
		if err := m.call(ctx, "delta", http.MethodGet, next, nil, &p); err != nil {
			return nil, err
		}
		for _, it := range p.Value {
			if len(it.Removed) == 0 && it.ID != "" {
				out = append(out, it)
			}
		}
		next = p.NextLink
	}
	return out, nil
}
