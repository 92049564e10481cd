package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/twilio"
)

// An inbound call forwarded by <Dial> to an agent's mobile (a configured company number): the
// parent call's and the child leg's status callbacks, posted over HTTP with the worker running,
// end as ONE call activity on the customer's contact carrying both legs' updates, and the agent
// gets no contact.
func TestTwilioDialLegsEndAsOneActivityOnTheCustomer(t *testing.T) {
	s := startStack(t, true)
	const (
		customer  = "+14155550123"
		agentCell = "+14155550188"
		parentSid = "CA6a7b8c9d0e1f20314253647586970a1b"
		childSid  = "CA7f00aa11bb22cc33dd44ee55ff667788"
	)
	s.setTwilioCompanyNumbers("+14155550100, " + agentCell)

	// A lead gives the customer's phone a contact (calls alone create none).
	lead := `{"schema":"crmsync.generic/v1","type":"lead","occurred_at":"2025-03-11T14:00:00Z","external_id":"dial-1",` +
		`"person":{"emails":["grace@example.com"],"phones":["` + customer + `"],"first_name":"Grace"}}`
	if status, body := s.post(s.signed("generic", []byte(lead), "application/json")); status != 200 && status != 202 {
		t.Fatalf("lead: %d %s", status, body)
	}
	// The child leg ends first (the agent hangs up), then the parent call.
	for _, file := range []string{"twilio-dial-child.form", "twilio-dial-parent.form"} {
		body, err := os.ReadFile("../../events/payloads/" + file)
		if err != nil {
			t.Fatal(err)
		}
		if status, resp := s.post(s.signed("twilio", body, "application/x-www-form-urlencoded")); status != 200 {
			t.Fatalf("%s: %d %s", file, status, resp)
		}
	}
	d := s.waitContact(func(d *contactDoc) error {
		a := d.activity("call:" + parentSid)
		if a == nil {
			return fmt.Errorf("call:%s not on the customer's timeline yet", parentSid)
		}
		if len(a.Updates) < 2 {
			return fmt.Errorf("%d of 2 legs merged", len(a.Updates))
		}
		return nil
	}, "--phone", customer)
	a := d.activity("call:" + parentSid)
	if d.activity("call:"+childSid) != nil {
		t.Errorf("the child leg is an activity of its own: %+v", d.Timeline)
	}
	var keys []string
	for _, u := range a.Updates {
		keys = append(keys, u.Key)
	}
	if want := []string{"twilio:call:" + childSid + ":3", "twilio:call:" + parentSid + ":3"}; strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Errorf("updates = %v, want %v", keys, want)
	}
	if a.Outcome != "completed" || a.DurationSec != 312 || a.Direction != "inbound" {
		t.Errorf("call outcome %q duration %d direction %q; want completed, 312 (the parent's), inbound", a.Outcome, a.DurationSec, a.Direction)
	}
	if a.Attrs["leg_status."+parentSid] != "completed" || a.Attrs["leg_status."+childSid] != "completed" || a.Attrs["parent_call_sid"] != parentSid {
		t.Errorf("leg attributes = %v", a.Attrs)
	}
	if c := a.Associations.Contact; c == nil || c.ID != d.Contact.ID {
		t.Errorf("call association = %+v, want the customer's contact", a.Associations.Contact)
	}
	if hasString(d.Contact.Identities, "phone:"+agentCell) {
		t.Errorf("the customer's contact claimed the agent's phone: %v", d.Contact.Identities)
	}
	agent, err := s.contact("--phone", agentCell)
	if err != nil || agent != nil {
		t.Errorf("agent's phone: contact %+v, %v; want none", agent, err)
	}
}

// setTwilioCompanyNumbers adds company_numbers to the stack's Twilio secret (before any Twilio
// delivery, so no function has cached the secret yet).
func (s *testStack) setTwilioCompanyNumbers(numbers string) {
	s.t.Helper()
	sec := s.secrets[twilio.Name]
	cur := map[string]string{twilio.SecretCompanyNumbers: numbers}
	for k, v := range sec.Current {
		cur[k] = v
	}
	b, err := json.Marshal(connector.Secret{Current: cur, Previous: sec.Previous})
	if err != nil {
		s.t.Fatal(err)
	}
	_, err = secretsmanager.NewFromConfig(s.AWS).PutSecretValue(context.Background(), &secretsmanager.PutSecretValueInput{
		SecretId: aws.String(s.Stack.Physical["TwilioSecret"].Ref), SecretString: aws.String(string(b))})
	if err != nil {
		s.t.Fatal(err)
	}
}
