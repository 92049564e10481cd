package main

import (
	"fmt"
	"os"
	"testing"
)

// A Typeform response whose field refs are Typeform's default UUIDs, posted signed over HTTP to
// the local stack with the worker running, ends in a contact with first and last name, email,
// phone and company (from answer types and question titles), and with the consent boolean and
// product choice the embedded mapping (config/typeform.yaml) sends to the policy's custom fields.
func TestTypeformUUIDRefsEndInAContact(t *testing.T) {
	s := startStack(t, true)
	body, err := os.ReadFile("../../events/payloads/typeform-uuid-refs.json")
	if err != nil {
		t.Fatal(err)
	}
	if status, resp := s.post(s.signed("typeform", body, "application/json")); status != 200 {
		t.Fatalf("POST /webhooks/typeform = %d %s, want 200", status, resp)
	}
	want := map[string]string{
		"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com", "phone": "+14155550177",
		"company": "Eckert-Mauchly Computer Corp", "marketing_consent": "true", "product_interest": "Sync API",
	}
	s.waitContact(func(d *contactDoc) error {
		for field, value := range want {
			if err := d.fieldFrom(field, value, "typeform"); err != nil {
				return err
			}
		}
		if d.activity("form:b7e2c91d4f6a8035c1e9d7b3a5f2e4c6") == nil {
			return fmt.Errorf("no form submission on the timeline yet")
		}
		return nil
	}, "--email", "grace@example.com")
}
