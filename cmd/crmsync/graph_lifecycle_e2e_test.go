package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/graphsub"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samples"
)

// graphWorkerStack is a local stack whose Graph subscriptions function keeps the fixtures'
// mailbox (GraphMailboxes set in a copy of template.yaml) and whose worker runs its event
// source mapping, as deployed.
func graphWorkerStack(t *testing.T) *testStack {
	t.Helper()
	src, err := os.ReadFile("../../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	param := "  GraphMailboxes:\n    Type: String\n    Default: \"\"\n"
	if !bytes.Contains(src, []byte(param)) {
		t.Fatalf("template.yaml no longer declares %q: update the test", param)
	}
	tmpl := filepath.Join(t.TempDir(), "template.yaml")
	mutated := bytes.Replace(src, []byte(param), []byte("  GraphMailboxes:\n    Type: String\n    Default: sam.rivera@example.net\n"), 1)
	if err := os.WriteFile(tmpl, mutated, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	d, err := localcloud.Start(context.Background(), localcloud.Config{
		TemplatePath: tmpl, Endpoint: moto.SerializedForTest(t), HTTPAddr: "127.0.0.1:0",
		DevSecretsPath: "../../config/dev-secrets.json", FixturesDir: "../../events/vendor",
		StackName: fmt.Sprintf("glc%d", time.Now().UnixNano()%1e9), Factory: fnbuild.Factory, Out: logs, NoSchedules: true,
	})
	if err != nil {
		t.Fatalf("start local stack: %v", err)
	}
	t.Cleanup(d.Close)
	secrets, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	return &testStack{Dev: d, t: t, secrets: secrets, logs: logs}
}

// ensureReport runs `crmsync graph subscriptions ensure --json`.
func (s *testStack) ensureReport() graphsub.Report {
	s.t.Helper()
	out := s.mustCLI("graph", "subscriptions", "ensure", "--json")
	var rep graphsub.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		s.t.Fatalf("ensure --json: %v\n%s", err, out)
	}
	return rep
}

func subscriptionOutcome(t *testing.T, rep graphsub.Report, resource string) graphsub.Outcome {
	t.Helper()
	for _, o := range rep.Subscriptions {
		if strings.HasSuffix(o.Key, "/"+resource) {
			return o
		}
	}
	t.Fatalf("no %s subscription in %+v", resource, rep)
	return graphsub.Outcome{}
}

// End to end on the local stack: Graph sends reauthorizationRequired for the mailbox's messages
// subscription to the notification route (/webhooks/msgraph: its lifecycleNotificationUrl was
// set to the notification URL). The webhook answers 202, the worker records it in the ledger
// (NOOP, for the subscription manager: `crmsync events list` shows it), and the next `crmsync
// graph subscriptions ensure` reauthorizes that subscription — once.
func TestGraphLifecycleAtNotificationRouteReachesTheManager(t *testing.T) {
	s := graphWorkerStack(t)
	rep := s.ensureReport()
	sub := subscriptionOutcome(t, rep, graphsub.ResourceMessages)
	if sub.Actions != graphsub.ActionCreated || sub.SubscriptionID == "" || rep.Errors != 0 {
		t.Fatalf("first ensure: %+v, want the subscriptions created", rep)
	}

	body := fmt.Sprintf(`{"value":[{"subscriptionId":%q,"subscriptionExpirationDateTime":%q,"tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95",`+
		`"clientState":"placeholder","lifecycleEvent":"reauthorizationRequired","resource":"",`+
		`"resourceData":{"@odata.type":"#microsoft.graph.subscription","@odata.id":"subscriptions/%[1]s","id":%[1]q}}]}`,
		sub.SubscriptionID, time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339))
	if status, resp := s.post(s.signed("msgraph", []byte(body), "application/json")); status != 202 {
		t.Fatalf("lifecycle notification at /webhooks/msgraph: %d %s, want 202", status, resp)
	}

	prefix := "msgraph:lifecycle:" + sub.SubscriptionID + ":reauthorizationRequired:"
	s.eventually("the lifecycle notification recorded in the ledger", func() bool {
		out, err := s.cli("events", "list", "--source", msgraph.Name, "--outcome", "NOOP", "--json")
		if err != nil {
			return false
		}
		var entries []ledgerEntry
		if json.Unmarshal([]byte(out), &entries) != nil {
			return false
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Key, prefix) && strings.Contains(e.Reason, "recorded for the subscription manager") {
				return true
			}
		}
		return false
	})

	o := subscriptionOutcome(t, s.ensureReport(), graphsub.ResourceMessages)
	if o.Actions != graphsub.ActionReauthorized || o.SubscriptionID != sub.SubscriptionID || o.Error != "" {
		t.Errorf("ensure after the notification: %+v, want the messages subscription reauthorized", o)
	}
	if again := subscriptionOutcome(t, s.ensureReport(), graphsub.ResourceMessages); again.Actions != graphsub.ActionNone {
		t.Errorf("ensure again: %+v, want nothing done (the notification was acted on once)", again)
	}
	if q := s.quarantined(); len(q) != 0 {
		t.Errorf("quarantined %v, want nothing", q)
	}
}
