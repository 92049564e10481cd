package graphsub_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/graphsub"
)

// notify posts lifecycle notifications to the notification route (/webhooks/msgraph), as Graph
// does for a subscription whose lifecycleNotificationUrl is the notification URL.
func (s *stack) notify(items ...[2]string) int {
	s.t.Helper()
	var parts []string
	for _, it := range items {
		parts = append(parts, fmt.Sprintf(`{"subscriptionId":%q,"subscriptionExpirationDateTime":%q,"tenantId":%q,"clientState":%q,`+
			`"lifecycleEvent":%q,"resource":"","resourceData":{"@odata.type":"#microsoft.graph.subscription","@odata.id":"subscriptions/%[1]s","id":%[1]q}}`,
			it[0], s.now().Add(48*time.Hour).Format(time.RFC3339), tenant, clientState, it[1]))
	}
	st, _ := s.post("/webhooks/msgraph", `{"value":[`+strings.Join(parts, ",")+`]}`)
	return st
}

// applyLifecycle applies the queued lifecycle events with the worker, as the event source
// mapping would: each is recorded NOOP in the ledger with its reason, nothing else is written.
func (s *stack) applyLifecycle(evs []canonical.Event) {
	s.t.Helper()
	for i := range evs {
		if evs[i].Hydrate == nil || evs[i].Hydrate.Object != msgraph.LifecycleObject {
			s.t.Fatalf("queued %+v, want a lifecycle event", evs[i])
		}
		res, err := s.worker.Apply(context.Background(), &evs[i])
		if err != nil || res.Outcome != "NOOP" || !strings.Contains(res.Reason, "recorded for the subscription manager") {
			s.t.Fatalf("apply %s: %+v %v, want NOOP recorded for the subscription manager", evs[i].Key, res, err)
		}
	}
}

// Lifecycle notifications that reach the notification route are acted on exactly as the
// lifecycle route's: the webhook answers 202 once they are queued, the worker records them in
// the ledger, and the next run reauthorizes, resyncs and recreates — once: later runs read the
// same ledger entries and do nothing again. Before, they were only logged and counted.
func TestLifecycleAtNotificationRoute(t *testing.T) {
	s := newStack(t, nil)
	rep := s.run()
	subID := outcome(t, rep, graphsub.ResourceMessages).SubscriptionID
	if subID == "" || rep.Errors != 0 {
		t.Fatalf("first run: %+v", rep)
	}

	if st := s.notify([2]string{subID, graphsub.EventReauthorizationRequired}, [2]string{subID, graphsub.EventMissed},
		[2]string{"00000000-0000-0000-0000-000000000000", graphsub.EventSubscriptionRemoved}); st != http.StatusAccepted {
		t.Fatalf("lifecycle at the notification route: status %d, want 202", st)
	}
	queued := s.queued()
	if len(queued) != 3 {
		t.Fatalf("queued %d events (%v), want the three lifecycle notifications", len(queued), queued)
	}
	if st := s.state(graphsub.ResourceMessages); st.ReauthorizeRequested != "" || st.ResyncSince != "" {
		t.Fatalf("recorded before the worker and the run: %+v", st)
	}
	s.applyLifecycle(queued)

	o := outcome(t, s.run(), graphsub.ResourceMessages)
	if o.Actions != graphsub.ActionReauthorized || o.SubscriptionID != subID || o.Error != "" {
		t.Errorf("after reauthorizationRequired and missed: %+v, want the same subscription reauthorized", o)
	}
	st := s.state(graphsub.ResourceMessages)
	if st.ReauthorizeRequested != "" || st.ReauthorizedAt == "" || st.ResyncSince != "" || st.LastResyncAt == "" ||
		!strings.HasPrefix(st.LastLifecycle, graphsub.EventMissed+" ") && !strings.HasPrefix(st.LastLifecycle, graphsub.EventReauthorizationRequired+" ") {
		t.Errorf("reauthorize and resync not carried out: %+v", st)
	}
	if v, ok := s.metrics.last(graphsub.MetricLifecycle); !ok || v != 2 {
		t.Errorf("%s = %v (%v), want 2 (the unknown subscription's is ignored)", graphsub.MetricLifecycle, v, ok)
	}

	// The same ledger entries on the next run: nothing pending, nothing done again.
	again := outcome(t, s.run(), graphsub.ResourceMessages)
	if again.Actions != graphsub.ActionNone || again.Error != "" {
		t.Errorf("second run: %+v, want nothing done", again)
	}
	if after := s.state(graphsub.ResourceMessages); after.LastLifecycle != st.LastLifecycle || after.ReauthorizedAt != st.ReauthorizedAt ||
		after.LastResyncAt != st.LastResyncAt {
		t.Errorf("second run recorded or acted again: %+v, was %+v", after, st)
	}

	// Graph removes the subscription and says so at the notification route.
	if resp := s.graphDo(http.MethodDelete, "/subscriptions/"+subID, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("remove at Graph: %d", resp.StatusCode)
	}
	if st := s.notify([2]string{subID, graphsub.EventSubscriptionRemoved}); st != http.StatusAccepted {
		t.Fatalf("subscriptionRemoved: status %d, want 202", st)
	}
	s.applyLifecycle(s.queued())
	o = outcome(t, s.run(), graphsub.ResourceMessages)
	if o.Actions != graphsub.ActionRecreated || o.SubscriptionID == subID || o.Error != "" || s.fakeSubscription(o.SubscriptionID) == nil {
		t.Errorf("after subscriptionRemoved: %+v, want a new subscription", o)
	}
	if o := outcome(t, s.run(), graphsub.ResourceMessages); o.Actions != graphsub.ActionNone {
		t.Errorf("run after the recreate: %+v, want nothing done", o)
	}
}
