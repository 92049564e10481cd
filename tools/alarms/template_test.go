package alarms

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

const repoRoot = "../.."

func templateAlarms(t *testing.T) []Alarm {
	t.Helper()
	tmpl, err := samtemplate.Load(filepath.Join(repoRoot, "template.yaml"), samtemplate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	as, err := FromTemplate(tmpl, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) == 0 {
		t.Fatal("template.yaml declares no alarms")
	}
	return as
}

// Every alarm in template.yaml names a runbook that exists and says what the runbook format
// requires; every runbook belongs to an alarm.
func TestEveryAlarmHasARunbook(t *testing.T) {
	sections := []string{"## What it means", "## Business impact", "## First checks", "## Diagnose and fix", "## Owner and escalation"}
	named := map[string]bool{}
	for _, a := range templateAlarms(t) {
		if a.Runbook == "" {
			t.Errorf("%s: AlarmDescription names no docs/runbooks/<name>.md", a.LogicalID)
			continue
		}
		if named[a.Name] {
			t.Errorf("%s: runbook %s is named by two alarms", a.LogicalID, a.Runbook)
		}
		named[a.Name] = true
		b, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(a.Runbook)))
		if err != nil {
			t.Errorf("%s: runbook missing: %v", a.LogicalID, err)
			continue
		}
		doc := string(b)
		if !strings.HasPrefix(doc, "# "+a.Name+"\n") {
			t.Errorf("%s: should start with the title # %s", a.Runbook, a.Name)
		}
		if !strings.Contains(doc, a.LogicalID) {
			t.Errorf("%s: does not name its alarm %s", a.Runbook, a.LogicalID)
		}
		for _, s := range sections {
			if !strings.Contains(doc, s) {
				t.Errorf("%s: no %q section", a.Runbook, s)
			}
		}
		if !strings.Contains(doc, "```sh\ncrmsync ") && !strings.Contains(doc, "\ncrmsync ") {
			t.Errorf("%s: no crmsync command to diagnose or fix", a.Runbook)
		}
	}
	files, err := filepath.Glob(filepath.Join(repoRoot, RunbookDir, "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if name := strings.TrimSuffix(filepath.Base(f), ".md"); !named[name] && name != "README" {
			t.Errorf("%s belongs to no alarm in template.yaml", f)
		}
	}
}

// Every alarm notifies the alarm topic when it fires and when it clears, and evaluates within
// CloudWatch's limits.
func TestAlarmsNotifyAndStayWithinLimits(t *testing.T) {
	for _, a := range templateAlarms(t) {
		if !slices.Equal(a.AlarmActions, []string{"{{ref:AlarmTopic}}"}) || !slices.Equal(a.OKActions, []string{"{{ref:AlarmTopic}}"}) {
			t.Errorf("%s: actions %v / %v, want AlarmTopic for both", a.LogicalID, a.AlarmActions, a.OKActions)
		}
		if a.Period > 24*time.Hour {
			t.Errorf("%s: period %s above one day", a.LogicalID, a.Period)
		}
		window := a.Period * time.Duration(a.EvaluationPeriods)
		limit := 7 * 24 * time.Hour
		if a.Period < time.Hour {
			limit = 24 * time.Hour
		}
		if window > limit {
			t.Errorf("%s: evaluates %s, above CloudWatch's %s", a.LogicalID, window, limit)
		}
	}
}

// The alarms the issue asks for exist, with the shapes that make them mean what they say.
func TestExpectedAlarms(t *testing.T) {
	byName := map[string]Alarm{}
	for _, a := range templateAlarms(t) {
		byName[a.Name] = a
	}
	want := []string{"dlq-not-empty", "ingest-oldest-message-age", "worker-errors", "worker-throttles", "retry-rate",
		"quarantined-payloads", "hydration-failures", "secrets-stale", "drift-above-sla", "missing-events", "job-heartbeat-parity", "job-heartbeat-consistency",
		"job-heartbeat-mapping-review", "graph-subscriptions"}
	for _, c := range []string{"twilio", "calendly", "typeform", "meta-leads", "msgraph", "mailgun", "generic"} {
		want = append(want, "auth-failures-"+c, "enqueue-failures-"+c)
	}
	for _, n := range want {
		if _, ok := byName[n]; !ok {
			t.Errorf("no alarm %s", n)
		}
	}
	if a := byName["ingest-oldest-message-age"]; a.Metric == nil || a.Threshold != 900 || a.Metric.Dimensions["QueueName"] != "{{att:IngestQueue.QueueName}}" {
		t.Errorf("oldest message age alarm = %+v", a)
	}
	if a := byName["retry-rate"]; len(a.Queries) == 0 || a.Threshold != 5 {
		t.Errorf("retry rate alarm = %+v", a)
	}
	for _, n := range []string{"job-heartbeat-parity", "job-heartbeat-consistency", "job-heartbeat-mapping-review", "graph-subscriptions"} {
		if byName[n].TreatMissingData != MissingBreaching {
			t.Errorf("%s: missing data is %s, want breaching", n, byName[n].TreatMissingData)
		}
	}
	// The drift alarm's threshold is the SLA of config/reconcile.yaml.
	s, err := reconcile.ParseConfig("config/reconcile.yaml", config.ReconcileYAML)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := byName["drift-above-sla"].Threshold, s.SLAs[reconcile.JobParity]["drift_percent"]; got != want {
		t.Errorf("drift-above-sla threshold %v, config/reconcile.yaml SLA %v: keep them equal", got, want)
	}
}
