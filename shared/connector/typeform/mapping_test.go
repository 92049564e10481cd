package typeform

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/policy"
)

const uuidFixture = "../../../events/payloads/typeform-uuid-refs.json"

func realPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func parseWith(t *testing.T, c *Connector, body []byte) canonical.Event {
	t.Helper()
	got, err := c.Parse(&connector.Request{Body: body, ReceivedAt: time.Unix(1743585000, 0)}, connector.Secret{})
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if err := got.Events[0].Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	return got.Events[0]
}

// A response whose refs are Typeform's default UUIDs fills name, email, phone and company from
// the answer types and question titles alone (no mapping); everything else is unmapped.
func TestParseUUIDRefsByDefaults(t *testing.T) {
	body, err := os.ReadFile(uuidFixture)
	if err != nil {
		t.Fatal(err)
	}
	ev := parseWith(t, NewWithMapping(nil), body)
	want := map[string]string{
		"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com", "phone": "+14155550177",
		"company": "Eckert-Mauchly Computer Corp", "utm_source": "newsletter", "lead_source": "typeform",
		"last_activity_at": "2025-04-02T09:17:48Z",
	}
	if diff := cmp.Diff(want, ev.Fields["contact"]); diff != "" {
		t.Errorf("contact (-want +got):\n%s", diff)
	}
	if ev.Subject.Name != "Grace Hopper" || ev.GroupKey != "email:grace@example.com" || ev.Fields["account"]["name"] != "Eckert-Mauchly Computer Corp" {
		t.Errorf("subject %+v, group %s, account %v", ev.Subject, ev.GroupKey, ev.Fields["account"])
	}
	wantUnmapped := []string{
		"form_response.answers[ref=5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9]", // consent boolean
		"form_response.answers[ref=a9b8c7d6-e5f4-4a3b-9c2d-1e0f9a8b7c6d]", // date
		"form_response.answers[ref=d1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f5a]", // choice
		"form_response.answers[ref=f0e1d2c3-b4a5-4968-8776-a5b4c3d2e1f0]", // choices
		"form_response.calculated.score",
		"form_response.hidden.gclid",
		"form_response.hidden.partner",
		"form_response.variables[key=score]",
		"form_response.variables[key=segment]",
		"form_response.variables[key=tier]",
	}
	if diff := cmp.Diff(wantUnmapped, ev.Unmapped); diff != "" {
		t.Errorf("unmapped (-want +got):\n%s", diff)
	}
}

// The embedded mapping maps the fixture's consent boolean, choice, date, partner hidden field
// and tier variable to custom fields; the score, the other variables, gclid and the
// multiple-choice answer stay unmapped.
func TestParseUUIDRefsWithEmbeddedMapping(t *testing.T) {
	body, err := os.ReadFile(uuidFixture)
	if err != nil {
		t.Fatal(err)
	}
	ev := parseWith(t, New(), body)
	c := ev.Fields["contact"]
	for field, want := range map[string]string{
		"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com", "phone": "+14155550177",
		"company": "Eckert-Mauchly Computer Corp", "marketing_consent": "true", "product_interest": "Sync API",
		"preferred_demo_date": "2025-04-10", "partner_id": "p-204", "lead_tier": "gold",
	} {
		if c[field] != want {
			t.Errorf("contact.%s = %q, want %q", field, c[field], want)
		}
	}
	wantUnmapped := []string{
		"form_response.answers[ref=f0e1d2c3-b4a5-4968-8776-a5b4c3d2e1f0]",
		"form_response.calculated.score",
		"form_response.hidden.gclid",
		"form_response.variables[key=score]",
		"form_response.variables[key=segment]",
	}
	if diff := cmp.Diff(wantUnmapped, ev.Unmapped); diff != "" {
		t.Errorf("unmapped (-want +got):\n%s", diff)
	}
}

// A consent boolean (by ref), a choice and several choices (by title, any case) and the score
// map when a mapping names them; a form's own entry beats the all-forms entry.
func TestMappingConsentAndChoice(t *testing.T) {
	const yml = `version: t1
forms:
  "*":
    answers:
      - { ref: consent, to: job_title }
  F:
    answers:
      - { ref: Consent, to: custom.marketing_consent }
      - { title: "  which PRODUCT are you interested in? ", to: custom.product_interest }
      - { title: "Tools", to: custom.partner_id }
    score: custom.lead_tier
`
	m, err := ParseMapping("t.yaml", []byte(yml), realPolicy(t))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"event_id":"E","event_type":"form_response","form_response":{"form_id":"F","token":"T","submitted_at":"2025-04-02T09:17:48Z",
	  "calculated":{"score":12},
	  "definition":{"id":"F","fields":[{"id":"a","ref":"consent","type":"yes_no","title":"Consent?"},
	    {"id":"b","ref":"0c1d","type":"multiple_choice","title":"Which product are you interested in?"},
	    {"id":"c","ref":"9f8e","type":"multiple_choice","title":"Tools"}]},
	  "answers":[{"type":"boolean","boolean":false,"field":{"id":"a","type":"yes_no","ref":"consent"}},
	    {"type":"choice","choice":{"label":"Sync API"},"field":{"id":"b","type":"multiple_choice","ref":"0c1d"}},
	    {"type":"choices","choices":{"labels":["A","B"],"other":"C"},"field":{"id":"c","type":"multiple_choice","ref":"9f8e"}}]}}`
	ev := parseWith(t, NewWithMapping(m), []byte(body))
	want := map[string]string{"marketing_consent": "false", "product_interest": "Sync API", "partner_id": "A; B; C", "lead_tier": "12",
		"lead_source": "typeform", "last_activity_at": "2025-04-02T09:17:48Z"}
	if diff := cmp.Diff(want, ev.Fields["contact"]); diff != "" || ev.Unmapped != nil {
		t.Errorf("contact (-want +got):\n%s\nunmapped %v", diff, ev.Unmapped)
	}
	if m.Version() != "t1+"+m.Version()[3:] || len(m.Version()) != 3+12 {
		t.Errorf("Version() = %q", m.Version())
	}
}

func TestTitleField(t *testing.T) {
	for title, want := range map[string]string{
		"What's your first name?": "first_name", "First Name": "first_name", "Given name": "first_name",
		"And your last name?": "last_name", "SURNAME": "last_name", "Family name": "last_name",
		"What is your name?": fullName, "Your full name": fullName, "Name": fullName,
		"Company": "company", "Company name": "company", "Which organisation are you with?": "company", "Organization": "company",
		"Company website": "", "Company size": "", "Your work email": "", "Anything else?": "", "": "",
	} {
		if got := TitleField(title); got != want {
			t.Errorf("TitleField(%q) = %q, want %q", title, got, want)
		}
	}
}

// A full-name question fills first_name with the first word and last_name with the rest.
func TestFullNameTitle(t *testing.T) {
	body := `{"event_id":"E","event_type":"form_response","form_response":{"token":"T","submitted_at":"2025-04-02T09:17:48Z",
	  "definition":{"fields":[{"id":"n","ref":"6a1f","type":"short_text","title":"What is your name?"}]},
	  "answers":[{"type":"text","text":" Ada  King Lovelace ","field":{"id":"n","type":"short_text","ref":"6a1f"}}]}}`
	ev := parseWith(t, NewWithMapping(nil), []byte(body))
	if c := ev.Fields["contact"]; c["first_name"] != "Ada" || c["last_name"] != "King Lovelace" || ev.Subject.Name != "Ada King Lovelace" {
		t.Errorf("contact %v, subject %+v", c, ev.Subject)
	}
}

// Every problem of a mapping file is reported with file:line and field path.
func TestParseMappingErrors(t *testing.T) {
	const yml = `forms:
  F:
    answers:
      - { ref: a, to: custom.nope }
      - { ref: b, title: B, to: email }
      - { title: C }
      - { ref: d, to: favourite_color }
      - { ref: e, to: marketing_consent }
    hidden:
      h: [x]
    varibles: {}
  G: nothing
`
	_, err := ParseMapping("config/typeform.yaml", []byte(yml), realPolicy(t))
	var es policy.Errors
	if !errors.As(err, &es) {
		t.Fatalf("ParseMapping() = %v, want policy.Errors", err)
	}
	want := []string{
		`config/typeform.yaml:1: version: required`,
		`config/typeform.yaml:4: forms.F.answers[0].to: "custom.nope" is not a custom field of the policy`,
		`config/typeform.yaml:5: forms.F.answers[1]: want exactly one of ref or title`,
		`config/typeform.yaml:6: forms.F.answers[2].to: required`,
		`config/typeform.yaml:7: forms.F.answers[3].to: unknown field "favourite_color"`,
		`config/typeform.yaml:8: forms.F.answers[4].to: "marketing_consent" is a custom field: write it custom.marketing_consent`,
		`config/typeform.yaml:10: forms.F.hidden.h: want a value, got a list`,
		`config/typeform.yaml:11: forms.F.varibles: unknown key "varibles"`,
		`config/typeform.yaml:12: forms.G: want a mapping, got "nothing"`,
	}
	if len(es) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i := range min(len(es), len(want)) {
		if !strings.HasPrefix(es[i].Error(), want[i]) {
			t.Errorf("error %d = %q, want prefix %q", i, es[i].Error(), want[i])
		}
	}
	if _, err := ParseMapping("m.yaml", []byte("version: 1\nforms: {F: {answers: [{ref: a, to: email}\n"), realPolicy(t)); err == nil ||
		!strings.HasPrefix(err.Error(), "m.yaml:") {
		t.Errorf("broken YAML: %v", err)
	}
}

// The embedded mapping is config/typeform.yaml and valid against the embedded policy.
func TestDefaultMapping(t *testing.T) {
	m, err := DefaultMapping()
	if err != nil {
		t.Fatalf("embedded mapping is invalid:\n%v", err)
	}
	if !strings.HasPrefix(m.Version(), "2026-12-01+") {
		t.Errorf("Version() = %q", m.Version())
	}
}
