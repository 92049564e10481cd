package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const realPolicy = "../../config/policy.yaml"

func mustLoad(t *testing.T, path string) *Policy {
	t.Helper()
	p, err := Load(path)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return p
}

func TestRealPolicy(t *testing.T) {
	p := mustLoad(t, realPolicy)
	data, _ := os.ReadFile(realPolicy)
	sum := sha256.Sum256(data)
	if want := "2026-11-01+" + hex.EncodeToString(sum[:])[:12]; p.Version() != want {
		t.Errorf("Version() = %q, want %q", p.Version(), want)
	}
	if p.DeclaredVersion() != "2026-11-01" {
		t.Errorf("DeclaredVersion() = %q", p.DeclaredVersion())
	}

	crm, ok := p.Source("crm")
	if !ok || crm.Authority != 100 || !cmp.Equal(crm.OverrideRoles, []string{"admin", "revops"}) {
		t.Errorf("Source(crm) = %+v, %v", crm, ok)
	}
	if _, ok := p.Source("nope"); ok {
		t.Error("Source(nope) found")
	}
	if got := len(p.Sources()); got != 9 {
		t.Errorf("len(Sources()) = %d, want 9", got)
	}
	if !cmp.Equal(p.Entities(), []string{"account", "contact", "deal"}) {
		t.Errorf("Entities() = %v", p.Entities())
	}

	groups := []struct {
		entity, field, group string
		rule                 Rule
		owner                string
	}{
		{"contact", "email", "identity", OwnerWinsUnlessBlank, "crm"},
		{"contact", "job_title", "firmographic", Precedence, "crm"},
		{"contact", "utm_content", "attribution", FirstTouch, ""},
		{"contact", "last_call_status", "engagement", Latest, ""},
		{"account", "domain", "profile", OwnerWinsUnlessBlank, "crm"},
		{"deal", "stage", "pipeline", OwnerOnly, "crm"},
	}
	for _, tt := range groups {
		g, ok := p.GroupOf(tt.entity, tt.field)
		if !ok || g.Name != tt.group || g.Rule != tt.rule || g.Owner != tt.owner || g.Entity != tt.entity {
			t.Errorf("GroupOf(%s, %s) = %+v, %v", tt.entity, tt.field, g, ok)
		}
	}
	for _, miss := range [][2]string{{"contact", "stage"}, {"lead", "email"}, {"deal", ""}} {
		if g, ok := p.GroupOf(miss[0], miss[1]); ok {
			t.Errorf("GroupOf(%s, %s) = %+v, want none", miss[0], miss[1], g)
		}
	}

	day := 24 * time.Hour
	windows := []struct {
		source  string
		d       time.Duration
		forever bool
	}{
		{"typeform", 0, true},
		{"meta-leads", 0, true},
		{"mailgun", 7 * day, false},
		{"twilio", 30 * day, false},
		{"crm", 30 * day, false},     // defaults
		{"unknown", 30 * day, false}, // defaults
	}
	for _, tt := range windows {
		d, f := p.DedupWindow(tt.source)
		if d != tt.d || f != tt.forever {
			t.Errorf("DedupWindow(%s) = %v, %v; want %v, %v", tt.source, d, f, tt.d, tt.forever)
		}
	}

	for src, want := range map[string]int{"crm": 100, "reconcile": 60, "mailgun": 20, "unknown": 0} {
		if got := p.Authority(src); got != want {
			t.Errorf("Authority(%s) = %d, want %d", src, got, want)
		}
	}

	overrides := []struct {
		source, role string
		want         bool
	}{
		{"crm", "admin", true},
		{"crm", "revops", true},
		{"crm", "rep", false},
		{"crm", "", false},
		{"typeform", "admin", false},
		{"unknown", "admin", false},
	}
	for _, tt := range overrides {
		if got := p.CanOverride(tt.source, tt.role); got != tt.want {
			t.Errorf("CanOverride(%s, %s) = %v", tt.source, tt.role, got)
		}
	}
}

func TestVersionChangesWithContent(t *testing.T) {
	data, err := os.ReadFile(realPolicy)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Parse("a", data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("b", append(append([]byte{}, data...), []byte("# edited\n")...))
	if err != nil {
		t.Fatal(err)
	}
	if a.Version() == b.Version() || a.DeclaredVersion() != b.DeclaredVersion() {
		t.Errorf("versions %q, %q: want same declared, different hash", a.Version(), b.Version())
	}
}

// TestBriefExample reproduces the error shape the design promises, on the real file.
func TestBriefExample(t *testing.T) {
	data, err := os.ReadFile(realPolicy)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(data), "owner: crm, rule: owner_wins_unless_blank }", "owner: crm, rule: owner_win }", 1)
	_, err = Parse("config/policy.yaml", []byte(broken))
	want := `config/policy.yaml:16: entities.contact.groups.identity.rule: unknown rule "owner_win" (want one of owner_only, owner_wins_unless_blank, first_touch, latest, precedence)`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

// TestBrokenFile checks that every seeded mistake in testdata/broken.yaml is reported, with
// its line, in one error.
func TestBrokenFile(t *testing.T) {
	const name = "testdata/broken.yaml"
	p, err := Load(name)
	if p != nil || err == nil {
		t.Fatalf("Load = %v, %v; want error", p, err)
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %T is not Errors", err)
	}
	want := []string{
		`testdata/broken.yaml:4: sources.typeform.authority: negative authority -4 (want 0 or more)`,
		`testdata/broken.yaml:5: sources.twilio.authorty: unknown key "authorty" (want one of authority, override_roles, dedup_window)`,
		`testdata/broken.yaml:5: sources.twilio.authority: required`,
		`testdata/broken.yaml:5: sources.twilio.dedup_window: bad dedup window "30x" (want a Go duration like 36h, days like 7d, or forever)`,
		`testdata/broken.yaml:6: sources.mailgun.override_roles: only the crm source may have override roles`,
		`testdata/broken.yaml:11: entities.contact.groups.identity.rule: unknown rule "owner_win" (want one of owner_only, owner_wins_unless_blank, first_touch, latest, precedence)`,
		`testdata/broken.yaml:11: entities.contact.groups.identity.owner: unknown source "crmm" (declared: crm, mailgun, twilio, typeform)`,
		`testdata/broken.yaml:12: entities.contact.groups.attribution.fields: field "email" is already in group identity (line 11)`,
		`testdata/broken.yaml:13: entities.contact.groups.engagement.ownr: unknown key "ownr" (want one of fields, owner, rule)`,
		`testdata/broken.yaml:16: entities.deal.groups.pipeline.owner: required for rule owner_only`,
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	base := func(sources, entities string) string {
		return "version: v1\nsources:\n" + sources + "entities:\n" + entities
	}
	okSources := "  crm: { authority: 10, override_roles: [admin] }\n  web: { authority: 1 }\n"
	okEntities := "  contact:\n    groups:\n      g: { fields: [email], rule: latest }\n"
	tests := []struct {
		name string
		yaml string
		want []string // substrings, one per expected error, in order
	}{
		{"valid", base(okSources, okEntities), nil},
		{"missing version", "sources:\n" + okSources + "entities:\n" + okEntities,
			[]string{"p.yaml:1: version: required"}},
		{"empty version", "version: ''\nsources:\n" + okSources + "entities:\n" + okEntities,
			[]string{"p.yaml:1: version: must not be empty"}},
		{"unknown top-level key", "verison: v1\nversion: v1\nsources:\n" + okSources + "entities:\n" + okEntities,
			[]string{`p.yaml:1: verison: unknown key "verison"`}},
		{"duplicate key", "version: v1\nversion: v2\nsources:\n" + okSources + "entities:\n" + okEntities,
			[]string{"p.yaml:2: version: duplicate key (first on line 1)"}},
		{"missing sources and entities", "version: v1\n",
			[]string{"p.yaml:1: sources: required", "p.yaml:1: entities: required"}},
		{"no crm source", base("  web: { authority: 1 }\n", okEntities),
			[]string{`p.yaml:2: sources: the system of record "crm" must be declared`}},
		{"negative authority", base(okSources+"  bad: { authority: -1 }\n", okEntities),
			[]string{"p.yaml:5: sources.bad.authority: negative authority -1"}},
		{"non-integer authority", base(okSources+"  bad: { authority: high }\n", okEntities),
			[]string{`p.yaml:5: sources.bad.authority: want an integer, got "high"`}},
		{"empty source", base(okSources+"  bad:\n", okEntities),
			[]string{"p.yaml:5: sources.bad: want a mapping, got nothing"}},
		{"override roles not a list", base("  crm: { authority: 1, override_roles: admin }\n", okEntities),
			[]string{`p.yaml:3: sources.crm.override_roles: want a list, got "admin"`}},
		{"duplicate role", base("  crm: { authority: 1, override_roles: [admin, admin] }\n", okEntities),
			[]string{`p.yaml:3: sources.crm.override_roles[1]: "admin" listed twice`}},
		{"bad windows", base(okSources+"  a: { authority: 1, dedup_window: 0d }\n  b: { authority: 1, dedup_window: -5h }\n  c: { authority: 1, dedup_window: always }\n", okEntities),
			[]string{`p.yaml:5: sources.a.dedup_window: bad dedup window "0d"`, `p.yaml:6: sources.b.dedup_window: bad dedup window "-5h" (must be positive)`, `p.yaml:7: sources.c.dedup_window: bad dedup window "always"`}},
		{"bad default window", "version: v1\ndefaults: { dedup_window: soon, extra: 1 }\nsources:\n" + okSources + "entities:\n" + okEntities,
			[]string{`p.yaml:2: defaults.dedup_window: bad dedup window "soon"`, `p.yaml:2: defaults.extra: unknown key "extra"`}},
		{"unknown owner", base(okSources, "  contact:\n    groups:\n      g: { fields: [email], owner: hubspot, rule: owner_only }\n"),
			[]string{`p.yaml:8: entities.contact.groups.g.owner: unknown source "hubspot" (declared: crm, web)`}},
		{"owner required", base(okSources, "  contact:\n    groups:\n      g: { fields: [email], rule: owner_wins_unless_blank }\n"),
			[]string{"p.yaml:8: entities.contact.groups.g.owner: required for rule owner_wins_unless_blank"}},
		{"rule required", base(okSources, "  contact:\n    groups:\n      g: { fields: [email] }\n"),
			[]string{"p.yaml:8: entities.contact.groups.g.rule: required"}},
		{"field in two groups", base(okSources, "  contact:\n    groups:\n      a: { fields: [email], rule: latest }\n      b:\n        rule: latest\n        fields:\n          - phone\n          - email\n"),
			[]string{`p.yaml:13: entities.contact.groups.b.fields: field "email" is already in group a (line 8)`}},
		{"same field in two entities is fine", base(okSources, "  contact:\n    groups:\n      a: { fields: [name], rule: latest }\n  deal:\n    groups:\n      a: { fields: [name], rule: latest }\n"), nil},
		{"empty fields", base(okSources, "  contact:\n    groups:\n      g: { fields: [], rule: latest }\n"),
			[]string{"p.yaml:8: entities.contact.groups.g.fields: at least one field required"}},
		{"entity typo key", base(okSources, "  contact:\n    grups:\n      g: { fields: [email], rule: latest }\n"),
			[]string{`p.yaml:7: entities.contact.grups: unknown key "grups" (want one of groups)`, "p.yaml:6: entities.contact.groups: required"}},
		{"yaml syntax", "version: v1\nsources: [\n", []string{"p.yaml:2: yaml: "}},
		{"empty document", "", []string{"p.yaml: empty policy"}},
		{"not a mapping", "- a\n", []string{"p.yaml:1: want a mapping, got a list"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(tt.yaml))
			if len(tt.want) == 0 {
				if err != nil || p == nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Parse succeeded, want errors")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not Errors", err)
			}
			if len(es) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseWindow(t *testing.T) {
	tests := []struct {
		in      string
		d       time.Duration
		forever bool
		ok      bool
	}{
		{"forever", 0, true, true},
		{"7d", 7 * 24 * time.Hour, false, true},
		{"36h", 36 * time.Hour, false, true},
		{"90m", 90 * time.Minute, false, true},
		{"0d", 0, false, false},
		{"0s", 0, false, false},
		{"-1h", 0, false, false},
		{"7 days", 0, false, false},
		{"", 0, false, false},
	}
	for _, tt := range tests {
		d, f, err := ParseWindow(tt.in)
		if (err == nil) != tt.ok || d != tt.d || f != tt.forever {
			t.Errorf("ParseWindow(%q) = %v, %v, %v", tt.in, d, f, err)
		}
	}
}

func TestRules(t *testing.T) {
	for _, r := range Rules() {
		if !r.Valid() {
			t.Errorf("%s not valid", r)
		}
	}
	if Rule("owner_win").Valid() {
		t.Error("owner_win valid")
	}
	if !OwnerOnly.NeedsOwner() || Latest.NeedsOwner() || !Precedence.OrderIndependent() || OwnerWinsUnlessBlank.OrderIndependent() {
		t.Error("rule predicates wrong")
	}
}

// A group marked custom: true declares custom fields; other groups' fields are not custom, and
// a custom flag that is not a boolean is reported with file:line.
func TestCustomFields(t *testing.T) {
	p := mustLoad(t, realPolicy)
	if !p.IsCustom("contact", "marketing_consent") || p.IsCustom("contact", "email") || p.IsCustom("contact", "nope") {
		t.Error("IsCustom: marketing_consent should be custom, email and nope not")
	}
	if got := p.CustomFields("contact"); !cmp.Equal(got, []string{"lead_tier", "marketing_consent", "partner_id", "preferred_demo_date", "product_interest"}) {
		t.Errorf("CustomFields(contact) = %v", got)
	}
	if got := p.CustomFields("deal"); got != nil {
		t.Errorf("CustomFields(deal) = %v", got)
	}
	bad := "version: v1\nsources:\n  crm: { authority: 1 }\nentities:\n  contact:\n    groups:\n      c: { fields: [x], rule: latest, custom: maybe }\n"
	_, err := Parse("p.yaml", []byte(bad))
	if err == nil || !strings.Contains(err.Error(), "p.yaml:7: entities.contact.groups.c.custom: want true or false") {
		t.Errorf("Parse(custom: maybe) = %v", err)
	}
}
