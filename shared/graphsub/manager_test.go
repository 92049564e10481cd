package graphsub_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/graphsub"
)

// The lifecycle route answers Graph's validation handshake and refuses a wrong clientState;
// reauthorizationRequired and subscriptionRemoved each lead to their action on the next run.
func TestLifecycleRoute(t *testing.T) {
	s := newStack(t, nil)
	token := "Validation: Testing client application reachability for subscription Request-Id: 0d9e1f"
	resp, err := http.Post(s.base+"/webhooks/msgraph/lifecycle?validationToken="+url.QueryEscape(token), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 512)
	n, _ := resp.Body.Read(body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body[:n]) != token || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("handshake: %d %q (%s), want 200 text/plain with the token", resp.StatusCode, body[:n], resp.Header.Get("Content-Type"))
	}

	rep := s.run()
	msgs := outcome(t, rep, graphsub.ResourceMessages)
	if msgs.Actions != graphsub.ActionCreated || msgs.SubscriptionID == "" || rep.Errors != 0 || rep.AtRisk != 0 {
		t.Fatalf("first run: %+v, want both subscriptions created, none at risk", rep)
	}
	sub := s.fakeSubscription(msgs.SubscriptionID)
	if sub == nil || sub["resource"] != "users/"+userID+"/messages" || sub["clientState"] != clientState ||
		sub["lifecycleNotificationUrl"] != s.base+"/webhooks/msgraph/lifecycle" || sub["notificationUrl"] != s.base+"/webhooks/msgraph" {
		t.Fatalf("Graph's subscription: %v", sub)
	}

	if st := s.lifecycle(msgs.SubscriptionID, graphsub.EventReauthorizationRequired, "not-the-client-state"); st != http.StatusUnauthorized {
		t.Errorf("wrong clientState: status %d, want 401", st)
	}
	if st := s.state(graphsub.ResourceMessages); st.ReauthorizeRequested != "" {
		t.Errorf("a refused notification was recorded: %+v", st)
	}

	if st := s.lifecycle(msgs.SubscriptionID, graphsub.EventReauthorizationRequired, clientState); st != http.StatusAccepted {
		t.Fatalf("reauthorizationRequired: status %d, want 202", st)
	}
	if st := s.state(graphsub.ResourceMessages); st.ReauthorizeRequested == "" || !strings.HasPrefix(st.LastLifecycle, "reauthorizationRequired ") {
		t.Fatalf("reauthorizationRequired not recorded: %+v", st)
	}
	if o := outcome(t, s.run(), graphsub.ResourceMessages); o.Actions != graphsub.ActionReauthorized || o.SubscriptionID != msgs.SubscriptionID || o.Error != "" {
		t.Errorf("after reauthorizationRequired: %+v, want the same subscription reauthorized", o)
	}
	if st := s.state(graphsub.ResourceMessages); st.ReauthorizeRequested != "" || st.ReauthorizedAt == "" {
		t.Errorf("reauthorize not carried out: %+v", st)
	}

	// Graph removes the subscription and says so.
	if resp := s.graphDo(http.MethodDelete, "/subscriptions/"+msgs.SubscriptionID, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("remove at Graph: %d", resp.StatusCode)
	}
	if st := s.lifecycle(msgs.SubscriptionID, graphsub.EventSubscriptionRemoved, clientState); st != http.StatusAccepted {
		t.Fatalf("subscriptionRemoved: status %d, want 202", st)
	}
	o := outcome(t, s.run(), graphsub.ResourceMessages)
	if o.Actions != graphsub.ActionRecreated || o.SubscriptionID == msgs.SubscriptionID || o.Error != "" || s.fakeSubscription(o.SubscriptionID) == nil {
		t.Errorf("after subscriptionRemoved: %+v, want a new subscription", o)
	}
	if st := s.state(graphsub.ResourceMessages); st.RecreateRequested != "" || st.ResyncSince != "" || st.LastResyncAt == "" {
		t.Errorf("recreate not carried out, or its gap not resynced: %+v", st)
	}
	if st := s.lifecycle("00000000-0000-0000-0000-000000000000", graphsub.EventMissed, clientState); st != http.StatusAccepted {
		t.Errorf("a lifecycle notification for an unknown subscription: status %d, want 202 (ignored)", st)
	}
}

// A subscription near expiry is renewed; a failed renewal puts it at risk (the alarm's metric);
// a token that expires mid-run is refreshed once and the call retried.
func TestRenewalFailureAndTokenRefresh(t *testing.T) {
	// A one-day lifetime keeps every expiry the test asks for within Graph's 7 days of real time.
	s := newStack(t, map[string]string{"GRAPH_SUBSCRIPTION_LIFETIME_MINUTES": "1440", "GRAPH_RENEW_BEFORE_MINUTES": "600",
		"GRAPH_ALARM_MARGIN_MINUTES": "300"})
	first := outcome(t, s.run(), graphsub.ResourceMessages)
	expires, _ := time.Parse(time.RFC3339, first.ExpiresAt)
	if d := time.Until(expires); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("created expiring in %s, want the configured 24 h", d)
	}
	if o := outcome(t, s.run(), graphsub.ResourceMessages); o.Actions != graphsub.ActionNone {
		t.Errorf("fresh subscription: %s, want nothing done", o.Actions)
	}

	s.ahead.Store(int64(16 * time.Hour)) // 8 h left: within the 10 h renewal margin
	rep := s.run()
	o := outcome(t, rep, graphsub.ResourceMessages)
	renewed, _ := time.Parse(time.RFC3339, o.ExpiresAt)
	if o.Actions != graphsub.ActionRenewed || !renewed.After(expires.Add(15*time.Hour)) || rep.AtRisk != 0 {
		t.Fatalf("near expiry: %+v (at risk %d), want renewed to about now+16h+24h", o, rep.AtRisk)
	}
	sub := s.fakeSubscription(o.SubscriptionID)
	if at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(sub["expirationDateTime"])); !at.Truncate(time.Second).Equal(renewed) {
		t.Errorf("Graph's expiry %v, state's %s", sub["expirationDateTime"], o.ExpiresAt)
	}

	// Graph refuses the renewal: at risk, recorded, counted.
	s.ahead.Store(int64(36 * time.Hour)) // 4 h left: inside the 5 h alarm margin too
	s.setFake("/msgraph/subscriptions/"+o.SubscriptionID, http.StatusServiceUnavailable, `{"error":{"code":"ServiceUnavailable","message":"try later"}}`)
	rep = s.run()
	failed := outcome(t, rep, graphsub.ResourceMessages)
	if failed.Error == "" || !failed.AtRisk || failed.Status != graphsub.StatusFailing || !strings.Contains(failed.Error, "503") {
		t.Errorf("refused renewal: %+v, want failing and at risk", failed)
	}
	if v, ok := s.metrics.last(graphsub.MetricAtRisk); !ok || v < 1 {
		t.Errorf("%s = %v (%v), want >= 1", graphsub.MetricAtRisk, v, ok)
	}
	if st := s.state(graphsub.ResourceMessages); st.Failures != 1 || st.LastError == "" {
		t.Errorf("state after the failure: %+v", st)
	}
	s.clearFake("/msgraph/subscriptions/" + o.SubscriptionID)

	// The cached token is revoked before the next run: 401, one new token, the call retried.
	issued := s.tokensIssued()
	req, _ := http.NewRequest(http.MethodDelete, s.base+"/_vendor/msgraph-login/tokens", nil)
	if _, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	rep = s.run()
	if o := outcome(t, rep, graphsub.ResourceMessages); o.Actions != graphsub.ActionRenewed || o.Error != "" || rep.AtRisk != 0 {
		t.Errorf("after the token expired mid-run: %+v (at risk %d), want renewed", o, rep.AtRisk)
	}
	if got := s.tokensIssued(); got != issued+1 {
		t.Errorf("%d tokens issued during the run, want exactly one refresh", got-issued)
	}
	if v, _ := s.metrics.last(graphsub.MetricAtRisk); v != 0 {
		t.Errorf("%s = %v after recovery, want 0", graphsub.MetricAtRisk, v)
	}
	if strings.Contains(s.logs.String(), "dev-msgraph-client-secret") || strings.Contains(s.logs.String(), "fake-graph-") {
		t.Errorf("a secret or a token reached the logs")
	}
}

// After `missed`, the window is resynced with the delta query: messages the ledger lacks are
// enqueued once (the webhook's thin events, hydrated by the worker), the others not at all.
func TestMissedResyncEnqueuesOnlyWhatTheLedgerLacks(t *testing.T) {
	s := newStack(t, nil)
	subID := outcome(t, s.run(), graphsub.ResourceMessages).SubscriptionID
	now := time.Now().UTC()
	inbox := "/msgraph/users/" + userID + "/mailFolders/inbox/messages/delta"
	item := func(id, etag string, received time.Time) string {
		return fmt.Sprintf(`{"@odata.type":"#microsoft.graph.message","@odata.etag":"W/\"%s\"","id":%q,"receivedDateTime":%q}`,
			etag, id, received.Format(time.RFC3339))
	}
	s.setFake(inbox, 0, `{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#Collection(message)",`+
		`"@odata.nextLink":"https://graph.microsoft.com/v1.0/users/`+userID+`/mailFolders/inbox/messages/delta?$skiptoken=page2",`+
		`"value":[`+item(msgA, "CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRJa", now.Add(-2*time.Hour))+","+
		item(msgOld, "CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRJ9", now.Add(-72*time.Hour))+`]}`)
	s.setFake(inbox+"?$skiptoken=page2", 0, `{"@odata.deltaLink":"https://graph.microsoft.com/v1.0/users/`+userID+
		`/mailFolders/inbox/messages/delta?$deltatoken=abc","value":[`+item(msgB, "CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRJb", now.Add(-time.Hour))+`]}`)

	// A was delivered by the webhook, as an `updated` change with another etag: another key.
	delivered := fmt.Sprintf(`{"value":[{"subscriptionId":%q,"subscriptionExpirationDateTime":%q,"changeType":"updated",`+
		`"resource":"Users/%s/Messages/%s","resourceData":{"@odata.type":"#Microsoft.Graph.Message","@odata.id":"Users/%[3]s/Messages/%[4]s",`+
		`"@odata.etag":"W/\"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRJZ\"","id":%[4]q},"clientState":%q,"tenantId":%q}]}`,
		subID, now.Add(48*time.Hour).Format(time.RFC3339), userID, msgA, clientState, tenant)
	if st, body := s.post("/webhooks/msgraph", delivered); st != http.StatusAccepted {
		t.Fatalf("webhook delivery: %d %s", st, body)
	}
	webhook := s.queued()
	if len(webhook) != 1 {
		t.Fatalf("the webhook enqueued %d events, want 1", len(webhook))
	}
	s.apply(webhook)

	if st := s.lifecycle(subID, graphsub.EventMissed, clientState); st != http.StatusAccepted {
		t.Fatalf("missed: status %d", st)
	}
	if st := s.state(graphsub.ResourceMessages); st.ResyncSince == "" || st.ResyncSubscriptionID != subID {
		t.Fatalf("missed not recorded: %+v", st)
	}
	o := outcome(t, s.run(), graphsub.ResourceMessages)
	evs := s.queued()
	if o.ResyncEnqueued != 1 || len(evs) != 1 || o.Error != "" {
		t.Fatalf("resync: %+v, queued %d events; want B alone", o, len(evs))
	}
	ev := evs[0]
	want := "msgraph:" + subID + ":created:Users/" + userID + "/Messages/" + msgB + `:W/"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRJb"`
	if ev.Key != want || ev.Kind != "notification" || ev.Hydrate == nil || ev.Hydrate.Resource != "Users/"+userID+"/Messages/"+msgB ||
		ev.ExternalIDs[graphsub.ResyncRunKey] == "" {
		t.Errorf("resync event %+v, want the webhook's thin event for B (key %s)", ev, want)
	}
	if st := s.state(graphsub.ResourceMessages); st.ResyncSince != "" || st.LastResyncEnqueued != 1 {
		t.Errorf("resync not completed: %+v", st)
	}
	s.apply(evs) // the worker hydrates B through the normal path

	// Missed again: everything in the window is in the ledger now, by key or as an equivalent.
	if st := s.lifecycle(subID, graphsub.EventMissed, clientState); st != http.StatusAccepted {
		t.Fatalf("missed: status %d", st)
	}
	o = outcome(t, s.run(), graphsub.ResourceMessages)
	if again := s.queued(); o.ResyncEnqueued != 0 || len(again) != 0 || o.Error != "" {
		t.Errorf("second resync: %+v, %d queued; want nothing enqueued", o, len(again))
	}
	if v, ok := s.metrics.last(graphsub.MetricResynced); !ok || v != 0 {
		t.Errorf("%s = %v, want 0 on the last run", graphsub.MetricResynced, v)
	}
}
