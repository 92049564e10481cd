package graphauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/graphauth"
	"github.com/crmsync/crmsync/shared/secrets"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

// The app registered in events/vendor/msgraph-login/apps.json (the Graph fake's).
const (
	tenant       = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
	clientID     = "6731de76-14a6-49ae-97bc-6eba6914391e"
	clientSecret = "dev-msgraph-client-secret"
)

// fixture is the Graph fake over HTTP and a secret in Secrets Manager (moto) read through the
// secrets cache, as the functions read it.
type fixture struct {
	fakes *httptest.Server
	cache *secrets.Cache
	id    string
	now   atomic.Int64 // the source's clock, unix nanoseconds
}

func newFixture(t *testing.T, current map[string]string) *fixture {
	t.Helper()
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{fakes: httptest.NewServer(&localcloud.VendorFakes{Dir: filepath.Join("..", "..", "events", "vendor")})}
	t.Cleanup(f.fakes.Close)
	f.now.Store(time.Now().UnixNano())
	body, _ := json.Marshal(map[string]any{"current": current})
	name := fmt.Sprintf("graphauth-%d", time.Now().UnixNano())
	sm := secretsmanager.NewFromConfig(cfg)
	out, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(name), SecretString: aws.String(string(body))})
	if err != nil {
		t.Fatal(err)
	}
	f.id = aws.ToString(out.ARN)
	f.cache = secrets.New(sm, time.Minute, f.clock)
	return f
}

func (f *fixture) clock() time.Time { return time.Unix(0, f.now.Load()) }

func (f *fixture) source() *graphauth.Source {
	return graphauth.New(f.cache, f.id, graphauth.Options{LoginBaseURL: f.fakes.URL + "/msgraph-login", Now: f.clock})
}

// tokens reports how many tokens the fake issued.
func (f *fixture) tokens(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(f.fakes.URL + "/msgraph-login/tokens")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var n struct{ Issued int }
	if err := json.NewDecoder(resp.Body).Decode(&n); err != nil {
		t.Fatal(err)
	}
	return n.Issued
}

func appSecret() map[string]string {
	return map[string]string{"client_state": "s", "tenant_id": tenant, "client_id": clientID, "client_secret": clientSecret}
}

func TestTokenIsCachedUntilShortlyBeforeExpiry(t *testing.T) {
	f := newFixture(t, appSecret())
	src := f.source()
	ctx := context.Background()
	first, err := src.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first, localcloud.GraphTokenPrefix) {
		t.Fatalf("token %q is not one the fake issued", first)
	}
	if again, _ := src.Token(ctx); again != first || f.tokens(t) != 1 {
		t.Errorf("second Token: %q after %d issued, want the cached token and one request", again, f.tokens(t))
	}
	if exp := src.Expires().Sub(f.clock()); exp < 59*time.Minute || exp > time.Hour {
		t.Errorf("expires in %s, want the fake's 3599 s", exp)
	}
	// 4 minutes before expiry is inside the 5-minute refresh margin.
	f.now.Add(int64(3599*time.Second - 4*time.Minute))
	next, err := src.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == first || f.tokens(t) != 2 {
		t.Errorf("near expiry: token unchanged or %d issued, want a new token (2 issued)", f.tokens(t))
	}
}

// A token Graph refuses mid-run (revoked, expired early) is replaced once: 401, new token, retry.
func TestClientRefreshesOnceOn401(t *testing.T) {
	f := newFixture(t, appSecret())
	src := f.source()
	client := src.Client(nil)
	get := func() int {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, f.fakes.URL+"/msgraph/subscriptions", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(); st != http.StatusOK || f.tokens(t) != 1 {
		t.Fatalf("first call: status %d, %d tokens issued", st, f.tokens(t))
	}
	req, _ := http.NewRequest(http.MethodDelete, f.fakes.URL+"/msgraph-login/tokens", nil)
	if _, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	if st := get(); st != http.StatusOK || f.tokens(t) != 2 {
		t.Errorf("after the token was revoked: status %d, %d tokens issued; want 200 after one refresh (2 issued)", st, f.tokens(t))
	}
	// A body is sent again on the retry.
	req, _ = http.NewRequest(http.MethodDelete, f.fakes.URL+"/msgraph-login/tokens", nil)
	_, _ = http.DefaultClient.Do(req)
	post, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, f.fakes.URL+"/msgraph/subscriptions",
		strings.NewReader(`{"changeType":"created"}`))
	resp, err := client.Do(post)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || f.tokens(t) != 3 { // authorized, then refused as incomplete
		t.Errorf("POST after revocation: status %d, %d issued; want 400 (the body reached Graph) after a refresh", resp.StatusCode, f.tokens(t))
	}
}

func TestRefusedCredentials(t *testing.T) {
	sec := appSecret()
	sec["client_secret"] = "not-the-secret"
	f := newFixture(t, sec)
	_, err := f.source().Token(context.Background())
	if !errors.Is(err, graphauth.ErrCredentials) {
		t.Fatalf("err = %v, want ErrCredentials", err)
	}
	if strings.Contains(err.Error(), "not-the-secret") || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("err = %q: want the OAuth code and never the secret", err)
	}
}

func TestLegacyStaticToken(t *testing.T) {
	f := newFixture(t, map[string]string{"client_state": "s", "access_token": "static-token"})
	src := f.source()
	tok, err := src.Token(context.Background())
	if err != nil || tok != "static-token" {
		t.Fatalf("Token = %q, %v; want the secret's access_token", tok, err)
	}
	f2 := newFixture(t, map[string]string{"client_state": "s"})
	if _, err := f2.source().Token(context.Background()); !errors.Is(err, graphauth.ErrCredentials) {
		t.Errorf("no credentials at all: err = %v, want ErrCredentials", err)
	}
}
