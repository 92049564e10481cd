package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/crmsync/crmsync/shared/connector/mailgun"
)

// mailgunMessage is the email activity of the Mailgun samples (events/payloads/mailgun*.json).
const mailgunMessage = "email:by5pr11mb4180c3d2a1e0f9b8c7d6e5f4a3b2c1d0@by5pr11mb4180.namprd11.prod.outlook.com"

// postMailgun posts one sample Mailgun delivery, freshly signed, and returns the answer.
func (s *testStack) postMailgun(file string) (int, string) {
	s.t.Helper()
	body, err := os.ReadFile("../../events/payloads/" + file)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.post(s.signed("mailgun", body, "application/json"))
}

// postLead gives an email a contact through the generic connector (Mailgun delivery events
// alone propose no contact fields).
func (s *testStack) postLead(id, email string) {
	s.t.Helper()
	lead := `{"schema":"crmsync.generic/v1","type":"lead","occurred_at":"2025-03-11T14:00:00Z","external_id":"` + id + `",` +
		`"person":{"emails":["` + email + `"],"first_name":"Grace"}}`
	if status, body := s.post(s.signed("generic", []byte(lead), "application/json")); status != 200 && status != 202 {
		s.t.Fatalf("lead: %d %s", status, body)
	}
}

// A temporary failure (Mailgun retries the delivery) followed by the delivery, posted over HTTP
// with the worker running, ends delivered: the temporary failure stays in the history and in the
// recipient's outcome only until the delivery arrives.
func TestMailgunTemporaryFailureThenDeliveredEndsDelivered(t *testing.T) {
	s := startStack(t, true)
	s.postLead("mg-temp-1", "grace@example.org")
	for _, file := range []string{"mailgun-temporary-fail.json", "mailgun.json"} {
		if status, body := s.postMailgun(file); status != 200 {
			t.Fatalf("%s: %d %s, want 200 (Mailgun counts only 200 as success)", file, status, body)
		}
	}
	// A temporary failure stamped after the delivery (an attempt Mailgun reported late) ranks below
	// it: before severity ranked, it tied with delivered and, being later, overwrote it.
	late := lateTemporaryFailure(t)
	if status, body := s.post(s.signed("mailgun", late, "application/json")); status != 200 {
		t.Fatalf("late temporary failure: %d %s", status, body)
	}
	d := s.waitContact(func(d *contactDoc) error {
		a := d.activity(mailgunMessage)
		if a == nil {
			return fmt.Errorf("%s not on the contact's timeline yet", mailgunMessage)
		}
		if len(a.Updates) < 3 {
			return fmt.Errorf("%d of 3 Mailgun events merged", len(a.Updates))
		}
		return nil
	}, "--email", "grace@example.org")
	a := d.activity(mailgunMessage)
	var statuses []string
	for _, u := range a.Updates {
		statuses = append(statuses, u.Status)
	}
	if want := mailgun.StatusTemporaryFail + " delivered " + mailgun.StatusTemporaryFail; strings.Join(statuses, " ") != want {
		t.Errorf("updates = %v, want %s", statuses, want)
	}
	if a.Status != "delivered" {
		t.Errorf("email status = %q, want delivered (a temporary failure never overrides a delivery)", a.Status)
	}
	if got := a.Attrs[mailgun.RecipientStatusAttr+"grace@example.org"]; got != "delivered" {
		t.Errorf("recipient outcome = %q, want delivered (attrs %v)", got, a.Attrs)
	}
	if c := a.Associations.Contact; c == nil || c.ID != d.Contact.ID {
		t.Errorf("email association = %+v, want the contact", a.Associations.Contact)
	}
}

// lateTemporaryFailure is the sample temporary failure as another event stamped a minute after
// the sample delivery.
func lateTemporaryFailure(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../events/payloads/mailgun-temporary-fail.json")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatal(err)
	}
	body["event-data"]["id"] = "Yq3vT8sLQkK1mZ0pW2xRcB"
	body["event-data"]["timestamp"] = 1741707963.5
	out, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// An unsubscribe sets the contact's opt-out fields under the policy, with the audit naming
// Mailgun and the rule.
func TestMailgunUnsubscribeSetsOptOut(t *testing.T) {
	s := startStack(t, true)
	s.postLead("mg-unsub-1", "grace@example.org")
	if status, body := s.postMailgun("mailgun-unsubscribed.json"); status != 200 {
		t.Fatalf("unsubscribe: %d %s", status, body)
	}
	d := s.waitContact(func(d *contactDoc) error {
		if f, ok := d.Contact.Fields[mailgun.FieldEmailOptOut]; !ok || f.Value != "true" {
			return fmt.Errorf("%s = %+v, want true", mailgun.FieldEmailOptOut, d.Contact.Fields[mailgun.FieldEmailOptOut])
		}
		return nil
	}, "--email", "grace@example.org")
	if f := d.Contact.Fields[mailgun.FieldEmailOptOutReason]; f.Value != "unsubscribed" {
		t.Errorf("%s = %+v, want unsubscribed", mailgun.FieldEmailOptOutReason, f)
	}
	if f := d.Contact.Fields[mailgun.FieldEmailOptOutAt]; f.Value != "2025-03-12T15:45:01Z" {
		t.Errorf("%s = %+v, want 2025-03-12T15:45:01Z", mailgun.FieldEmailOptOutAt, f)
	}
	audited := false
	for _, e := range d.Audit {
		if e.Field == mailgun.FieldEmailOptOut && e.Source == "mailgun" && e.Decision == "applied" && e.Rule == "latest" {
			audited = true
		}
	}
	if !audited {
		t.Errorf("no applied audit entry for %s by mailgun under latest: %+v", mailgun.FieldEmailOptOut, d.Audit)
	}
	if a := d.activity(mailgunMessage); a == nil || a.Status != "unsubscribed" {
		t.Errorf("email activity = %+v, want status unsubscribed", a)
	}
}

// An authentic delivery that cannot be used is quarantined and answered 406, the one code that
// stops Mailgun retrying; an unauthenticated one is still 401.
func TestMailgunQuarantinedDeliveryAnswers406(t *testing.T) {
	s := startStack(t, false)
	noMessageID := []byte(`{"event-data":{"id":"Zz0aB1cD2eF3gH4iJ5kL6m","event":"delivered","timestamp":1741707903.2,"recipient":"grace@example.org"}}`)
	status, body := s.post(s.signed("mailgun", noMessageID, "application/json"))
	if status != 406 || !strings.Contains(body, "quarantined") {
		t.Fatalf("unusable delivery = %d %s, want 406 quarantined", status, body)
	}
	if q := s.quarantined(); len(q) != 1 || !strings.HasPrefix(q[0], "quarantine/mailgun/") {
		t.Errorf("quarantined objects = %v, want one under quarantine/mailgun/", q)
	}
	forged := s.signed("mailgun", noMessageID, "application/json")
	forged.Body = strings.Replace(forged.Body, `"signature":"`, `"signature":"00`, 1)
	if status, body := s.post(forged); status != 401 {
		t.Errorf("forged delivery = %d %s, want 401", status, body)
	}
}
