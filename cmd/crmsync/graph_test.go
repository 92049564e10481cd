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

	"github.com/crmsync/crmsync/shared/graphsub"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
)

// graphStack starts a local stack whose Graph subscriptions function keeps the fixtures'
// mailbox (template.yaml with GraphMailboxes set, as a deployment would set the parameter).
func graphStack(t *testing.T) *localcloud.Dev {
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
		TemplatePath: tmpl, Endpoint: moto.ForTest(t), HTTPAddr: "127.0.0.1:0",
		DevSecretsPath: "../../config/dev-secrets.json", FixturesDir: "../../events/vendor",
		StackName: fmt.Sprintf("graph%d", time.Now().UnixNano()%1e9), Factory: fnbuild.Factory, Out: logs,
		NoSchedules: true, NoEventSources: true,
	})
	if err != nil {
		t.Fatalf("start local stack: %v", err)
	}
	t.Cleanup(d.Close)
	return d
}

func runGraphCmd(t *testing.T, d *localcloud.Dev, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--local", "--api", "http://" + d.Addr}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestGraphSubscriptionsCommands(t *testing.T) {
	d := graphStack(t)
	out, err := runGraphCmd(t, d, "graph", "subscriptions")
	if err != nil || !strings.Contains(out, "no Graph subscriptions") {
		t.Fatalf("before any run: %v\n%s", err, out)
	}

	out, err = runGraphCmd(t, d, "graph", "subscriptions", "ensure", "--json")
	if err != nil {
		t.Fatalf("ensure: %v\n%s", err, out)
	}
	var rep graphsub.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("ensure --json: %v\n%s", err, out)
	}
	if len(rep.Subscriptions) != 2 || rep.Errors != 0 {
		t.Fatalf("ensure: %+v, want the mailbox's messages and events subscriptions created", rep)
	}
	for _, o := range rep.Subscriptions {
		if o.Actions != graphsub.ActionCreated || o.SubscriptionID == "" {
			t.Errorf("ensure: %+v, want created", o)
		}
	}

	out, err = runGraphCmd(t, d, "graph", "subscriptions", "--json")
	if err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	var states []graphsub.State
	if err := json.Unmarshal([]byte(out), &states); err != nil || len(states) != 2 {
		t.Fatalf("list --json: %v, %d states\n%s", err, len(states), out)
	}
	for _, s := range states {
		if s.Mailbox != "sam.rivera@example.net" || s.SubscriptionID == "" || s.Expiry().Before(time.Now().Add(71*time.Hour)) ||
			s.Status != graphsub.StatusActive {
			t.Errorf("state %+v, want an active subscription expiring in about 72 h", s)
		}
	}

	out, err = runGraphCmd(t, d, "graph", "subscriptions")
	if err != nil || !strings.Contains(out, "sam.rivera@example.net/messages") || !strings.Contains(out, "EXPIRES") ||
		!strings.Contains(out, states[0].SubscriptionID) {
		t.Errorf("list: %v\n%s", err, out)
	}

	// A second run keeps what exists.
	out, err = runGraphCmd(t, d, "graph", "subscriptions", "ensure")
	if err != nil || !strings.Contains(out, "2 kept, 0 at risk") || strings.Contains(out, graphsub.ActionCreated) {
		t.Errorf("second ensure: %v\n%s", err, out)
	}
}
