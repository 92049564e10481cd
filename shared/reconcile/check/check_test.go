package check

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/store"
)

func TestCompareFields(t *testing.T) {
	f := func(v, src string) store.Field { return store.Field{Value: v, Source: src, EventKey: src + ":1"} }
	for _, tc := range []struct {
		name            string
		stored, rebuilt map[string]store.Field
		want            []string // field:detail prefix
	}{
		{"equal", map[string]store.Field{"a": f("1", "x")}, map[string]store.Field{"a": f("1", "x")}, nil},
		{"provenance only", map[string]store.Field{"a": f("1", "x")}, map[string]store.Field{"a": f("1", "y")}, nil},
		{"value edited", map[string]store.Field{"a": f("2", "x")}, map[string]store.Field{"a": f("1", "x")}, []string{"a:stored by"}},
		{"extra stored", map[string]store.Field{"a": f("1", "x"), "b": f("3", "")}, map[string]store.Field{"a": f("1", "x")}, []string{"b:stored, but"}},
		{"missing", map[string]store.Field{}, map[string]store.Field{"a": f("1", "x")}, []string{"a:the ledger"}},
		{"lock", map[string]store.Field{"a": {Value: "1", LockedBy: "ops"}}, map[string]store.Field{"a": {Value: "1"}}, []string{"a:lock differs"}},
		{"sorted", map[string]store.Field{"z": f("1", ""), "b": f("1", "")}, map[string]store.Field{}, []string{"b:stored", "z:stored"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CompareFields("c1", tc.stored, tc.rebuilt)
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %v", got, tc.want)
			}
			for i, w := range tc.want {
				field, prefix, _ := strings.Cut(w, ":")
				if got[i].Field != field || !strings.HasPrefix(got[i].Detail, prefix) || got[i].Kind != KindFieldDrift ||
					got[i].ID != "c1" || got[i].Repair != "crmsync rebuild --contact c1" {
					t.Errorf("finding %d = %+v, want %s", i, got[i], w)
				}
			}
		})
	}
}

func TestEquivalent(t *testing.T) {
	call := func(key, status string) *canonical.Event {
		return &canonical.Event{Key: key, Source: "twilio", Kind: canonical.KindCallStatus,
			Activity: &canonical.Activity{ID: "call:CA1", Status: status}}
	}
	for _, tc := range []struct {
		name              string
		listed, delivered *canonical.Event
		want              bool
	}{
		{"same key", call("twilio:call:CA1:completed", "completed"), call("twilio:call:CA1:completed", "completed"), true},
		{"sequence key, same terminal status", call("twilio:call:CA1:completed", "completed"), call("twilio:call:CA1:3", "completed"), true},
		{"status case", call("k1", "completed"), call("k2", "Completed "), true},
		{"earlier status only", call("twilio:call:CA1:completed", "completed"), call("twilio:call:CA1:1", "ringing"), false},
		{"other call", call("k1", "completed"), &canonical.Event{Key: "k2", Source: "twilio", Kind: canonical.KindCallStatus, Activity: &canonical.Activity{ID: "call:CA2", Status: "completed"}}, false},
		{"other source", call("k1", "completed"), &canonical.Event{Key: "k2", Source: "generic", Kind: canonical.KindCallStatus, Activity: &canonical.Activity{ID: "call:CA1", Status: "completed"}}, false},
		{"no activity", &canonical.Event{Key: "k1", Source: "typeform", Kind: canonical.KindLeadSubmitted}, &canonical.Event{Key: "k2", Source: "typeform", Kind: canonical.KindLeadSubmitted}, false},
		{"nil", call("k1", "completed"), nil, false},
	} {
		if got := Equivalent(tc.listed, tc.delivered); got != tc.want {
			t.Errorf("%s: Equivalent = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSharedIdentities(t *testing.T) {
	rec := &store.Record{ID: "c1", Identities: []string{"email:a@x.com", "email:b@x.com", "phone:+14155550100"}}
	got := SharedIdentities(rec, map[string]string{"email:a@x.com": "c1", "email:b@x.com": "c2"})
	if len(got) != 2 || got[0].Field != "email:b@x.com" || got[0].Expected != "c2" || got[1].Field != "phone:+14155550100" ||
		!strings.Contains(got[1].Detail, "no claim") {
		t.Errorf("findings = %+v", got)
	}
}

func TestNoAttributionAndPolicyFields(t *testing.T) {
	pol, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	fields := AttributionFields(pol)
	if !strings.Contains(strings.Join(fields, ","), "lead_source") || !strings.Contains(strings.Join(fields, ","), "utm_source") {
		t.Fatalf("attribution fields = %v", fields)
	}
	for _, tc := range []struct {
		fields map[string]store.Field
		want   bool
	}{
		{map[string]store.Field{"email": {Value: "a@x.com"}}, true},
		{map[string]store.Field{"utm_source": {Value: " "}}, true},
		{map[string]store.Field{"lead_source": {Value: "typeform"}}, false},
	} {
		if got := NoAttribution(&store.Record{ID: "c1", Fields: tc.fields}, fields) != nil; got != tc.want {
			t.Errorf("NoAttribution(%v) = %v, want %v", tc.fields, got, tc.want)
		}
	}
}

func TestDealAccountMismatchAndStuckCalls(t *testing.T) {
	now := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	act := func(typ, status, acct, deal string, began time.Time) *store.ActivityItem {
		return &store.ActivityItem{ActivityID: "a1", Type: typ, Status: status, AccountID: acct, DealID: deal, OccurredAt: store.FormatTime(began)}
	}
	for _, tc := range []struct {
		name        string
		a           *store.ActivityItem
		dealAccount string
		want        bool
	}{
		{"same account", act("email", "sent", "A", "D", now), "A", false},
		{"other account", act("email", "sent", "A", "D", now), "B", true},
		{"no deal", act("email", "sent", "A", "", now), "B", false},
		{"deal without account", act("email", "sent", "A", "D", now), "", false},
	} {
		if got := DealAccountMismatch(tc.a, tc.dealAccount) != nil; got != tc.want {
			t.Errorf("%s: mismatch = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		a    *store.ActivityItem
		want bool
	}{
		{"ringing for two days", act("call", "ringing", "", "", now.Add(-48*time.Hour)), true},
		{"ringing for an hour", act("call", "ringing", "", "", now.Add(-time.Hour)), false},
		{"completed long ago", act("call", "completed", "", "", now.Add(-48*time.Hour)), false},
		{"no-answer", act("call", "no-answer", "", "", now.Add(-48*time.Hour)), false},
		{"a meeting", act("meeting", "scheduled", "", "", now.Add(-48*time.Hour)), false},
	} {
		if got := CallNotTerminal(tc.a, now, 24*time.Hour) != nil; got != tc.want {
			t.Errorf("%s: not terminal = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBreachesAndDrift(t *testing.T) {
	if got := DriftPercent(1, 1000); got != 0.1 {
		t.Errorf("DriftPercent(1, 1000) = %v", got)
	}
	if got := DriftPercent(3, 0); got != 0 {
		t.Errorf("DriftPercent(3, 0) = %v", got)
	}
	limits := map[string]float64{"drift_percent": 0.1, "missing_events": 0, "source_errors": 0}
	for _, tc := range []struct {
		measures map[string]float64
		want     []string
	}{
		{map[string]float64{"drift_percent": 0.1, "missing_events": 0}, nil},
		{map[string]float64{"drift_percent": 0.1001}, []string{"drift_percent=0.1001>0.1"}},
		{map[string]float64{"missing_events": 2, "source_errors": 1, "unjudged": 9}, []string{"missing_events=2>0", "source_errors=1>0"}},
	} {
		if diff := cmp.Diff(tc.want, Breaches(limits, tc.measures)); diff != "" {
			t.Errorf("Breaches(%v) (-want +got):\n%s", tc.measures, diff)
		}
	}
}

func TestOverdue(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tc := range []struct {
		name        string
		last, since time.Time
		want        bool
	}{
		{"ran yesterday", now.Add(-day), time.Time{}, false},
		{"ran 25h ago, 6h grace", now.Add(-25 * time.Hour), time.Time{}, false},
		{"ran 31h ago", now.Add(-31 * time.Hour), time.Time{}, true},
		{"never ran, deployed an hour ago", time.Time{}, now.Add(-time.Hour), false},
		{"never ran, deployed two days ago", time.Time{}, now.Add(-2 * day), true},
		{"never ran, nothing known", time.Time{}, time.Time{}, false},
	} {
		if got := Overdue(tc.last, tc.since, now, day, 6*time.Hour); got != tc.want {
			t.Errorf("%s: overdue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestReview(t *testing.T) {
	pol, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReview(pol)
	r.Add("typeform", "typeform:1", "typeform/1", "v1", []string{"form_response.hidden.color"}, map[string]map[string]string{"contact": {"email": "a@x.com", "utm_source": "x"}})
	r.Add("typeform", "typeform:2", "typeform/1", "v2", []string{"form_response.hidden.color", "form_response.answers[ref=pet]"}, nil)
	r.Add("twilio", "twilio:call:1:completed", "twilio/1", "v2", nil, map[string]map[string]string{"contact": {"phone": "+1"}})
	var unmapped, versions []Finding
	unseen := map[string]bool{}
	nUnseen := 0
	for _, f := range r.Findings() {
		switch f.Kind {
		case KindUnmappedField:
			unmapped = append(unmapped, f)
		case KindVersions:
			versions = append(versions, f)
		case KindPolicyFieldUnseen:
			unseen[f.Field] = true
			nUnseen++
		}
	}
	if len(unmapped) != 2 || unmapped[1].Field != "form_response.hidden.color" || unmapped[1].Count != 2 || unmapped[1].Example != "typeform:1" {
		t.Errorf("unmapped = %+v", unmapped)
	}
	if len(versions) != 2 || versions[1].ID != "typeform" || versions[1].Stored != "typeform/1 (2)" || versions[1].Expected != "v1 (1), v2 (1)" {
		t.Errorf("versions = %+v", versions)
	}
	if unseen["email"] || unseen["phone"] || unseen["utm_source"] || !unseen["first_name"] || !unseen["stage"] {
		t.Errorf("unseen = %v", unseen)
	}
	c := r.Counts()
	if c["events_reviewed"] != 3 || c["unmapped_fields"] != 2 || c["connectors_seen"] != 2 || c["policy_fields_never_seen"] != nUnseen {
		t.Errorf("counts = %v", c)
	}
}

// The package stays pure: no AWS SDK import, directly or through its dependencies.
func TestNoAWSImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/aws/") {
			t.Errorf("check depends on %s", dep)
		}
	}
}
