package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/crmsync/crmsync/shared/connector/registry"
)

// runCLI runs the crmsync command tree in-process with args and returns what it printed.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

// crmsync runs a crmsync command against this local stack; the error carries its stderr.
func (s *testStack) crmsync(args ...string) (string, error) {
	s.t.Helper()
	out, errOut, err := runCLI(s.t, append([]string{"--api", s.publicBase()}, args...)...)
	if err != nil {
		return out, fmt.Errorf("crmsync %s: %w (stderr: %s)", strings.Join(args, " "), err, errOut)
	}
	return out, nil
}

// contact runs `contact get --json` with the query flags; an absent contact is (nil, nil).
func (s *testStack) contact(query ...string) (*contactDoc, error) {
	out, err := s.crmsync(append([]string{"contact", "get", "--json"}, query...)...)
	if err != nil {
		if strings.Contains(err.Error(), "no such contact") {
			return nil, nil
		}
		return nil, err
	}
	var d contactDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		return nil, fmt.Errorf("contact get --json printed no contact document: %v\n%s", err, out)
	}
	return &d, nil
}

// waitContact polls `contact get --json` until check passes (nil error) or the deadline: the
// worker's event source mapping is asynchronous.
func (s *testStack) waitContact(check func(*contactDoc) error, query ...string) *contactDoc {
	s.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		d, err := s.contact(query...)
		if err == nil {
			if d == nil {
				err = errors.New("no such contact yet")
			} else {
				err = check(d)
			}
		}
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(d, "", "  ")
			s.t.Fatalf("contact %v: %v\nlast document: %s\nstack logs (tail):\n%s", query, err, b, lastBytes(s.logs.String(), 4000))
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func (d *contactDoc) activity(id string) *timelineEntry {
	for i := range d.Timeline {
		if d.Timeline[i].ID == id {
			return &d.Timeline[i]
		}
	}
	return nil
}

func (d *contactDoc) activityOfType(typ, source string) *timelineEntry {
	for i := range d.Timeline {
		t := &d.Timeline[i]
		if t.Type == typ && hasString(t.Sources, source) {
			return t
		}
	}
	return nil
}

func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func hasString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// fieldFrom checks a field's value and that it was written by source.
func (d *contactDoc) fieldFrom(field, value, source string) error {
	f, ok := d.Contact.Fields[field]
	switch {
	case !ok:
		return fmt.Errorf("no field %s", field)
	case f.Value != value || f.Source != source:
		return fmt.Errorf("field %s = %q from %s, want %q from %s", field, f.Value, f.Source, value, source)
	}
	return nil
}

// sawEvent reports whether any field, activity update or audit entry came from an event of source.
func (d *contactDoc) sawEvent(source string) bool {
	for _, f := range d.Contact.Fields {
		if f.Source == source {
			return true
		}
	}
	for _, t := range d.Timeline {
		if hasString(t.Sources, source) {
			return true
		}
	}
	for _, a := range d.Audit {
		if a.Source == source {
			return true
		}
	}
	return false
}

func allOf(checks ...func() error) error {
	for _, c := range checks {
		if err := c(); err != nil {
			return err
		}
	}
	return nil
}

// Every connector's sample, posted over HTTP with the worker running, ends in a contact's record
// and/or timeline as `crmsync contact get --json` shows it, associated the right way.
func TestWorkerEveryConnectorSampleEndsInAContact(t *testing.T) {
	s := startStack(t, true)
	for _, name := range registry.Names() {
		if status, body := s.post(s.sample(name)); status != 200 && status != 202 {
			t.Fatalf("POST /webhooks/%s = %d %s", name, status, body)
		}
	}
	const callID = "call:CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7"
	const emailID = "email:by5pr11mb4180c3d2a1e0f9b8c7d6e5f4a3b2c1d0@by5pr11mb4180.namprd11.prod.outlook.com" // normalised Message-Id

	// Ada: the Typeform and generic leads, her Calendly meeting and her Twilio call.
	ada := s.waitContact(func(d *contactDoc) error {
		for _, src := range []string{"typeform", "generic", "calendly", "twilio"} {
			if !d.sawEvent(src) {
				return fmt.Errorf("nothing from %s yet", src)
			}
		}
		call := d.activity(callID)
		if call == nil || call.Status != "completed" {
			return fmt.Errorf("call %s not completed on the timeline yet", callID)
		}
		if d.activityOfType("meeting", "calendly") == nil {
			return errors.New("no Calendly meeting on the timeline yet")
		}
		return nil
	}, "--email", "ada@example.com")
	if err := allOf(
		func() error { return ada.fieldFrom("email", "ada@example.com", ada.Contact.Fields["email"].Source) },
		func() error {
			if f := ada.Contact.Fields["first_name"]; f.Value != "Ada" {
				return fmt.Errorf("first_name %+v", f)
			}
			return nil
		},
	); err != nil {
		t.Error(err)
	}
	if !hasString(ada.Contact.Identities, "phone:+14155550123") || !hasString(ada.Contact.Identities, "email:ada@example.com") {
		t.Errorf("Ada's identities = %v", ada.Contact.Identities)
	}
	call := ada.activity(callID)
	if c := call.Associations.Contact; c == nil || c.ID != ada.Contact.ID {
		t.Errorf("call association = %+v, want Ada %s", call.Associations, ada.Contact.ID)
	}
	meeting := ada.activityOfType("meeting", "calendly")
	if c := meeting.Associations.Contact; c == nil || c.ID != ada.Contact.ID || c.Method != "exact_email" || c.Via != "ada@example.com" {
		t.Errorf("Calendly meeting association = %+v, want Ada by exact_email ada@example.com", meeting.Associations.Contact)
	}
	// The same contact answers by phone and by id.
	for _, q := range [][]string{{"--phone", "+1 (415) 555-0123"}, {"--id", ada.Contact.ID}} {
		d, err := s.contact(q...)
		if err != nil || d == nil || d.Contact.ID != ada.Contact.ID {
			t.Errorf("contact get %v = %v, %v; want Ada %s", q, d, err, ada.Contact.ID)
		}
	}

	// Grace: the Meta lead (hydrated from the Graph API fake), the Graph email to her and the
	// Mailgun delivery event, attached to that email by Message-Id.
	grace := s.waitContact(func(d *contactDoc) error {
		if !d.sawEvent("meta-leads") {
			return errors.New("nothing from meta-leads yet")
		}
		e := d.activity(emailID)
		if e == nil {
			return fmt.Errorf("email %s not on the timeline yet", emailID)
		}
		if !hasString(e.Sources, "msgraph") || !hasString(e.Sources, "mailgun") {
			return fmt.Errorf("email sources = %v, want msgraph and mailgun", e.Sources)
		}
		return nil
	}, "--email", "grace@example.org")
	email := grace.activity(emailID)
	if c := email.Associations.Contact; c == nil || c.ID != grace.Contact.ID || c.Method != "exact_email" {
		t.Errorf("email association = %+v, want Grace by exact_email", email.Associations.Contact)
	}
	statuses := map[string]bool{}
	for _, u := range email.Updates {
		statuses[u.Source+":"+u.Status] = true
	}
	if !statuses["mailgun:delivered"] {
		t.Errorf("email updates %+v: no mailgun delivered update", email.Updates)
	}
	if f := grace.Contact.Fields["email"]; f.Value != "grace@example.org" {
		t.Errorf("Grace's email field = %+v", f)
	}

	// The human-readable form shows the same contact.
	out, err := s.crmsync("contact", "get", "--email", "ada@example.com")
	if err != nil || !strings.Contains(out, ada.Contact.ID) || !strings.Contains(out, callID) || !strings.Contains(out, "Audit (") {
		t.Errorf("contact get (text) = %v\n%s", err, out)
	}
}

// A Twilio call's status callbacks posted in reverse order end with the terminal status and its
// duration: the status never regresses.
func TestWorkerTwilioCallbacksInReverseOrder(t *testing.T) {
	s := startStack(t, true)
	const sid = "CA00000000000000000000000000reverse"
	callback := func(seq int, status string, extra url.Values) []byte {
		v := url.Values{"CallSid": {sid}, "AccountSid": {"ACdec0de00000000000000000000000001"}, "From": {"+14155550177"},
			"To": {"+14155550100"}, "Direction": {"inbound"}, "CallStatus": {status}, "SequenceNumber": {fmt.Sprint(seq)},
			"Timestamp": {time.Date(2025, 3, 11, 16, 5, seq, 0, time.UTC).Format(time.RFC1123Z)}, "ApiVersion": {"2010-04-01"},
			"CallbackSource": {"call-progress-events"}}
		for k, vs := range extra {
			v[k] = vs
		}
		return []byte(v.Encode())
	}
	// A lead gives the caller's phone a contact (calls alone create none).
	lead := fmt.Sprintf(`{"schema":"crmsync.generic/v1","type":"lead","occurred_at":"2025-03-11T14:00:00Z","external_id":"rev-1",` +
		`"person":{"emails":["linus@example.com"],"phones":["+14155550177"],"first_name":"Linus"}}`)
	if status, body := s.post(s.signed("generic", []byte(lead), "application/json")); status != 200 && status != 202 {
		t.Fatalf("lead: %d %s", status, body)
	}
	steps := []struct {
		seq    int
		status string
		extra  url.Values
	}{
		{3, "completed", url.Values{"CallDuration": {"312"}, "Duration": {"6"}}},
		{2, "in-progress", nil},
		{1, "ringing", nil},
		{0, "queued", nil},
	}
	for _, st := range steps {
		if status, body := s.post(s.signed("twilio", callback(st.seq, st.status, st.extra), "application/x-www-form-urlencoded")); status != 200 {
			t.Fatalf("callback %s: %d %s", st.status, status, body)
		}
	}
	d := s.waitContact(func(d *contactDoc) error {
		a := d.activity("call:" + sid)
		if a == nil {
			return errors.New("call not on the timeline yet")
		}
		if len(a.Updates) < len(steps) {
			return fmt.Errorf("%d of %d callbacks merged", len(a.Updates), len(steps))
		}
		return nil
	}, "--phone", "+14155550177")
	a := d.activity("call:" + sid)
	if a.Status != "completed" || a.Outcome != "completed" || a.DurationSec != 312 {
		t.Errorf("call after reverse-order callbacks: status %q outcome %q duration %d; want completed, completed, 312", a.Status, a.Outcome, a.DurationSec)
	}
	if c := a.Associations.Contact; c == nil || c.Method != "phone" || c.ID != d.Contact.ID {
		t.Errorf("call association = %+v, want the contact by phone", a.Associations.Contact)
	}
}

// A field locked through `crmsync crm set --lock` by a revops actor is not changed by a later lead
// proposing another value, and the audit says blocked_by_lock.
func TestCrmSetLockBlocksLaterLead(t *testing.T) {
	s := startStack(t, true)
	// Ada exists (Typeform lead with phone +14155550123).
	if status, body := s.post(s.sample("typeform")); status != 200 {
		t.Fatalf("typeform: %d %s", status, body)
	}
	s.waitContact(func(d *contactDoc) error { return d.fieldFrom("phone", "+14155550123", "typeform") }, "--email", "ada@example.com")

	out, err := s.crmsync("crm", "set", "--contact", "ada@example.com", "--field", "phone=+1 415 555 0199",
		"--actor", "alice@example.com", "--role", "revops", "--lock", "--change-id", "chg-lock-1")
	if err != nil || !strings.Contains(out, "crm:chg-lock-1") {
		t.Fatalf("crm set --lock: %v\n%s", err, out)
	}
	s.waitContact(func(d *contactDoc) error {
		f := d.Contact.Fields["phone"]
		if f.Value != "+14155550199" || f.Source != "crm" || f.LockedBy != "alice@example.com" {
			return fmt.Errorf("phone = %+v, want +14155550199 from crm locked by alice@example.com", f)
		}
		return nil
	}, "--email", "ada@example.com")

	// A later lead (generic, occurred after the lock) proposes another phone.
	lead := `{"schema":"crmsync.generic/v1","type":"lead","occurred_at":"2099-01-01T00:00:00Z","external_id":"after-lock-1",` +
		`"person":{"emails":["ada@example.com"],"phones":["+14155550111"],"first_name":"Ada"}}`
	if status, body := s.post(s.signed("generic", []byte(lead), "application/json")); status != 200 && status != 202 {
		t.Fatalf("later lead: %d %s", status, body)
	}
	d := s.waitContact(func(d *contactDoc) error {
		for _, a := range d.Audit {
			if a.Field == "phone" && a.Source == "generic" {
				return nil
			}
		}
		return errors.New("no audit entry for the later lead's phone yet")
	}, "--email", "ada@example.com")
	if f := d.Contact.Fields["phone"]; f.Value != "+14155550199" || f.LockedBy != "alice@example.com" {
		t.Errorf("locked phone changed by a later lead: %+v", f)
	}
	for _, a := range d.Audit {
		if a.Field == "phone" && a.Source == "generic" {
			if a.Decision != "blocked_by_lock" || a.After.Value != "+14155550199" {
				t.Errorf("audit of the later lead's phone = %+v, want blocked_by_lock leaving +14155550199", a)
			}
			if !strings.Contains(a.Reason, "alice@example.com") {
				t.Errorf("blocked_by_lock reason %q does not name who locked it", a.Reason)
			}
		}
	}
	var lockAudit bool
	for _, a := range d.Audit {
		if a.Field == "phone" && a.Source == "crm" && a.EventKey == "crm:chg-lock-1" && a.Decision == "applied" && a.Actor == "alice@example.com" {
			lockAudit = true
		}
	}
	if !lockAudit {
		t.Errorf("no applied audit entry for the crm lock change: %+v", d.Audit)
	}
}

// `crm set` refusals: bad input is answered 400 with a specific message and nothing is queued;
// an unsigned request never reaches the function.
func TestCrmSetRefusals(t *testing.T) {
	s := startStack(t, false)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--field", "shoe_size=44", "--role", "revops"}, `unknown field "shoe_size"`},
		{[]string{"--field", "phone=+14155550199", "--role", "Rev Ops!"}, `actor.role "Rev Ops!" is not valid`},
		{[]string{"--field", "phone=+14155550199", "--role", "sales", "--lock"}, `actor.role "sales" may not lock or unlock fields`},
		{[]string{"--field", "phone=not-a-phone", "--role", "revops"}, `fields.phone "not-a-phone" is not a phone number`},
	} {
		args := append([]string{"crm", "set", "--contact", "ada@example.com", "--actor", "alice@example.com"}, c.args...)
		_, err := s.crmsync(args...)
		if err == nil || !strings.Contains(err.Error(), "HTTP 400") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("crm set %v: error %v, want HTTP 400 with %q", c.args, err, c.want)
		}
	}
	// Missing change_id, straight to the route (signed).
	ref, err := resolveLocal(context.Background(), stackOptions{api: s.publicBase()}, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	status, body, err := signedRequest(context.Background(), ref, "POST", "/crm/changes",
		[]byte(`{"contact":{"email":"ada@example.com"},"actor":{"email":"alice@example.com","role":"revops"},"fields":{"phone":"+14155550199"}}`))
	if err != nil || status != 400 || !strings.Contains(string(body), "change_id is required") {
		t.Errorf("change without change_id = %d %s %v, want 400 change_id is required", status, body, err)
	}
	// Unsigned: API Gateway (and the local stack) refuse before the function runs.
	resp, err := httpPost(s.publicBase()+"/crm/changes", `{"change_id":"x"}`)
	if err != nil || resp != 403 {
		t.Errorf("unsigned POST /crm/changes = %d %v, want 403", resp, err)
	}
	if got := s.drain(); len(got) != 0 {
		t.Errorf("refused changes queued %v", keysOf(got))
	}
	// A good one is queued once, as crm:{change_id}, grouped by the contact's email.
	for i := 0; i < 2; i++ {
		if _, err := s.crmsync("crm", "set", "--contact", "Ada@Example.com", "--field", "phone=+14155550199", "--actor", "alice@example.com",
			"--role", "revops", "--change-id", "chg-ok-1"); err != nil {
			t.Fatal(err)
		}
	}
	got := s.drain()
	if len(got) != 1 || got[0].Key != "crm:chg-ok-1" || got[0].GroupKey != "email:ada@example.com" || got[0].Actor == nil ||
		got[0].Actor.Role != "revops" || got[0].Fields["contact"]["phone"] != "+14155550199" {
		t.Errorf("queued %+v, want one crm:chg-ok-1 in group email:ada@example.com", got)
	}
}

func httpPost(u, body string) (int, error) {
	resp, err := http.DefaultClient.Post(u, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// The broken policy's seeded mistakes are each reported with file, line and field.
func TestPolicyValidateBrokenReportsEachMistake(t *testing.T) {
	const file = "../../shared/policy/testdata/broken.yaml"
	out, _, err := runCLI(t, "policy", "validate", file)
	if err == nil {
		t.Fatalf("policy validate %s succeeded:\n%s", file, out)
	}
	// Each seeded mistake: its line and the field path it is reported under.
	want := []struct{ line, field string }{
		{"4", "sources.typeform.authority"},                  // negative authority
		{"5", "sources.twilio.authorty"},                     // misspelt key
		{"5", "sources.twilio.authority"},                    // ... so authority is missing
		{"5", "sources.twilio.dedup_window"},                 // bad window 30x
		{"6", "sources.mailgun.override_roles"},              // override roles outside crm
		{"11", "entities.contact.groups.identity.rule"},      // unknown rule
		{"11", "entities.contact.groups.identity.owner"},     // unknown source
		{"12", "entities.contact.groups.attribution.fields"}, // field in two groups
		{"13", "entities.contact.groups.engagement.ownr"},    // misspelt key
		{"16", "entities.deal.groups.pipeline.owner"},        // owner_only without owner
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want) {
		t.Errorf("%d problems reported, want %d:\n%s", len(lines), len(want), out)
	}
	for _, w := range want {
		prefix := file + ":" + w.line + ": " + w.field + ": "
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) && len(l) > len(prefix) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem reported as %q...; got:\n%s", prefix, out)
		}
	}
	if !strings.Contains(err.Error(), "problem(s)") {
		t.Errorf("error %v does not count the problems", err)
	}
}

// The lock role comes from IAM, not from the body: the local stack reports a request signed with
// key K as principal arn:aws:iam::123456789012:user/K, and config/dev-crm-roles.yaml maps only
// user/test. A principal holding no CRM role cannot lock as admin, and a principal cannot act in
// a role it does not hold; nothing is queued for either. (Before, any signed caller could lock as
// admin by saying so in the body.)
func TestCrmChangesRoleComesFromIAM(t *testing.T) {
	s := startStack(t, false)
	ref, err := resolveLocal(context.Background(), stackOptions{api: s.publicBase()}, http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	intern := *ref
	intern.AWS = ref.AWS.Copy()
	intern.AWS.Credentials = credentials.NewStaticCredentialsProvider("intern", "intern-secret", "")
	lock := []byte(`{"change_id":"chg-iam-1","contact":{"email":"ada@example.com"},"actor":{"email":"eve@example.com","role":"admin"},` +
		`"fields":{"phone":"+14155550100"},"lock":["phone"]}`)
	status, body, err := signedRequest(context.Background(), &intern, "POST", "/crm/changes", lock)
	if err != nil || status != 403 || !strings.Contains(string(body), "arn:aws:iam::123456789012:user/intern holds no CRM role") {
		t.Errorf("lock by a principal without a CRM role = %d %s %v, want 403 naming the principal", status, body, err)
	}
	support := []byte(`{"change_id":"chg-iam-2","contact":{"email":"ada@example.com"},"actor":{"email":"alice@example.com","role":"support"},` +
		`"fields":{"phone":"+14155550100"}}`)
	status, body, err = signedRequest(context.Background(), ref, "POST", "/crm/changes", support)
	if err != nil || status != 403 || !strings.Contains(string(body), "not as support") {
		t.Errorf("change in a role the principal does not hold = %d %s %v, want 403", status, body, err)
	}
	if got := s.drain(); len(got) != 0 {
		t.Errorf("refused changes queued %v", keysOf(got))
	}
	if _, err := s.crmsync("crm", "set", "--contact", "ada@example.com", "--field", "phone=+14155550100", "--actor", "alice@example.com",
		"--role", "admin", "--lock", "--change-id", "chg-iam-3"); err != nil {
		t.Fatalf("lock by the ops tool's principal acting as admin: %v", err)
	}
	if got := s.drain(); len(got) != 1 {
		t.Errorf("the allowed lock queued %d events, want 1", len(got))
	}
}

// Two CRM edits of one field sent newest-first (the older one arrives last) end with the newest
// value, on the local stack with the worker running: owner writes are ordered by occurred_at, not
// by arrival. Before, the edit processed last won and the field reverted to the older value.
func TestCrmEditsNewestFirstEndWithNewest(t *testing.T) {
	s := startStack(t, true)
	for _, c := range []struct{ id, name, at string }{
		{"chg-new", "Robert", "2026-11-20T10:05:00Z"},
		{"chg-old", "Bob", "2026-11-20T10:00:00Z"},
	} {
		if _, err := s.crmsync("crm", "set", "--contact", "grace@example.com", "--field", "first_name="+c.name,
			"--actor", "alice@example.com", "--role", "revops", "--change-id", c.id, "--occurred-at", c.at); err != nil {
			t.Fatalf("crm set %s: %v", c.id, err)
		}
		s.waitLedger("crm:" + c.id)
	}
	d := s.waitContact(func(d *contactDoc) error {
		if f := d.Contact.Fields["first_name"]; f.Value != "Robert" || f.EventKey != "crm:chg-new" {
			return fmt.Errorf("first_name = %+v, want Robert from crm:chg-new", f)
		}
		return nil
	}, "--email", "grace@example.com")
	if f := d.Contact.Fields["first_name"]; f.Value != "Robert" {
		t.Errorf("first_name = %+v, want Robert", f)
	}
}
