package twilio

import (
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

const (
	customer  = "+14155550123" // the external party
	mainLine  = "+14155550100" // the company's Twilio number
	agentCell = "+14155550188" // an agent's mobile, a configured company number
	parentSid = "CA6a7b8c9d0e1f20314253647586970a1b"
	childSid  = "CA7f00aa11bb22cc33dd44ee55ff667788"
)

func companySecret() connector.Secret {
	s := secret("tok", "")
	s.Current[SecretCompanyNumbers] = mainLine + ", (415) 555-0188"
	return s
}

func parseFixture(t *testing.T, file string, sec connector.Secret) canonical.Event {
	t.Helper()
	body, err := os.ReadFile("../../../events/payloads/" + file)
	if err != nil {
		t.Fatal(err)
	}
	return parseBody(t, body, sec)
}

func parseBody(t *testing.T, body []byte, sec connector.Secret) canonical.Event {
	t.Helper()
	req := &connector.Request{Body: body, Headers: map[string]string{"content-type": "application/x-www-form-urlencoded"},
		ReceivedAt: time.Date(2025, 3, 11, 16, 10, 0, 0, time.UTC)}
	p, err := New().Parse(req, sec)
	if err != nil {
		t.Fatal(err)
	}
	ev := p.Events[0]
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
	return ev
}

// An inbound call and its <Dial> child leg to an agent's mobile are one activity on the customer's
// phone; the agent is nobody's subject and each leg's status is kept.
func TestDialLegsAreOneActivityOnTheCustomer(t *testing.T) {
	parent := parseFixture(t, "twilio-dial-parent.form", companySecret())
	child := parseFixture(t, "twilio-dial-child.form", companySecret())
	for _, ev := range []canonical.Event{parent, child} {
		if ev.Activity.ID != "call:"+parentSid {
			t.Errorf("%s: activity %q, want call:%s", ev.Key, ev.Activity.ID, parentSid)
		}
		if ev.GroupKey != "phone:"+customer {
			t.Errorf("%s: group %q, want phone:%s", ev.Key, ev.GroupKey, customer)
		}
		if len(ev.Subject.Phones) != 1 || ev.Subject.Phones[0] != customer {
			t.Errorf("%s: subject %+v, want only the customer's phone", ev.Key, ev.Subject)
		}
		if ev.Fields["contact"]["phone"] != customer {
			t.Errorf("%s: contact phone %q", ev.Key, ev.Fields["contact"]["phone"])
		}
		if ev.Activity.Direction != "inbound" {
			t.Errorf("%s: direction %q, want inbound (the customer called)", ev.Key, ev.Activity.Direction)
		}
	}
	if parent.Key == child.Key {
		t.Errorf("both legs share the event key %q", parent.Key)
	}
	if child.Activity.Attrs["leg_status."+childSid] != "completed" || parent.Activity.Attrs["leg_status."+parentSid] != "completed" {
		t.Errorf("leg statuses: parent %v child %v", parent.Activity.Attrs, child.Activity.Attrs)
	}
	if child.Activity.Attrs["parent_call_sid"] != parentSid || child.Activity.Attrs["leg_direction."+childSid] != "outbound-dial" ||
		child.Activity.Attrs["twilio_direction"] != "" {
		t.Errorf("child attrs = %v", child.Activity.Attrs)
	}
	if child.ExternalIDs["call_sid"] != childSid || child.ExternalIDs["parent_call_sid"] != parentSid {
		t.Errorf("child external ids = %v", child.ExternalIDs)
	}
}

func legParams(sid, parent, direction, from, to, status string) url.Values {
	p := url.Values{"AccountSid": {"ACdec0de00000000000000000000000001"}, "CallSid": {sid}, "CallStatus": {status},
		"Direction": {direction}, "From": {from}, "To": {to}, "ApiVersion": {"2010-04-01"},
		"Timestamp": {"Tue, 11 Mar 2025 16:05:12 +0000"}, "SequenceNumber": {"2"}, "CallbackSource": {"call-progress-events"}}
	if parent != "" {
		p.Set("ParentCallSid", parent)
	}
	return p
}

func TestExternalParty(t *testing.T) {
	tests := []struct {
		name        string
		p           url.Values
		sec         connector.Secret
		wantPhone   string // "" = no subject
		wantGroup   string
		wantDir     string
		wantActivty string
	}{
		{"inbound from the customer", legParams(parentSid, "", "inbound", customer, mainLine, "ringing"), companySecret(),
			customer, "phone:" + customer, "inbound", parentSid},
		{"inbound from an agent's mobile", legParams(parentSid, "", "inbound", agentCell, mainLine, "ringing"), companySecret(),
			"", "twilio:" + parentSid, "inbound", parentSid},
		{"dial leg to an agent, caller ID is the company line", legParams(childSid, parentSid, "outbound-dial", mainLine, agentCell, "completed"),
			companySecret(), "", "twilio:" + parentSid, "", parentSid},
		{"click-to-call first leg to the rep", legParams(parentSid, "", "outbound-api", mainLine, agentCell, "in-progress"), companySecret(),
			"", "twilio:" + parentSid, "outbound", parentSid},
		{"click-to-call dial leg to the customer", legParams(childSid, parentSid, "outbound-dial", mainLine, customer, "completed"), companySecret(),
			customer, "phone:" + customer, "outbound", parentSid},
		{"outbound-api straight to the customer", legParams(parentSid, "", "outbound-api", mainLine, customer, "completed"), companySecret(),
			customer, "phone:" + customer, "outbound", parentSid},
		{"no company numbers configured: To as before", legParams(childSid, parentSid, "outbound-dial", customer, agentCell, "completed"),
			secret("tok", ""), agentCell, "phone:" + agentCell, "outbound", parentSid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := parseBody(t, []byte(tt.p.Encode()), tt.sec)
			var got string
			if len(ev.Subject.Phones) > 0 {
				got = ev.Subject.Phones[0]
			}
			if got != tt.wantPhone || ev.GroupKey != tt.wantGroup || ev.Activity.Direction != tt.wantDir || ev.Activity.ID != "call:"+tt.wantActivty {
				t.Errorf("subject %q group %q direction %q activity %q; want %q %q %q call:%s",
					got, ev.GroupKey, ev.Activity.Direction, ev.Activity.ID, tt.wantPhone, tt.wantGroup, tt.wantDir, tt.wantActivty)
			}
			if tt.wantPhone == "" && (ev.Subject.Name != "" || ev.Fields["contact"]["phone"] != "") {
				t.Errorf("no external party, yet subject %+v fields %v", ev.Subject, ev.Fields)
			}
		})
	}
}
