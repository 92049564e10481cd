package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/samples"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// rotationTTL is the webhooks' secret cache in the rotation test (SECRET_TTL_SECONDS; 300 s
// deployed): long enough that the cache visibly holds the old value after the rotation, short
// enough for a test.
const rotationTTL = 2 * time.Second

// rotationFactory builds the functions with a rotationTTL secret cache.
func rotationFactory(ctx context.Context, fn samtemplate.Function, env localcloud.FunctionEnv) (lambda.Handler, error) {
	get := env.Getenv
	env.Getenv = func(k string) string {
		if k == "SECRET_TTL_SECONDS" {
			return fmt.Sprint(int(rotationTTL / time.Second))
		}
		return get(k)
	}
	return fnbuild.Factory(ctx, fn, env)
}

// delivery is one signed Standard Webhooks lead, posted and answered.
type delivery struct {
	key    string // the event key: generic:{webhook-id}
	signer string // old | new
	sentAt time.Time
	status int
	err    error
}

// rotationSender posts unique leads signed with one secret, concurrently, until stopped.
type rotationSender struct {
	base string
	seq  *atomic.Int64
	mu   sync.Mutex
	done []delivery
}

// lead is a unique crmsync.generic/v1 lead (its own external id, so its own webhook-id and key).
func lead(n int64, signer string) []byte {
	return []byte(fmt.Sprintf(`{"schema":"crmsync.generic/v1","type":"lead","occurred_at":%q,"external_id":"rotation-%s-%d",`+
		`"person":{"emails":["rotation@example.com"],"first_name":"Rosalind"}}`, time.Now().UTC().Format(time.RFC3339), signer, n))
}

// send signs one lead with sec and posts it; safe for concurrent use (no testing.T).
func (r *rotationSender) send(signer string, sec connector.Secret) delivery {
	n := r.seq.Add(1)
	d := delivery{signer: signer, sentAt: time.Now()}
	ev, err := samples.WebhookEvent("generic", lead(n, signer), "application/json", r.base, sec, time.Now())
	if err != nil {
		d.err = err
		return d
	}
	d.key = "generic:" + ev.Headers["webhook-id"]
	d.status, d.err = postEvent(r.base, ev)
	r.mu.Lock()
	r.done = append(r.done, d)
	r.mu.Unlock()
	return d
}

// run posts with `workers` goroutines until stop is closed.
func (r *rotationSender) run(wg *sync.WaitGroup, stop <-chan struct{}, workers int, signer string, sec connector.Secret) {
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r.send(signer, sec)
				time.Sleep(40 * time.Millisecond)
			}
		}()
	}
}

func (r *rotationSender) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.done...)
}

// postEvent sends an API Gateway event's request over HTTP (postEvent, unlike testStack.post,
// reports errors instead of failing the test, so goroutines may call it).
func postEvent(base string, ev events.APIGatewayV2HTTPRequest) (int, error) {
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			return 0, err
		}
		body = b
	}
	u := base + ev.RawPath
	if ev.RawQueryString != "" {
		u += "?" + ev.RawQueryString
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range ev.Headers {
		if k == "host" || k == "content-length" || strings.HasPrefix(k, "x-forwarded-") {
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// ledgerKeys returns the generic ledger entries' outcomes by key.
func (s *testStack) ledgerKeys() map[string]string {
	s.t.Helper()
	out := s.mustCLI("events", "list", "--source", "generic", "--since", "1h", "--limit", "0", "--json")
	var entries []ledgerEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		s.t.Fatalf("events list --json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Key] = e.Outcome
	}
	return got
}

// A secret rotation with deliveries in flight loses none. Leads signed with the old Standard
// Webhooks secret keep arriving, from concurrent senders, while `crmsync secrets rotate generic
// --from-file new.json` installs the new one, and for longer than the webhooks' secret cache
// (SECRET_TTL_SECONDS) after it: some are verified against the cached pre-rotation value, the
// later ones against the refreshed secret, where the old value is `previous`. Then, once the
// cache has refreshed (as the connector page tells the operator: switch the sender after the
// TTL), leads signed with the new secret, still concurrently, also while `--finish` runs. Every
// delivery up to then is answered 2xx and applied (APPLIED in the ledger). Once the cache has
// refreshed after --finish, an old-signed lead is refused 401 and nothing is stored (no ledger
// entry, no quarantined object), while a new-signed one still is applied.
func TestSecretRotationWithDeliveriesInFlightLosesNone(t *testing.T) {
	s := startStackWith(t, true, rotationFactory)
	const name = "generic"
	// The dev secret is mid-rotation (it has a previous value): finish that one first, and let
	// the caches drop the dev previous value.
	s.mustCLI("secrets", "rotate", name, "--finish")
	old := connector.Secret{Current: s.secrets[name].Current}
	time.Sleep(rotationTTL + 500*time.Millisecond)

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	newValue := map[string]string{"signing_key": "whsec_" + base64.StdEncoding.EncodeToString(key)}
	next := connector.Secret{Current: newValue}
	file := filepath.Join(t.TempDir(), "new.json")
	b, _ := json.Marshal(newValue)
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}

	snd := &rotationSender{base: s.publicBase(), seq: &atomic.Int64{}}
	var wg sync.WaitGroup

	// Old-signed deliveries in flight while the rotation is installed.
	stopOld := make(chan struct{})
	snd.run(&wg, stopOld, 3, "old", old)
	time.Sleep(400 * time.Millisecond)
	out := s.mustCLI("secrets", "rotate", name, "--from-file", file)
	rotated := time.Now()
	if strings.Contains(out, newValue["signing_key"]) || strings.Contains(out, old.Current["signing_key"]) {
		t.Errorf("rotate printed a secret value: %s", out)
	}
	// The old secret keeps arriving for longer than the cache: the overlap covers it.
	time.Sleep(rotationTTL + time.Second)
	close(stopOld)
	wg.Wait()

	// The sender switches to the new secret once every webhook has re-read the secret; new-signed
	// deliveries are in flight while --finish runs.
	stopNew := make(chan struct{})
	snd.run(&wg, stopNew, 3, "new", next)
	time.Sleep(700 * time.Millisecond)
	s.mustCLI("secrets", "rotate", name, "--finish")
	time.Sleep(300 * time.Millisecond)
	close(stopNew)
	wg.Wait()

	sent := snd.deliveries()
	var oldBefore, oldAfterTTL, newCount int
	for _, d := range sent {
		if d.err != nil || d.status/100 != 2 {
			t.Errorf("%s-signed delivery %s sent %s after the rotation: status %d, err %v; want 2xx",
				d.signer, d.key, d.sentAt.Sub(rotated).Round(time.Millisecond), d.status, d.err)
		}
		switch {
		case d.signer == "new":
			newCount++
		case d.sentAt.Before(rotated):
			oldBefore++
		case d.sentAt.After(rotated.Add(rotationTTL)):
			oldAfterTTL++
		}
	}
	if oldBefore == 0 || oldAfterTTL == 0 || newCount == 0 {
		t.Fatalf("deliveries: %d old before the rotation, %d old after the cache's TTL, %d new; want some of each", oldBefore, oldAfterTTL, newCount)
	}

	// Every accepted delivery is applied: none lost.
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := s.ledgerKeys()
		var missing []string
		for _, d := range sent {
			if got[d.key] != "APPLIED" {
				missing = append(missing, fmt.Sprintf("%s (%s-signed: %q)", d.key, d.signer, got[d.key]))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries not applied: %v\nlogs (tail):\n%s", len(missing), len(sent), missing, tail(s.logs.String(), 3000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("applied %d deliveries: %d old-signed before the rotation, %d old-signed after the cache's TTL, %d new-signed",
		len(sent), oldBefore, oldAfterTTL, newCount)

	// After --finish, once the cache has refreshed: the old secret is refused and nothing stored.
	time.Sleep(rotationTTL + 500*time.Millisecond)
	quarantined := len(s.quarantined())
	refused := snd.send("old", old)
	if refused.err != nil || refused.status != http.StatusUnauthorized {
		t.Fatalf("after --finish, old-signed: status %d err %v, want 401", refused.status, refused.err)
	}
	accepted := snd.send("new", next)
	if accepted.err != nil || accepted.status/100 != 2 {
		t.Fatalf("after --finish, new-signed: status %d err %v, want 2xx", accepted.status, accepted.err)
	}
	s.eventually("the new-signed delivery applied after --finish", func() bool { return s.ledgerKeys()[accepted.key] == "APPLIED" })
	if outcome, ok := s.ledgerKeys()[refused.key]; ok {
		t.Errorf("the refused delivery is in the ledger (%s)", outcome)
	}
	if n := len(s.quarantined()); n != quarantined {
		t.Errorf("the refused delivery was stored: %d quarantined objects, was %d", n, quarantined)
	}
}
