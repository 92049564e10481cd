package graphauth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/graphauth"
	"github.com/crmsync/crmsync/tools/localcloud"
)

// tokenServer is a client-credentials token endpoint handing out tok-1, tok-2, ... or failing
// with status.
type tokenServer struct {
	mu     sync.Mutex
	issued int
	status int
	body   string
	form   url.Values
	path   string
}

func (ts *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	_ = r.ParseForm()
	ts.form, ts.path = r.PostForm, r.URL.Path
	if ts.status != 0 {
		w.WriteHeader(ts.status)
		_, _ = w.Write([]byte(ts.body))
		return
	}
	ts.issued++
	fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"tok-%d"}`, ts.issued)
}

func (ts *tokenServer) fail(status int, body string) {
	ts.mu.Lock()
	ts.status, ts.body = status, body
	ts.mu.Unlock()
}

// The grant is client credentials for Graph's .default scope; the secret's token_url wins over
// the login base; the identity platform's answers are classified (refused credentials and other
// refusals permanent, 429/5xx/temporarily_unavailable/an answer without a token transient), and
// no error holds the client secret.
func TestTokenEndpointAndClassification(t *testing.T) {
	ts := &tokenServer{}
	srv := httptest.NewServer(ts)
	defer srv.Close()
	sec := map[string]string{"client_state": "s", "client_id": "app-1", "client_secret": "s3cret", "token_url": srv.URL + "/custom/token"}
	f := newFixture(t, sec)
	ctx := context.Background()

	src := f.source()
	tok, err := src.Token(ctx)
	if err != nil || tok != "tok-1" {
		t.Fatalf("Token = %q, %v", tok, err)
	}
	if ts.path != "/custom/token" || ts.form.Get("grant_type") != "client_credentials" || ts.form.Get("client_id") != "app-1" ||
		ts.form.Get("scope") != graphauth.DefaultScope {
		t.Fatalf("token request to %q with %v", ts.path, ts.form)
	}

	for _, c := range []struct {
		status int
		body   string
		want   error
	}{
		{401, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. s3cret"}`, graphauth.ErrCredentials},
		{400, `{"error":"unauthorized_client"}`, graphauth.ErrCredentials},
		{403, `{"error":"access_denied"}`, connector.ErrPermanent},
		{404, `not json`, connector.ErrPermanent},
		{429, ``, connector.ErrTransient},
		{503, `{"error":"temporarily_unavailable"}`, connector.ErrTransient},
		{400, `{"error":"temporarily_unavailable"}`, connector.ErrTransient},
		{200, `{"token_type":"Bearer"}`, connector.ErrTransient},
		{200, `<html>`, connector.ErrTransient},
	} {
		ts.fail(c.status, c.body)
		src := f.source()
		_, err := src.Token(ctx)
		if !errors.Is(err, c.want) {
			t.Errorf("status %d %s: err = %v, want %v", c.status, c.body, err, c.want)
			continue
		}
		if errors.Is(err, graphauth.ErrCredentials) && !errors.Is(err, connector.ErrPermanent) {
			t.Errorf("status %d: %v is ErrCredentials but not ErrPermanent", c.status, err)
		}
		if errors.Is(err, connector.ErrPermanent) == errors.Is(err, connector.ErrTransient) {
			t.Errorf("status %d: %v is not exactly one of permanent and transient", c.status, err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("status %d: error leaks the client secret: %v", c.status, err)
		}
	}

	// The token endpoint unreachable: transient.
	srv.Close()
	if _, err := f.source().Token(ctx); !errors.Is(err, connector.ErrTransient) {
		t.Errorf("endpoint down: err = %v, want ErrTransient", err)
	}
}

// A secret that does not exist is permanent; no credentials at all is refused credentials.
func TestSecretFailures(t *testing.T) {
	f := newFixture(t, map[string]string{"client_state": "s"})
	src := graphauth.New(f.cache, f.id+"-missing", graphauth.Options{LoginBaseURL: f.fakes.URL + "/msgraph-login"})
	if _, err := src.Token(context.Background()); !errors.Is(err, connector.ErrPermanent) {
		t.Errorf("missing secret: err = %v, want ErrPermanent", err)
	}
	if _, err := f.source().Token(context.Background()); !errors.Is(err, graphauth.ErrCredentials) || !errors.Is(err, connector.ErrPermanent) {
		t.Errorf("no credentials: err = %v, want ErrCredentials (permanent)", err)
	}
}

// Tenants asks the token endpoint of each notification's tenant ({login base}/{tenant}/...,
// the secret's tenant_id for ""), caches a token per tenant, invalidates one tenant alone and
// refuses a malformed tenant id without a request.
func TestTenants(t *testing.T) {
	f := newFixture(t, appSecret())
	tenants := graphauth.NewTenants(f.cache, f.id, graphauth.Options{LoginBaseURL: f.fakes.URL + "/msgraph-login/", Now: f.clock})
	ctx := context.Background()

	def, err := tenants.Token(ctx, "")
	if err != nil || !strings.HasPrefix(def, localcloud.GraphTokenPrefix) {
		t.Fatalf("Token(\"\") = %q, %v; want a token of the secret's tenant", def, err)
	}
	named, err := tenants.Token(ctx, strings.ToUpper(tenant))
	if err != nil || named == def || f.tokens(t) != 2 {
		t.Fatalf("Token(tenant) = %v after %d issued; want a token of its own", err, f.tokens(t))
	}
	if again, _ := tenants.Token(ctx, tenant); again != named || f.tokens(t) != 2 {
		t.Errorf("Token(tenant) again: %d issued, want the cached token (tenant ids are case-insensitive)", f.tokens(t))
	}
	if tenants.Source(tenant) != tenants.Source(" "+strings.ToUpper(tenant)) || tenants.Source("") == tenants.Source(tenant) {
		t.Error("Source: want one source per tenant, the secret's own for \"\"")
	}

	tenants.Invalidate(tenant)
	if tok, _ := tenants.Token(ctx, tenant); tok == named || f.tokens(t) != 3 {
		t.Errorf("after Invalidate(tenant): %d issued, want a new token", f.tokens(t))
	}
	if tok, _ := tenants.Token(ctx, ""); tok != def || f.tokens(t) != 3 {
		t.Errorf("Invalidate(tenant) dropped the default tenant's token too")
	}

	// A tenant the app is not registered in: the identity platform refuses it.
	if _, err := tenants.Token(ctx, "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"); !errors.Is(err, graphauth.ErrCredentials) || !errors.Is(err, connector.ErrPermanent) {
		t.Errorf("unknown tenant: err = %v, want refused credentials", err)
	}
	for _, bad := range []string{"../common", "a/b", "t?x=1", "t#", strings.Repeat("a", 254), "a..b"} {
		if _, err := tenants.Token(ctx, bad); !errors.Is(err, connector.ErrPermanent) {
			t.Errorf("tenant %q: err = %v, want ErrPermanent", bad, err)
		}
	}
	if f.tokens(t) != 3 {
		t.Errorf("%d issued: a refused tenant got a token", f.tokens(t))
	}
}

// Without client credentials every tenant gets the secret's static access_token.
func TestTenantsStaticToken(t *testing.T) {
	f := newFixture(t, map[string]string{"client_state": "s", "access_token": "static-token"})
	tenants := graphauth.NewTenants(f.cache, f.id, graphauth.Options{LoginBaseURL: f.fakes.URL + "/msgraph-login"})
	for _, tn := range []string{"", tenant} {
		if tok, err := tenants.Token(context.Background(), tn); err != nil || tok != "static-token" {
			t.Errorf("Token(%q) = %q, %v; want the static token", tn, tok, err)
		}
	}
}
