package worker

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/metaleads"
	"github.com/crmsync/crmsync/shared/store"
)

// metaGraph answers every lead read with Meta's documented error for an expired access token
// (code 190, OAuthException), as the Graph API does.
func metaGraph(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":{"message":"Error validating access token: Session has expired.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"AbCdEf"}}`))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A lead whose hydration answers a permanent Graph API error (190, expired token) is recorded
// REJECTED with the vendor's reason and acknowledged: never retried until the DLQ, for every
// lead, as before (the error was classified transient: a batch item failure on every receive).
// It is counted as HydrationFailures so its alarm fires, and `crmsync replay` re-runs it after
// the token is fixed.
func TestPermanentHydrationErrorIsRejectedNotRetried(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	var metrics bytes.Buffer
	w := newWorker(t, tb, tb.ddb, c, func(cfg *Config) {
		cfg.Hydrators = map[string]Hydration{"meta-leads": {Hydrator: metaleads.New(), SecretID: "s",
			API: connector.API{BaseURL: metaGraph(t).URL, Client: http.DefaultClient}}}
		cfg.Secrets = SecretFunc(func(context.Context, string) (connector.Secret, error) {
			return connector.Secret{Current: map[string]string{"access_token": "expired"}}, nil
		})
		cfg.Metrics = &metrics
	})
	ev := notification("meta-leads:190", "lead@acme.com", "4455667788")
	resp, err := w.Handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{message(t, "m1", ev)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.BatchItemFailures) != 0 {
		t.Fatalf("batch item failures = %+v, want none: a permanent vendor error must not be retried", resp.BatchItemFailures)
	}
	led, err := w.getLedger(context.Background(), ev.Key)
	if err != nil || led == nil || led.Outcome != store.Rejected || !strings.Contains(led.Reason, "190") {
		t.Fatalf("ledger = %+v, %v; want REJECTED naming code 190", led, err)
	}
	if !led.HasEvent() {
		t.Error("the rejected event's body was not kept: crmsync replay could not re-run it")
	}
	if !strings.Contains(metrics.String(), `"HydrationFailures"`) {
		t.Errorf("no HydrationFailures metric emitted: %s", metrics.String())
	}
}

// A skipped hydration (a Graph draft, a deleted message) is recorded NOOP with its reason: it
// changes nothing, fails nothing and raises no alarm (before, it was REJECTED as not found).
func TestSkippedHydrationIsNoop(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c, func(cfg *Config) {
		cfg.Hydrators = map[string]Hydration{"meta-leads": {Hydrator: skippingHydrator{}}}
	})
	ev := notification("meta-leads:draft", "d@acme.com", "draft")
	res, err := w.Apply(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != store.Noop || !strings.Contains(res.Reason, "draft") {
		t.Fatalf("result = %+v, want NOOP naming the draft", res)
	}
	if led, _ := w.getLedger(context.Background(), ev.Key); led == nil || led.Outcome != store.Noop {
		t.Fatalf("ledger = %+v, want NOOP", led)
	}
}

type skippingHydrator struct{}

func (skippingHydrator) Hydrate(context.Context, *canonical.Event, connector.Secret, connector.API) error {
	return connector.Skip("message is a draft")
}
