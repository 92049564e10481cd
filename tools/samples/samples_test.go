package samples

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/mailgun"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/ingest"
)

const (
	repoEvents  = "../../events"
	devSecrets  = "../../config/dev-secrets.json"
	localBase   = "http://127.0.0.1:3000"
	publicHooks = "https://hooks.example.com"
)

var testNow = time.Date(2025, 3, 11, 16, 10, 0, 0, time.UTC)

// ingestRequest builds the connector request from an event exactly as shared/ingest does.
func ingestRequest(t *testing.T, ev events.APIGatewayV2HTTPRequest, publicBaseURL string, now time.Time) *connector.Request {
	t.Helper()
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			t.Fatal(err)
		}
		body = b
	}
	return ingest.NewRequest(ev, body, publicBaseURL, now)
}

// deliver runs an event through the webhook function's decision path (handshake, method,
// content type, verify, parse, validate) and returns the events, or the handshake answer.
func deliver(t *testing.T, name string, ev events.APIGatewayV2HTTPRequest, publicBaseURL string, sec connector.Secret, now time.Time) ([]canonical.Event, *connector.Response, error) {
	t.Helper()
	c, err := registry.New(name)
	if err != nil {
		t.Fatal(err)
	}
	req := ingestRequest(t, ev, publicBaseURL, now)
	if r, ok := c.Handshake(req, sec); ok {
		return nil, r, nil
	}
	if req.Method != "POST" {
		t.Fatalf("%s: method %s", name, req.Method)
	}
	mt, _, err := mime.ParseMediaType(req.Header("content-type"))
	if err != nil || !slices.Contains(c.ContentTypes(), mt) {
		t.Fatalf("%s: content type %q not accepted", name, req.Header("content-type"))
	}
	if _, err := c.Verify(req, sec, now); err != nil {
		return nil, nil, err
	}
	parsed, err := c.Parse(req, sec)
	if err != nil {
		return nil, nil, err
	}
	for i := range parsed.Events {
		parsed.Events[i].ReceivedAt = now
		if err := parsed.Events[i].Validate(); err != nil {
			return nil, nil, err
		}
	}
	return parsed.Events, nil, nil
}

func loadSecrets(t *testing.T) map[string]connector.Secret {
	t.Helper()
	secs, err := DevSecrets(devSecrets)
	if err != nil {
		t.Fatal(err)
	}
	return secs
}

// generate writes the samples into a temporary copy of events/ and returns its path.
func generate(t *testing.T, base string, now time.Time) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "payloads"), os.DirFS(filepath.Join(repoEvents, "payloads"))); err != nil {
		t.Fatal(err)
	}
	if err := Generate(dir, loadSecrets(t), base, now); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readEvent(t *testing.T, file string) events.APIGatewayV2HTTPRequest {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return ev
}

func TestDevSecrets(t *testing.T) {
	secs := loadSecrets(t)
	if len(secs) != len(registry.Names()) {
		t.Fatalf("secrets for %d connectors, want %d", len(secs), len(registry.Names()))
	}
	want := map[string][]string{
		"twilio": {"auth_token", "account_sid"}, "calendly": {"signing_key", "api_token"},
		"typeform": {"signing_key", "api_token"}, "meta-leads": {"app_secret", "verify_token", "access_token"},
		"msgraph": {"client_state", "access_token"}, "mailgun": {"signing_key"}, "generic": {"signing_key"},
	}
	for name, fields := range want {
		for _, f := range fields {
			if v := secs[name].Values(f); len(v) != 2 {
				t.Errorf("%s.%s: want a distinct current and previous value, got %d", name, f, len(v))
			}
		}
	}
	if !strings.HasPrefix(secs["generic"].Get("signing_key"), "whsec_") {
		t.Error("generic signing_key is not whsec_<base64>")
	}
}

func TestGeneratedWebhooksVerifyAndParse(t *testing.T) {
	secs := loadSecrets(t)
	for _, base := range []string{localBase, publicHooks} {
		dir := generate(t, base, testNow)
		for _, name := range registry.Names() {
			ev := readEvent(t, filepath.Join(dir, "webhook-"+name+".json"))
			if ev.Version != "2.0" || ev.RouteKey != "POST /webhooks/"+name || ev.RequestContext.Stage != "$default" {
				t.Errorf("%s: not an HTTP API 2.0 event for its route: %+v", name, ev)
			}
			for k := range ev.Headers {
				if k != strings.ToLower(k) {
					t.Errorf("%s: header %q not lower-case", name, k)
				}
			}
			// Both ways the webhook function can know its public URL.
			for _, configured := range []string{"", base} {
				evs, hs, err := deliver(t, name, ev, configured, secs[name], testNow.Add(30*time.Second))
				if err != nil || hs != nil || len(evs) == 0 {
					t.Errorf("%s (%s, PUBLIC_BASE_URL=%q): events %d, handshake %v, err %v", name, base, configured, len(evs), hs, err)
				}
			}
			// A rotated secret (the signing value now previous) still verifies.
			rotated := connector.Secret{Current: secs[name].Previous, Previous: secs[name].Current}
			if _, _, err := deliver(t, name, ev, "", rotated, testNow); err != nil {
				t.Errorf("%s: does not verify during rotation: %v", name, err)
			}
			// Another secret does not.
			other := connector.Secret{Current: secs[name].Previous}
			if _, _, err := deliver(t, name, ev, "", other, testNow); !errors.Is(err, connector.ErrUnauthenticated) {
				t.Errorf("%s: verified with the wrong secret (err %v)", name, err)
			}
		}
	}
}

func TestHandshakes(t *testing.T) {
	secs := loadSecrets(t)
	dir := generate(t, localBase, testNow)
	for file, want := range map[string]struct{ name, body string }{
		"webhook-meta-leads-handshake.json": {"meta-leads", MetaChallenge},
		"webhook-msgraph-validation.json":   {"msgraph", GraphValidationToken},
	} {
		ev := readEvent(t, filepath.Join(dir, file))
		_, hs, err := deliver(t, want.name, ev, "", secs[want.name], testNow)
		if err != nil || hs == nil || hs.Status != http.StatusOK || hs.Body != want.body {
			t.Errorf("%s: handshake %+v, err %v; want 200 %q", file, hs, err, want.body)
		}
	}
}

func TestSQSBatch(t *testing.T) {
	dir := generate(t, localBase, testNow)
	b, err := os.ReadFile(filepath.Join(dir, "sqs-ingest-batch.json"))
	if err != nil {
		t.Fatal(err)
	}
	var batch events.SQSEvent
	if err := json.Unmarshal(b, &batch); err != nil {
		t.Fatal(err)
	}
	var sources []string
	for _, r := range batch.Records {
		ev, err := canonical.Unmarshal([]byte(r.Body))
		if err != nil {
			t.Fatal(err)
		}
		if err := ev.Validate(); err != nil {
			t.Error(err)
		}
		sources = append(sources, ev.Source)
		a := r.Attributes
		switch {
		case a["MessageGroupId"] != ev.GroupID(), a["MessageDeduplicationId"] != ev.DedupID():
			t.Errorf("%s: group/dedup ids do not match the event", ev.Key)
		case a["ApproximateReceiveCount"] != "1", a["SentTimestamp"] == "", a["SequenceNumber"] == "":
			t.Errorf("%s: attributes %v", ev.Key, a)
		case r.EventSource != "aws:sqs", r.EventSourceARN != IngestQueueARN:
			t.Errorf("%s: source %s %s", ev.Key, r.EventSource, r.EventSourceARN)
		case !ev.ReceivedAt.Equal(testNow):
			t.Errorf("%s: received_at %v", ev.Key, ev.ReceivedAt)
		}
	}
	if !slices.Equal(sources, SQSBatchSources) {
		t.Errorf("sources %v, want %v", sources, SQSBatchSources)
	}
	for _, job := range ScheduleJobs {
		var in map[string]string
		b, err := os.ReadFile(filepath.Join(dir, "schedule-"+job+".json"))
		if err != nil || json.Unmarshal(b, &in) != nil || in["job"] != job {
			t.Errorf("schedule-%s.json: %s (%v)", job, b, err)
		}
	}
}

func TestResignRefreshesTimestamps(t *testing.T) {
	secs := loadSecrets(t)
	then := testNow.Add(-time.Hour)
	dir := generate(t, localBase, then)
	for _, name := range []string{"calendly", "mailgun", "generic"} {
		ev := readEvent(t, filepath.Join(dir, "webhook-"+name+".json"))
		if _, _, err := deliver(t, name, ev, "", secs[name], testNow); !errors.Is(err, connector.ErrUnauthenticated) {
			t.Fatalf("%s: an hour-old signature should be refused, got %v", name, err)
		}
		before, _, err := deliver(t, name, ev, "", secs[name], then)
		if err != nil {
			t.Fatal(err)
		}
		if err := Resign(&ev, name, secs[name], testNow); err != nil {
			t.Fatal(err)
		}
		after, _, err := deliver(t, name, ev, "", secs[name], testNow)
		if err != nil {
			t.Fatalf("%s: re-signed event refused: %v", name, err)
		}
		if before[0].Key != after[0].Key {
			t.Errorf("%s: re-signing changed the event key %s -> %s", name, before[0].Key, after[0].Key)
		}
		if ev.RequestContext.TimeEpoch != testNow.UnixMilli() {
			t.Errorf("%s: request time not refreshed", name)
		}
	}
}

// TestCommittedEvents checks the files under events/ (as `crmsync-dev events generate` left them)
// against config/dev-secrets.json, refreshed to now as `crmsync-dev events sign` does.
func TestCommittedEvents(t *testing.T) {
	secs := loadSecrets(t)
	files, err := filepath.Glob(filepath.Join(repoEvents, "webhook-*.json"))
	if err != nil || len(files) != len(registry.Names())+2 {
		t.Fatalf("found %d webhook events under events/, want %d (run go run ./tools/cmd/crmsync-dev events generate)", len(files), len(registry.Names())+2)
	}
	for _, f := range files {
		ev := readEvent(t, f)
		name, err := Refresh(&ev, secs, testNow)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		evs, hs, err := deliver(t, name, ev, "", secs[name], testNow)
		if err != nil || (hs == nil && len(evs) == 0) || (hs != nil && hs.Status != http.StatusOK) {
			t.Errorf("%s: events %d, handshake %+v, err %v", f, len(evs), hs, err)
		}
	}
}

// fixtureServer serves <dir>/<vendor>/<path>.json for GET /<vendor>/<path>, as
// localcloud.VendorFakes does.
func fixtureServer(t *testing.T, dir string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(path.Clean(r.URL.Path), "/"))+".json"))
		if err != nil {
			http.Error(w, `{"error":{"message":"not found","code":404}}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestHydrationFixtures(t *testing.T) {
	secs := loadSecrets(t)
	srv := fixtureServer(t, filepath.Join(repoEvents, "vendor"))
	dir := generate(t, localBase, testNow)
	hydrated := map[string]canonical.Event{}
	for name, vendor := range map[string]string{"meta-leads": "meta-graph", "msgraph": "msgraph"} {
		evs, _, err := deliver(t, name, readEvent(t, filepath.Join(dir, "webhook-"+name+".json")), "", secs[name], testNow)
		if err != nil || len(evs) != 1 {
			t.Fatalf("%s: %d events, %v", name, len(evs), err)
		}
		c, _ := registry.New(name)
		h, ok := c.(connector.Hydrator)
		if !ok {
			t.Fatalf("%s does not hydrate", name)
		}
		ev := evs[0]
		if err := h.Hydrate(context.Background(), &ev, secs[name], connector.API{BaseURL: srv.URL + "/" + vendor}); err != nil {
			t.Fatalf("%s: hydrate: %v", name, err)
		}
		if err := ev.Validate(); err != nil {
			t.Fatal(err)
		}
		hydrated[name] = ev
	}
	if ev := hydrated["meta-leads"]; ev.Kind != canonical.KindLeadSubmitted || !slices.Equal(ev.Subject.Emails, []string{"grace@example.org"}) {
		t.Errorf("meta-leads hydrated to %s %v", ev.Kind, ev.Subject)
	}
	gev := hydrated["msgraph"]
	if gev.Kind != canonical.KindEmailSent || !slices.Equal(gev.Subject.Emails, []string{"grace@example.org"}) {
		t.Errorf("msgraph hydrated to %s %v", gev.Kind, gev.Subject)
	}
	// The Mailgun sample reports the delivery of the message Graph saw sent.
	mevs, _, err := deliver(t, mailgun.Name, readEvent(t, filepath.Join(dir, "webhook-mailgun.json")), "", secs[mailgun.Name], testNow)
	if err != nil || gev.Activity == nil || mevs[0].Activity.ID != gev.Activity.ID {
		t.Errorf("mailgun activity %v vs msgraph %v (%v)", mevs, gev.Activity, err)
	}

	// The list fixtures are served where the vendors' list APIs live.
	for _, p := range []string{
		"/twilio/2010-04-01/Accounts/" + secs["twilio"].Get("account_sid") + "/Calls.json",
		"/calendly/scheduled_events",
		"/typeform/forms/lT4Z3j/responses",
	} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Errorf("GET %s: %d %v", p, resp.StatusCode, err)
		}
	}
}
