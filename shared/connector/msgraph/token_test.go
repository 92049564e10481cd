package msgraph

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
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
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

// The app registered with the Graph fake (events/vendor/msgraph-login/apps.json) and the dev
// secret's client_state (config/dev-secrets.json), which the committed samples carry.
const (
	devTenant       = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
	devClientID     = "6731de76-14a6-49ae-97bc-6eba6914391e"
	devClientSecret = "dev-msgraph-client-secret"
	devClientState  = "dev-msgraph-client-state-current"
)

// fakeGraph is the local stack's Graph and identity platform fakes over HTTP, with app tokens
// from shared/graphauth over a secret in Secrets Manager (moto), as the worker wires them.
type fakeGraph struct {
	t     *testing.T
	srv   *httptest.Server
	cache *secrets.Cache
	sm    *secretsmanager.Client
}

func newFakeGraph(t *testing.T) *fakeGraph {
	t.Helper()
	cfg, err := awsclient.Load(context.Background(), moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeGraph{t: t, srv: httptest.NewServer(&localcloud.VendorFakes{Dir: filepath.Join("..", "..", "..", "events", "vendor")}),
		sm: secretsmanager.NewFromConfig(cfg)}
	t.Cleanup(f.srv.Close)
	f.cache = secrets.New(f.sm, time.Minute, time.Now)
	return f
}

// secret stores current as a new msgraph secret and returns its ARN.
func (f *fakeGraph) secret(current map[string]string) string {
	f.t.Helper()
	body, _ := json.Marshal(map[string]any{"current": current})
	out, err := f.sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name: aws.String(fmt.Sprintf("msgraph-token-%d", time.Now().UnixNano())), SecretString: aws.String(string(body))})
	if err != nil {
		f.t.Fatal(err)
	}
	return aws.ToString(out.ARN)
}

// tokens is the worker's token source over the secret id.
func (f *fakeGraph) tokens(id string) *graphauth.Tenants {
	return graphauth.NewTenants(f.cache, id, graphauth.Options{LoginBaseURL: f.srv.URL + "/msgraph-login"})
}

func (f *fakeGraph) api() connector.API {
	return connector.API{BaseURL: f.srv.URL + "/msgraph", Client: &http.Client{Timeout: 10 * time.Second}}
}

// call sends a control request to the fake (revocation, canned answers).
func (f *fakeGraph) call(method, path, body string, header map[string]string) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	resp.Body.Close()
}

// issued reports how many tokens the fake issued.
func (f *fakeGraph) issued() int {
	f.t.Helper()
	resp, err := http.Get(f.srv.URL + "/msgraph-login/tokens")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var n struct{ Issued int }
	if err := json.NewDecoder(resp.Body).Decode(&n); err != nil {
		f.t.Fatal(err)
	}
	return n.Issued
}

// sampleMessage is the committed batch sample's message notification (a mailbox named by user
// id, in the dev tenant) as the webhook leaves it: thin.
func sampleMessage(t *testing.T) canonical.Event {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "..", "..", "events", "payloads", "msgraph-batch.json"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New().Parse(req(string(body)), connector.Secret{Current: map[string]string{"client_state": devClientState}})
	if err != nil || len(p.Events) == 0 || p.Events[0].Hydrate.Object != "message" || p.Events[0].ExternalIDs["tenant_id"] != devTenant {
		t.Fatalf("Parse(msgraph-batch.json): %v; want its message notification first", err)
	}
	return p.Events[0]
}

// A token Graph refuses mid-run (revoked, expired early) is replaced once through the token
// source (shared/graphauth), asked for the notification's tenant; a token refused again is
// permanent after that one refresh. Tokens are cached across hydrations.
func TestHydrateRefreshesRevokedTokenOnce(t *testing.T) {
	f := newFakeGraph(t)
	id := f.secret(map[string]string{"client_state": devClientState, "tenant_id": devTenant, "client_id": devClientID, "client_secret": devClientSecret})
	c := New(WithTokenSource(f.tokens(id)))
	api := f.api()
	hydrate := func() (canonical.Event, error) {
		ev := sampleMessage(t)
		err := c.Hydrate(context.Background(), &ev, connector.Secret{}, api)
		return ev, err
	}

	ev, err := hydrate()
	if err != nil {
		t.Fatalf("Hydrate: %v", err)
	}
	if ev.Kind == canonical.KindNotification || ev.Activity == nil || f.issued() != 1 {
		t.Fatalf("hydrated %s after %d tokens issued, want an email event after one", ev.Kind, f.issued())
	}
	if _, err := hydrate(); err != nil || f.issued() != 1 {
		t.Fatalf("second Hydrate: %v after %d tokens issued, want the cached token", err, f.issued())
	}

	f.call(http.MethodDelete, "/msgraph-login/tokens", "", nil) // every token revoked
	if _, err := hydrate(); err != nil {
		t.Fatalf("Hydrate after revocation: %v", err)
	}
	if f.issued() != 2 {
		t.Fatalf("tokens issued = %d, want 2 (one refresh)", f.issued())
	}

	// Graph refuses every token for the item: permanent after one refresh, no token in the error.
	item := "/msgraph/" + canonicalPath(sampleMessage(t).Hydrate.Resource)
	f.call(http.MethodPut, item, `{"error":{"code":"InvalidAuthenticationToken","message":"Access token validation failure."}}`,
		map[string]string{localcloud.FakeStatusHeader: "401"})
	_, err = hydrate()
	if !errors.Is(err, connector.ErrPermanent) || errors.Is(err, connector.ErrTransient) || f.issued() != 3 {
		t.Fatalf("Hydrate with the token refused: %v after %d tokens issued, want ErrPermanent after 3", err, f.issued())
	}
	if strings.Contains(err.Error(), localcloud.GraphTokenPrefix) || strings.Contains(err.Error(), devClientSecret) {
		t.Fatalf("error leaks a token or the client secret: %v", err)
	}
	f.call(http.MethodDelete, item, "", map[string]string{localcloud.FakeResetHeader: "1"})
	if _, err := hydrate(); err != nil || f.issued() != 3 {
		t.Fatalf("Hydrate after Graph recovered: %v after %d tokens issued, want the refreshed token", err, f.issued())
	}
}

// The token is asked for the notification's tenant: one the app is not registered in is refused
// by the identity platform (permanent); the identity platform down is transient.
func TestHydrateTokenFailures(t *testing.T) {
	f := newFakeGraph(t)
	id := f.secret(map[string]string{"client_state": devClientState, "tenant_id": devTenant, "client_id": devClientID, "client_secret": devClientSecret})
	c := New(WithTokenSource(f.tokens(id)))

	ev := sampleMessage(t)
	ev.ExternalIDs["tenant_id"] = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
	err := c.Hydrate(context.Background(), &ev, connector.Secret{}, f.api())
	if !errors.Is(err, connector.ErrPermanent) || !errors.Is(err, graphauth.ErrCredentials) || f.issued() != 0 {
		t.Fatalf("Hydrate for an unknown tenant: %v (%d issued), want refused credentials (ErrPermanent)", err, f.issued())
	}
	if strings.Contains(err.Error(), devClientSecret) {
		t.Fatalf("error leaks the client secret: %v", err)
	}

	f.call(http.MethodPut, "/msgraph-login/"+devTenant+"/oauth2/v2.0/token", `{"error":"temporarily_unavailable"}`,
		map[string]string{localcloud.FakeStatusHeader: "503"})
	ev = sampleMessage(t)
	if err := c.Hydrate(context.Background(), &ev, connector.Secret{}, f.api()); !errors.Is(err, connector.ErrTransient) || ev.Hydrate == nil {
		t.Fatalf("Hydrate with the identity platform down: %v, want ErrTransient", err)
	}
}

// A secret without client credentials falls back to its static access_token, through the token
// source too (the Graph fake accepts tokens it did not issue).
func TestHydrateStaticTokenThroughTokenSource(t *testing.T) {
	f := newFakeGraph(t)
	id := f.secret(map[string]string{"client_state": devClientState, "access_token": "dev-static-token"})
	ev := sampleMessage(t)
	if err := New(WithTokenSource(f.tokens(id))).Hydrate(context.Background(), &ev, connector.Secret{}, f.api()); err != nil {
		t.Fatalf("Hydrate: %v", err)
	}
	if f.issued() != 0 {
		t.Errorf("%d tokens issued, want the static token", f.issued())
	}
}
