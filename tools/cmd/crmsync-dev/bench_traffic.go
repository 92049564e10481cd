package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/tools/samples"
)

// benchTraffic builds realistic, distinct webhook deliveries for the benchmark: the sample vendor
// bodies of events/payloads with their identifiers and the person's identities replaced, signed
// with the dev secrets exactly as each vendor signs, and (for the thin Meta and Graph
// notifications) the vendor API fixtures the worker hydrates from.
type benchTraffic struct {
	repo    string // repository root
	secrets map[string]connector.Secret
	bodies  map[string]string
	// fixtures of the hydrated connectors, keyed by vendor-fake path
	metaFixture, graphFixture string
}

const (
	graphFixturePath = "msgraph/users/sam.rivera@example.net/messages/AAMkADM0ZGRhMjdjLTA5NjUtNGMzYi1iNzM1LTk5NmJmYzk4NzVlMABGAAAAAADG8oR0pIpVQq3nAnj6_dKpBwCpOqNkdDOZSLNdY9hRCD-VAAAAAAEJAACpOqNkdDOZSLNdY9hRCD-VAAAP5FfQAAA="
	metaFixturePath  = "meta-graph/918273645501234"
)

func newBenchTraffic(repo string) (*benchTraffic, error) {
	secs, err := samples.DevSecrets(filepath.Join(repo, "config", "dev-secrets.json"))
	if err != nil {
		return nil, err
	}
	t := &benchTraffic{repo: repo, secrets: secs, bodies: map[string]string{}}
	for name, p := range samples.Payloads {
		b, err := os.ReadFile(filepath.Join(repo, "events", "payloads", p.File))
		if err != nil {
			return nil, err
		}
		t.bodies[name] = string(b)
	}
	for path, dst := range map[string]*string{graphFixturePath: &t.graphFixture, metaFixturePath: &t.metaFixture} {
		b, err := os.ReadFile(filepath.Join(repo, "events", "vendor", filepath.FromSlash(path)+".json"))
		if err != nil {
			return nil, err
		}
		*dst = string(b)
	}
	return t, nil
}

// person is one synthetic external person: identities derived from its number.
type person int

func (p person) email() string { return fmt.Sprintf("ada.p%d@c%d.example.com", p, int(p)/4) }
func (p person) last4() string { return fmt.Sprintf("%04d", int(p)%10000) }
func (p person) e164() string  { return "+1415555" + p.last4() }

// identities replaces the samples' people (Ada, Grace) with this person, in every spelling the
// sample bodies and fixtures use.
func (p person) identities() []string {
	return []string{
		"ada@example.com", p.email(), "grace@example.org", p.email(),
		"+14155550123", p.e164(), "%2B14155550123", "%2B1415555" + p.last4(),
		"+1 415-555-0123", "+1 415-555-" + p.last4(), "+1 (415) 555-0123", "+1 (415) 555-" + p.last4(),
		"+12125550147", p.e164(),
		// the email message both Graph and Mailgun report
		"BY5PR11MB4180C3D2A1E0F9B8C7D6E5F4A3B2C1D0", fmt.Sprintf("BY5PR11MB4180C3D2A1E0F9B8C7D6E5F%07d", int(p)),
	}
}

func (p person) graphMessage() string { return fmt.Sprintf("AAAP%06dA=", int(p)) }
func (p person) leadgenID() string    { return fmt.Sprintf("9182736%08d", int(p)) }

// delivery is one webhook delivery ready to post.
type delivery struct {
	connector string
	label     string
	ev        events.APIGatewayV2HTTPRequest
	// keys are the canonical event keys it yields; fixture is the vendor-fake path and body the
	// worker hydrates from (hydrated connectors).
	keys                []string
	fixture, fixtureDoc string
}

// step names one kind of delivery in a person's journey.
type step string

const (
	stepTypeform       step = "typeform lead"
	stepMetaLead       step = "meta-leads lead (hydrated)"
	stepGenericLead    step = "generic lead"
	stepCalendly       step = "calendly meeting scheduled"
	stepCallRinging    step = "twilio call ringing"
	stepCallInProgress step = "twilio call in-progress"
	stepCallCompleted  step = "twilio call completed"
	stepGraphMail      step = "msgraph mail created (hydrated)"
	stepMailDelivered  step = "mailgun email delivered"
	stepMailOpened     step = "mailgun email opened"
)

var stepConnector = map[step]string{
	stepTypeform: "typeform", stepMetaLead: "meta-leads", stepGenericLead: "generic", stepCalendly: "calendly",
	stepCallRinging: "twilio", stepCallInProgress: "twilio", stepCallCompleted: "twilio", stepGraphMail: "msgraph",
	stepMailDelivered: "mailgun", stepMailOpened: "mailgun",
}

// journey is a person's deliveries in the order vendors would send them: a lead from one source,
// a meeting for half of them, one call's three status callbacks, the email the rep sends (seen by
// Graph and by Mailgun), and an open for half of them.
func (p person) journey() []step {
	var out []step
	switch int(p) % 10 {
	case 0, 1, 2, 3, 4, 5:
		out = append(out, stepTypeform)
	case 6, 7:
		out = append(out, stepMetaLead)
	case 8:
		out = append(out, stepGenericLead)
	}
	if int(p)%2 == 0 || int(p)%10 == 9 {
		out = append(out, stepCalendly)
	}
	out = append(out, stepCallRinging, stepCallInProgress, stepCallCompleted, stepGraphMail, stepMailDelivered)
	if int(p)%2 == 0 {
		out = append(out, stepMailOpened)
	}
	return out
}

func replacePairs(s string, pairs ...string) string { return strings.NewReplacer(pairs...).Replace(s) }

// build makes one signed delivery of step s for person p, addressed to publicBase and signed
// at now; variant distinguishes repeated steps (a second call of the same person).
func (t *benchTraffic) build(s step, p person, variant int, publicBase string, now time.Time) (delivery, error) {
	name := stepConnector[s]
	id := int(p)*10 + variant
	body := replacePairs(t.bodies[name], p.identities()...)
	d := delivery{connector: name, label: string(s)}
	switch s {
	case stepTypeform:
		body = replacePairs(body, "01JP2F4QGQ8JV0N7T6QX4D7M0S", fmt.Sprintf("01JP2F4QGQ8JV0N7T6Q%07d", id),
			"a3a12ec67a1365927098a606107fac15", fmt.Sprintf("%032x", id+1))
	case stepMetaLead:
		body = replacePairs(body, "918273645501234", p.leadgenID())
		d.fixture = "meta-graph/" + p.leadgenID()
		d.fixtureDoc = replacePairs(t.metaFixture, append(p.identities(), "918273645501234", p.leadgenID())...)
	case stepGenericLead:
		body = replacePairs(body, "site-contact-20250311-0042", fmt.Sprintf("site-contact-p%07d", id))
	case stepCalendly:
		body = replacePairs(body, "DHFE2JQZ7KX4MNPA", fmt.Sprintf("DHFE2JQZ%08d", id), "FCDA5BHRWZQ6NTXW", fmt.Sprintf("FCDA5BHR%08d", id))
	case stepCallRinging, stepCallInProgress, stepCallCompleted:
		status, seq, at := "ringing", "1", "16%3A00%3A00"
		switch s {
		case stepCallInProgress:
			status, seq, at = "in-progress", "2", "16%3A00%3A07"
		case stepCallCompleted:
			status, seq, at = "completed", "3", "16%3A05%3A12"
		}
		body = replacePairs(body, "CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7", fmt.Sprintf("CA5e1f0a2b3c4d5e6f708192a%09d", id),
			"CallStatus=completed", "CallStatus="+status, "SequenceNumber=3", "SequenceNumber="+seq,
			"16%3A05%3A12", at)
	case stepGraphMail:
		body = replacePairs(body, "AAAP5FfQAAA=", p.graphMessage())
		d.fixture = strings.Replace(graphFixturePath, "AAAP5FfQAAA=", p.graphMessage(), 1)
		d.fixtureDoc = replacePairs(t.graphFixture, append(p.identities(), "AAAP5FfQAAA=", p.graphMessage())...)
	case stepMailDelivered, stepMailOpened:
		ev := "delivered"
		ts := "1741707903.219374"
		if s == stepMailOpened {
			ev, ts = "opened", "1741708263.5"
		}
		kind := 1
		if s == stepMailOpened {
			kind = 2
		}
		body = replacePairs(body, "CPgfbmQMTCKtHW6uIWtuVe", fmt.Sprintf("CPgfbmQMTCKt%010d%d", id, kind),
			`"event": "delivered"`, `"event": "`+ev+`"`, "1741707903.219374", ts)
	}
	ev, err := samples.WebhookEvent(name, []byte(body), samples.Payloads[name].ContentType, publicBase, t.secrets[name], now)
	if err != nil {
		return d, fmt.Errorf("%s for person %d: %w", s, p, err)
	}
	d.ev = ev
	evs, err := samples.ParseEvent(ev, name, t.secrets[name], now)
	if err != nil {
		return d, fmt.Errorf("%s for person %d does not parse: %w", s, p, err)
	}
	for _, e := range evs {
		d.keys = append(d.keys, e.Key)
	}
	return d, nil
}

// crmChange is a change made in the CRM (POST /crm/changes, IAM-authorized) to the person's
// contact, as the CRM's integration sends it.
func crmChange(p person, changeID string, fields map[string]string, at time.Time) (delivery, error) {
	body, err := json.Marshal(map[string]any{
		"change_id": changeID, "contact": map[string]string{"email": p.email()},
		"actor":  map[string]string{"email": "alice@example.com", "role": "revops"},
		"fields": fields, "occurred_at": at.UTC().Format(time.RFC3339),
	})
	if err != nil {
		return delivery{}, err
	}
	ev := events.APIGatewayV2HTTPRequest{RawPath: "/crm/changes", Body: string(body), Headers: map[string]string{
		"content-type": "application/json",
		// The local HTTP API checks that a SigV4 authorization is present (API Gateway verifies it
		// in AWS) and reports its access key "test" as the principal config/dev-crm-roles.yaml
		// gives the revops role.
		"authorization": "AWS4-HMAC-SHA256 Credential=test/20261129/us-east-1/execute-api/aws4_request, SignedHeaders=content-type;host, Signature=0",
	}}
	ev.RequestContext.HTTP.Method = "POST"
	return delivery{connector: "crm", label: "crm change", ev: ev, keys: []string{"crm:" + changeID}}, nil
}

// canonicalEvents parses a delivery as the webhook function does (for re-enqueuing it).
func (t *benchTraffic) canonicalEvents(d delivery, now time.Time) ([]canonical.Event, error) {
	return samples.ParseEvent(d.ev, d.connector, t.secrets[d.connector], now)
}

// installFixture makes the stack's vendor fake answer the delivery's hydration request.
func installFixture(ctx context.Context, client *http.Client, base string, d delivery) error {
	if d.fixture == "" {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/_vendor/"+d.fixture, strings.NewReader(d.fixtureDoc))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("install fixture %s: HTTP %d", d.fixture, resp.StatusCode)
	}
	return nil
}

// post sends a delivery over HTTP to the local stack, as the vendor would, and returns the status.
func post(ctx context.Context, client *http.Client, base string, d delivery) (int, error) {
	ev := d.ev
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			return 0, err
		}
		body = b
	}
	u := base + ev.RawPath
	if ev.RawQueryString != "" {
		u += "?" + ev.RawQueryString
	}
	method := ev.RequestContext.HTTP.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range ev.Headers {
		if k == "host" || k == "content-length" || strings.HasPrefix(k, "x-forwarded-") {
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
