package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxListBody bounds how much of one vendor list page is read (8 MiB).
const MaxListBody = 8 << 20

// MaxListPages bounds how many pages one List call follows, so a vendor (or a fake) that keeps
// answering with a next page cannot keep a reconcile run busy forever.
const MaxListPages = 200

// GetJSON performs an authenticated GET against a vendor's REST API and returns the body of a
// 200 answer. header sets request headers (e.g. Authorization). Errors wrap the package's
// sentinels: a 404 ErrNotFound; 429, 5xx and network failures ErrTransient; any other status
// is a plain error naming it (a 401/403 means the configured API credentials are wrong). Errors
// never include the URL's query string or headers, which may carry credentials.
func GetJSON(ctx context.Context, api API, rawURL string, header http.Header) ([]byte, error) {
	client := api.Client
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("build request for %s: %v", redactURL(rawURL), err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: GET %s: %v", ErrTransient, redactURL(rawURL), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxListBody))
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: read: %v", ErrTransient, redactURL(rawURL), err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return body, nil
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: GET %s: 404", ErrNotFound, redactURL(rawURL))
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, fmt.Errorf("%w: GET %s: status %d", ErrTransient, redactURL(rawURL), resp.StatusCode)
	default:
		return nil, fmt.Errorf("GET %s: status %d", redactURL(rawURL), resp.StatusCode)
	}
}

// JoinURL joins a configured base URL (no trailing slash needed) and an absolute path that may
// carry a query string.
func JoinURL(base, pathAndQuery string) string {
	return strings.TrimRight(base, "/") + "/" + strings.TrimLeft(pathAndQuery, "/")
}

// InWindow reports whether t is inside [since, until); a zero bound is open.
func InWindow(t, since, until time.Time) bool {
	if t.IsZero() {
		return false
	}
	if !since.IsZero() && t.Before(since) {
		return false
	}
	return until.IsZero() || t.Before(until)
}

func redactURL(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		return raw[:i]
	}
	return raw
}
