package twilio

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// DefaultAPIBaseURL is Twilio's REST API base, used when api.BaseURL is empty.
const DefaultAPIBaseURL = "https://api.twilio.com"

// TerminalStatuses are the call statuses that end a call; List reports only calls in one of
// them (a call still ringing or in progress has not finished its callbacks yet).
var TerminalStatuses = map[string]bool{"completed": true, "busy": true, "failed": true, "no-answer": true, "canceled": true}

var _ connector.Lister = (*Connector)(nil)

// call is one Call resource of Twilio's Calls list
// (GET /2010-04-01/Accounts/{AccountSid}/Calls.json).
type call struct {
	SID           string  `json:"sid"`
	AccountSID    string  `json:"account_sid"`
	ParentCallSID *string `json:"parent_call_sid"`
	Status        string  `json:"status"`
	Direction     string  `json:"direction"`
	From          string  `json:"from"`
	To            string  `json:"to"`
	Duration      *string `json:"duration"`
	AnsweredBy    *string `json:"answered_by"`
	CallerName    *string `json:"caller_name"`
	StartTime     *string `json:"start_time"`
	EndTime       *string `json:"end_time"`
	DateUpdated   *string `json:"date_updated"`
}

type callsPage struct {
	Calls       []json.RawMessage `json:"calls"`
	NextPageURI *string           `json:"next_page_uri"`
}

// List returns one call.status event per call that ended (a terminal status) inside
// [since, until), as the final status callback of that call would have produced it: the
// Calls list (Basic auth with the secret's account_sid and auth_token) is read with
// EndTime>=/EndTime<= date filters and every page followed; each terminal call is mapped
// through the same mapping as a callback with CallStatus, CallDuration, From, To, Direction,
// AnsweredBy, ParentCallSid and Timestamp = end_time (else date_updated).
//
// The key is twilio:call:{CallSid}:{CallStatus}: the list cannot know the SequenceNumber a
// status-callback event carried, so a call whose terminal callback was delivered with a
// sequence number has a different key; reconciliation therefore treats a listed call as
// delivered when the ledger holds its key OR an event of the same call activity with the same
// terminal status (see shared/reconcile). The payload hash is the sha256 of the call resource
// as listed.
func (*Connector) List(ctx context.Context, since, until time.Time, sec connector.Secret, api connector.API) ([]canonical.Event, error) {
	sid, token := sec.Get(SecretAccountSID), sec.Get(SecretAuthToken)
	if sid == "" || token == "" {
		return nil, fmt.Errorf("twilio: list calls: the secret needs %s and %s", SecretAccountSID, SecretAuthToken)
	}
	base := api.BaseURL
	if base == "" {
		base = DefaultAPIBaseURL
	}
	q := url.Values{"PageSize": {"1000"}}
	if !since.IsZero() {
		q.Set("EndTime>", since.UTC().AddDate(0, 0, -1).Format("2006-01-02"))
	}
	if !until.IsZero() {
		q.Set("EndTime<", until.UTC().AddDate(0, 0, 1).Format("2006-01-02"))
	}
	next := connector.JoinURL(base, "/2010-04-01/Accounts/"+url.PathEscape(sid)+"/Calls.json?"+q.Encode())
	hdr := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(sid+":"+token))}}
	seen := map[string]bool{}
	var out []canonical.Event
	for pages := 0; next != "" && pages < connector.MaxListPages && !seen[next]; pages++ {
		seen[next] = true
		body, err := connector.GetJSON(ctx, api, next, hdr)
		if err != nil {
			return nil, fmt.Errorf("twilio: list calls: %w", err)
		}
		var page callsPage
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("twilio: list calls: page is not a Calls list: %v", err)
		}
		for _, raw := range page.Calls {
			ev, ok, err := listedCall(raw, since, until, sec)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, *ev)
			}
		}
		next = ""
		if page.NextPageURI != nil && *page.NextPageURI != "" {
			next = connector.JoinURL(base, *page.NextPageURI)
		}
	}
	return out, nil
}

// listedCall maps one listed call to its terminal call.status event (the secret's
// company_numbers decide the external party, as for callbacks); ok is false for calls that have
// not ended or ended outside the window.
func listedCall(raw json.RawMessage, since, until time.Time, sec connector.Secret) (*canonical.Event, bool, error) {
	var c call
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, false, fmt.Errorf("twilio: list calls: malformed call: %v", err)
	}
	status := strings.ToLower(strings.TrimSpace(c.Status))
	if c.SID == "" || !TerminalStatuses[status] {
		return nil, false, nil
	}
	stamp := deref(c.EndTime)
	if stamp == "" {
		stamp = deref(c.DateUpdated)
	}
	ended, ok := parseTimestamp(stamp)
	if !ok || !connector.InWindow(ended, since, until) {
		return nil, false, nil
	}
	p := url.Values{"CallSid": {c.SID}, "CallStatus": {status}, "Timestamp": {stamp}}
	set := func(k, v string) {
		if v = strings.TrimSpace(v); v != "" {
			p.Set(k, v)
		}
	}
	set("AccountSid", c.AccountSID)
	set("Direction", c.Direction)
	set("From", c.From)
	set("To", c.To)
	set("CallDuration", deref(c.Duration))
	set("AnsweredBy", deref(c.AnsweredBy))
	set("CallerName", deref(c.CallerName))
	set("ParentCallSid", deref(c.ParentCallSID))
	ev, err := mapCall(p, ended, CompanyNumbers(sec))
	if err != nil {
		return nil, false, err
	}
	ev.PayloadHash = canonical.PayloadHash(raw)
	ev.Unmapped = nil // the list resource is not the callback: its extra members say nothing about the mapping
	return ev, true, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
