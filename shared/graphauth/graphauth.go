// Package graphauth owns crmsync's Microsoft Graph app-only access tokens, the one
// implementation every Graph caller uses (the subscription manager shared/graphsub and the
// worker's hydrator shared/connector/msgraph): the OAuth 2.0 client credentials grant against
// the Microsoft identity platform (tenant_id, client_id and client_secret from the msgraph
// connector's secret; token_url or Options.LoginBaseURL override the endpoint), the token cached
// until shortly before it expires, the secret's static access_token as a fallback when it holds
// no client credentials, and an HTTP client that authorizes every Graph request and, when Graph
// answers 401, fetches a new token and retries the request once. Failures wrap
// connector.ErrTransient (network, 429, 5xx, Secrets Manager) or connector.ErrPermanent (refused
// credentials, which also wrap ErrCredentials; a missing secret; a malformed tenant). Tokens and
// client secrets are never logged nor put in errors.
//
// A Source serves one tenant (the secret's tenant_id); Tenants keeps a Source per tenant, for
// notifications that name their tenant:
//
//	src := graphauth.New(secretsCache, "crmsync/prod/msgraph", graphauth.Options{})
//	tok, err := src.Token(ctx)       // cached; refreshed RefreshMargin before expiry
//	src.Invalidate()                 // after Graph refused it (401)
//	client := src.Client(httpClient) // a connector.Doer that does both
//
//	tenants := graphauth.NewTenants(secretsCache, "crmsync/prod/msgraph", graphauth.Options{})
//	tok, err = tenants.Token(ctx, notificationTenantID) // "" = the secret's tenant_id
//	tenants.Invalidate(notificationTenantID)
package graphauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/crmsync/crmsync/shared/connector"
)

// Secret fields read from the msgraph connector's secret ({"current": {...}}).
const (
	SecretTenantID     = "tenant_id"
	SecretClientID     = "client_id"
	SecretClientSecret = "client_secret"
	// SecretTokenURL optionally overrides the token endpoint (national clouds, tests).
	SecretTokenURL = "token_url"
	// SecretAccessToken is the legacy static token: used as is (never refreshed) only when the
	// secret holds no client credentials.
	SecretAccessToken = "access_token"
)

const (
	// DefaultLoginBaseURL is the Microsoft identity platform's global authority.
	DefaultLoginBaseURL = "https://login.microsoftonline.com"
	// DefaultScope asks for the application permissions granted to the app on Graph.
	DefaultScope = "https://graph.microsoft.com/.default"
	// DefaultRefreshMargin is how long before its expiry a cached token is replaced.
	DefaultRefreshMargin = 5 * time.Minute
)

// ErrCredentials means the identity platform refused the app's credentials (invalid_client,
// unauthorized_client, invalid tenant) or the secret has none: retrying will not help until the
// secret is fixed. Errors wrapping it also wrap connector.ErrPermanent.
var ErrCredentials = errors.New("graph credentials refused")

// Secrets reads a connector secret by id (shared/secrets.Cache).
type Secrets interface {
	Get(ctx context.Context, id string) (connector.Secret, error)
}

// Options tunes a Source; zero values take the defaults.
type Options struct {
	// LoginBaseURL is the authority, e.g. https://login.microsoftonline.com (national clouds and
	// the local stack's fake differ).
	LoginBaseURL string
	// Scope is the requested scope (DefaultScope).
	Scope string
	// RefreshMargin is how long before expiry a cached token is replaced (DefaultRefreshMargin).
	RefreshMargin time.Duration
	// HTTP calls the token endpoint (default: a client with a 10 s timeout).
	HTTP connector.Doer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Source hands out the app's Graph access token for one tenant. It is safe for concurrent use;
// concurrent callers share one token request.
type Source struct {
	secrets  Secrets
	secretID string
	opts     Options
	tenant   string // "" = the secret's tenant_id

	mu      sync.Mutex
	token   string
	expires time.Time
	static  bool // the legacy access_token: no expiry known, no refresh possible
}

// New returns a token source for the secret's tenant (tenant_id), reading the client credentials
// from the secret secretID.
func New(secrets Secrets, secretID string, opts Options) *Source {
	return &Source{secrets: secrets, secretID: secretID, opts: opts.withDefaults()}
}

// withDefaults fills in the zero options.
func (opts Options) withDefaults() Options {
	opts.LoginBaseURL = strings.TrimSpace(opts.LoginBaseURL)
	if opts.LoginBaseURL == "" {
		opts.LoginBaseURL = DefaultLoginBaseURL
	}
	opts.LoginBaseURL = strings.TrimRight(opts.LoginBaseURL, "/")
	if opts.Scope == "" {
		opts.Scope = DefaultScope
	}
	if opts.RefreshMargin <= 0 {
		opts.RefreshMargin = DefaultRefreshMargin
	}
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return opts
}

// Token returns a valid access token: the cached one until RefreshMargin before its expiry,
// else a new one from the token endpoint ({LoginBaseURL}/{tenant}/oauth2/v2.0/token, or the
// secret's token_url). A secret without client credentials (client_id, client_secret and a
// tenant) yields its static access_token, never refreshed.
func (s *Source) Token(ctx context.Context) (string, error) {
	if s.tenant != "" && !validTenant(s.tenant) {
		return "", fmt.Errorf("graph token: %w: malformed tenant id", connector.ErrPermanent)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && (s.static || s.opts.Now().Before(s.expires.Add(-s.opts.RefreshMargin))) {
		return s.token, nil
	}
	sec, err := s.secrets.Get(ctx, s.secretID)
	if err != nil {
		return "", secretError(err)
	}
	tenant, id, secret := s.tenant, sec.Get(SecretClientID), sec.Get(SecretClientSecret)
	if tenant == "" {
		tenant = sec.Get(SecretTenantID)
	}
	endpoint := sec.Get(SecretTokenURL)
	if id == "" || secret == "" || (tenant == "" && endpoint == "") {
		if legacy := sec.Get(SecretAccessToken); legacy != "" {
			s.token, s.static, s.expires = legacy, true, time.Time{}
			return legacy, nil
		}
		return "", fmt.Errorf("graph token: %w: the secret has no %s, %s and %s (nor an %s)", credentials(), SecretTenantID,
			SecretClientID, SecretClientSecret, SecretAccessToken)
	}
	if endpoint == "" {
		endpoint = s.opts.LoginBaseURL + "/" + url.PathEscape(tenant) + "/oauth2/v2.0/token"
	}
	tok, expires, err := s.fetch(ctx, endpoint, id, secret)
	if err != nil {
		return "", err
	}
	s.token, s.static, s.expires = tok, false, expires
	return tok, nil
}

// Invalidate drops the cached token (Graph refused it): the next Token call fetches a new one,
// re-reading the secret.
func (s *Source) Invalidate() {
	s.mu.Lock()
	s.token, s.static, s.expires = "", false, time.Time{}
	s.mu.Unlock()
}

// secretError classifies a failed secret read: a secret that does not exist is permanent,
// anything else (throttling, an outage, a malformed value being fixed) transient.
func secretError(err error) error {
	var missing *smtypes.ResourceNotFoundException
	if errors.As(err, &missing) {
		return fmt.Errorf("graph token: read secret: %w: %w", connector.ErrPermanent, err)
	}
	return fmt.Errorf("graph token: read secret: %w: %w", connector.ErrTransient, err)
}

// credentials is ErrCredentials, which is permanent.
func credentials() error { return fmt.Errorf("%w (%w)", ErrCredentials, connector.ErrPermanent) }

// Expires returns when the cached token expires (zero when none is cached or it is static).
func (s *Source) Expires() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expires
}

// tokenResponse is the identity platform's answer: a token or an error.
type tokenResponse struct {
	TokenType   string          `json:"token_type"`
	ExpiresIn   json.Number     `json:"expires_in"`
	AccessToken string          `json:"access_token"`
	Error       string          `json:"error"`
	Codes       json.RawMessage `json:"error_codes"`
}

// fetch runs the client credentials grant: POST {authority}/{tenant}/oauth2/v2.0/token.
func (s *Source) fetch(ctx context.Context, endpoint, clientID, clientSecret string) (string, time.Time, error) {
	form := url.Values{"client_id": {clientID}, "scope": {s.opts.Scope}, "client_secret": {clientSecret},
		"grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("graph token: %w: malformed token endpoint", connector.ErrPermanent)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	issued := s.opts.Now()
	resp, err := s.opts.HTTP.Do(req)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("graph token: %w: %v", connector.ErrTransient, unwrapURL(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var tr tokenResponse
	_ = json.Unmarshal(body, &tr)
	switch {
	case resp.StatusCode == http.StatusOK && tr.AccessToken != "":
	case resp.StatusCode == http.StatusOK:
		return "", time.Time{}, fmt.Errorf("graph token: %w: the answer holds no access_token", connector.ErrTransient)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 || tr.Error == "temporarily_unavailable":
		return "", time.Time{}, fmt.Errorf("graph token: %w: status %d %s", connector.ErrTransient, resp.StatusCode, oauthCode(tr.Error))
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized:
		// error is an OAuth code (invalid_client, unauthorized_client, invalid_request); the
		// description may echo request details, so only the code is kept.
		return "", time.Time{}, fmt.Errorf("graph token: %w: status %d %s", credentials(), resp.StatusCode, oauthCode(tr.Error))
	default:
		return "", time.Time{}, fmt.Errorf("graph token: %w: status %d %s", connector.ErrPermanent, resp.StatusCode, oauthCode(tr.Error))
	}
	secs, err := tr.ExpiresIn.Int64()
	if err != nil || secs <= 0 {
		secs = 3599 // the identity platform's usual lifetime, when the answer lacks it
	}
	return tr.AccessToken, issued.Add(time.Duration(secs) * time.Second), nil
}

// oauthCode keeps an OAuth error code only when it looks like one (letters and underscores).
func oauthCode(code string) string {
	if code == "" || len(code) > 64 || strings.Trim(code, "abcdefghijklmnopqrstuvwxyz_") != "" {
		return ""
	}
	return code
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Client returns a connector.Doer that sends each request with "Authorization: Bearer <token>"
// through base (nil = a client with a 20 s timeout). When Graph answers 401 it invalidates the
// token, gets a new one and sends the request once more; a second 401 is returned as is.
func (s *Source) Client(base connector.Doer) connector.Doer {
	if base == nil {
		base = &http.Client{Timeout: 20 * time.Second}
	}
	return &authorized{src: s, base: base}
}

type authorized struct {
	src  *Source
	base connector.Doer
}

// Do implements connector.Doer.
func (a *authorized) Do(req *http.Request) (*http.Response, error) {
	resp, err := a.send(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if req.Body != nil && req.GetBody == nil {
		return resp, nil // the body cannot be sent again
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	a.src.Invalidate()
	retry := req.Clone(req.Context())
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("graph request: rewind body: %w", err)
		}
		retry.Body = body
	}
	return a.send(retry)
}

func (a *authorized) send(req *http.Request) (*http.Response, error) {
	tok, err := a.src.Token(req.Context())
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return a.base.Do(req)
}

// maxTenants bounds the tenants a Tenants keeps tokens for; it is emptied when full.
const maxTenants = 64

// Tenants hands out app tokens per tenant, one Source each, all reading the same secret: for a
// multi-tenant app whose notifications name their tenant (tenantId). The tenant "" is the
// secret's own tenant_id. It is safe for concurrent use.
type Tenants struct {
	secrets  Secrets
	secretID string
	opts     Options

	mu       sync.Mutex
	def      *Source
	byTenant map[string]*Source
}

// NewTenants returns per-tenant token sources reading the client credentials from the secret
// secretID.
func NewTenants(secrets Secrets, secretID string, opts Options) *Tenants {
	opts = opts.withDefaults()
	return &Tenants{secrets: secrets, secretID: secretID, opts: opts,
		def: &Source{secrets: secrets, secretID: secretID, opts: opts}, byTenant: map[string]*Source{}}
}

// Source returns tenant's token source ("" = the secret's tenant_id), creating it on first use.
// A malformed tenant id gets a source whose Token fails permanently.
func (t *Tenants) Source(tenant string) *Source {
	tenant = strings.ToLower(strings.TrimSpace(tenant))
	if tenant == "" {
		return t.def
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.byTenant[tenant]; ok {
		return s
	}
	s := &Source{secrets: t.secrets, secretID: t.secretID, opts: t.opts, tenant: tenant}
	if !validTenant(tenant) {
		return s // not kept: its Token refuses it before any request
	}
	if len(t.byTenant) >= maxTenants {
		t.byTenant = map[string]*Source{}
	}
	t.byTenant[tenant] = s
	return s
}

// Token returns a valid access token for tenant ("" = the secret's tenant_id); see
// Source.Token. A malformed tenant id is refused (connector.ErrPermanent) without a request.
func (t *Tenants) Token(ctx context.Context, tenant string) (string, error) {
	return t.Source(tenant).Token(ctx)
}

// Invalidate drops tenant's cached token (Graph refused it): its next Token fetches a new one.
func (t *Tenants) Invalidate(tenant string) { t.Source(tenant).Invalidate() }

// validTenant reports whether a tenant id can name a tenant in the token endpoint's path: a GUID
// or a domain name (letters, digits, '.', '-', '_'), at most 253 characters.
func validTenant(tenant string) bool {
	if tenant == "" || len(tenant) > 253 {
		return false
	}
	for _, r := range tenant {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return !strings.Contains(tenant, "..")
}
