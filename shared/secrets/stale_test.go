package secrets

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/moto"
)

// flakySecretsManager is a real Secrets Manager client against moto, through a proxy that
// answers 503 while down is set: a Secrets Manager outage as the SDK sees it.
func flakySecretsManager(t *testing.T) (api *secretsmanager.Client, down *atomic.Bool, calls *atomic.Int32) {
	t.Helper()
	target, err := url.Parse(moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	down, calls = &atomic.Bool{}, &atomic.Int32{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if down.Load() {
			http.Error(w, `{"__type":"ServiceUnavailable"}`, http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg, err := awsclient.Load(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) { o.RetryMaxAttempts = 1 }), down, calls
}

func createSecret(t *testing.T, api *secretsmanager.Client, value string) string {
	t.Helper()
	name := fmt.Sprintf("crmsync/test/%d", time.Now().UnixNano())
	if _, err := api.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{Name: aws.String(name), SecretString: aws.String(value)}); err != nil {
		t.Fatal(err)
	}
	return name
}

// A Secrets Manager blip is not an outage: past its TTL a cached secret is still served for the
// grace period while the fetch fails (and each such use is reported), then the error surfaces.
// Before this, the first failed refresh after the TTL failed every request.
func TestStaleOnError(t *testing.T) {
	api, down, calls := flakySecretsManager(t)
	id := createSecret(t, api, `{"current":{"k":"v1"}}`)
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var stale []time.Duration
	c := New(api, 5*time.Minute, func() time.Time { return now }, StaleOnError(time.Hour, func(got string, age time.Duration, err error) {
		if got != id || err == nil {
			t.Errorf("onStale(%q, %v, %v): want id %s and the fetch error", got, age, err, id)
		}
		stale = append(stale, age)
	}))
	ctx := context.Background()
	for _, c2 := range []struct {
		at      time.Duration
		wantErr bool
		want    string
	}{
		{0, false, "v1"},                // fetched
		{4 * time.Minute, false, "v1"},  // fresh: no call
		{10 * time.Minute, false, "v1"}, // stale: fetch fails, cached value served
		{64 * time.Minute, false, "v1"}, // still within TTL + grace
		{66 * time.Minute, true, ""},    // past TTL + grace: the error surfaces
	} {
		now = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC).Add(c2.at)
		down.Store(c2.at > 0)
		sec, err := c.Get(ctx, id)
		if (err != nil) != c2.wantErr {
			t.Fatalf("at +%v: err = %v, want error %v", c2.at, err, c2.wantErr)
		}
		if err == nil && sec.Current["k"] != c2.want {
			t.Errorf("at +%v: current k = %q, want %q", c2.at, sec.Current["k"], c2.want)
		}
	}
	if len(stale) != 2 || stale[0] != 10*time.Minute || stale[1] != 64*time.Minute {
		t.Errorf("stale uses reported = %v, want [10m 64m]", stale)
	}
	if got := calls.Load(); got != 5 {
		t.Errorf("Secrets Manager called %d times, want 5 (create, first fetch, then each read past the TTL)", got)
	}
}

// Without the option a failed refresh is an error at once (the webhook answers 503).
func TestNoGraceWithoutOption(t *testing.T) {
	api, down, _ := flakySecretsManager(t)
	id := createSecret(t, api, `{"current":{"k":"v1"}}`)
	now := time.Unix(0, 0)
	c := New(api, time.Minute, func() time.Time { return now })
	if _, err := c.Get(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	down.Store(true)
	if _, err := c.Get(context.Background(), id); err == nil {
		t.Fatal("failed refresh without StaleOnError returned no error")
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}
