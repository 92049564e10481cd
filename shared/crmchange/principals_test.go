package crmchange

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

func testPrincipals(t *testing.T, yaml string) *Principals {
	t.Helper()
	p, err := ParsePrincipals("crm-roles.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRolesOf(t *testing.T) {
	p := testPrincipals(t, `
principals:
  - arn: arn:aws:iam::111122223333:role/crm-backend
    roles: [admin, revops]
  - arn: "arn:aws:sts::111122223333:assumed-role/revops-*/*"
    roles: [revops]
  - arn: "arn:aws:sts::111122223333:assumed-role/revops-leads/*"
    roles: [sales]
`)
	for _, c := range []struct {
		arn  string
		want []string
	}{
		{"arn:aws:iam::111122223333:role/crm-backend", []string{"admin", "revops"}},
		{"arn:aws:sts::111122223333:assumed-role/revops-eu/alice", []string{"revops"}},
		{"arn:aws:sts::111122223333:assumed-role/revops-leads/bob", []string{"revops", "sales"}},
		{"arn:aws:iam::111122223333:role/crm-backend-2", nil},    // no prefix match
		{"arn:aws:iam::999999999999:role/crm-backend", nil},      // other account
		{"arn:aws:sts::111122223333:assumed-role/revops/x", nil}, // "revops-*" needs the dash
		{"", nil},
	} {
		if got := p.RolesOf(c.arn); !slices.Equal(got, c.want) {
			t.Errorf("RolesOf(%q) = %v, want %v", c.arn, got, c.want)
		}
	}
}

// Configuration errors name the file, the line and the field, all of them at once.
func TestParsePrincipalsErrors(t *testing.T) {
	_, err := ParsePrincipals("config/crm-roles.yaml", []byte(`principals:
  - arn: not-an-arn
    roles: [admin]
  - arn: arn:aws:iam::1:user/x
    roles: []
  - arn: arn:aws:iam::1:user/y
    roles: [Admin!]
    extra: 1
`))
	if err == nil {
		t.Fatal("invalid roles file accepted")
	}
	for _, want := range []string{
		"config/crm-roles.yaml:2: principals[0].arn",
		"config/crm-roles.yaml:5: principals[1].roles",
		"config/crm-roles.yaml:7: principals[2].roles[0]",
		"config/crm-roles.yaml:8: principals[2].extra",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// The role in the body is only a request to act with a role the caller's IAM principal holds
// (config/crm-roles.yaml): a principal that holds no CRM role, or not the role it asks for, is
// refused with 403 and nothing is enqueued. Before, actor.role came from the body alone and any
// principal allowed to call the route could lock fields as admin.
func TestHandleRolesFromIAM(t *testing.T) {
	q := &fakeSQS{}
	h := New(Config{QueueURL: "https://sqs/q.fifo", Policy: testPolicy(t), Principals: testPrincipals(t, `
principals:
  - arn: arn:aws:iam::123456789012:user/crm
    roles: [revops, sales]
`)}, Deps{SQS: q, Now: func() time.Time { return now }})
	as := func(principal, role string, lock bool) events.APIGatewayV2HTTPRequest {
		r := good()
		r.Actor.Role = role
		if !lock {
			r.Lock = nil
		}
		body, _ := json.Marshal(r)
		ev := request(string(body))
		if principal == "" {
			ev.RequestContext.Authorizer = nil
		} else {
			ev.RequestContext.Authorizer.IAM.UserARN = principal
		}
		return ev
	}
	for _, c := range []struct {
		name     string
		req      events.APIGatewayV2HTTPRequest
		status   int
		want     string
		enqueued int
	}{
		{"held override role locks", as("arn:aws:iam::123456789012:user/crm", "revops", true), 202, "accepted", 1},
		{"held plain role edits", as("arn:aws:iam::123456789012:user/crm", "sales", false), 202, "accepted", 1},
		{"role not held", as("arn:aws:iam::123456789012:user/crm", "admin", true), 403, `may act as revops, sales, not as admin`, 0},
		{"principal holds no role", as("arn:aws:iam::123456789012:user/intern", "revops", true), 403, "holds no CRM role", 0},
		{"no IAM identity", as("", "revops", true), 403, "no IAM identity", 0},
	} {
		before := len(q.in)
		resp, _ := h.Handle(context.Background(), c.req)
		if resp.StatusCode != c.status || !strings.Contains(resp.Body, c.want) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, resp.StatusCode, resp.Body, c.status, c.want)
		}
		if got := len(q.in) - before; got != c.enqueued {
			t.Errorf("%s: %d sends, want %d", c.name, got, c.enqueued)
		}
	}
}
