package twilio

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// DefaultAPIBaseURL is Twilio's REST API base, used when api.BaseURL is empty.
const DefaultAPIBaseURL = "https://api.twilio.com"

// TerminalStatuses are the call statuses that end a call.
var TerminalStatuses = map[string]bool{"completed": true, "busy": true, "failed": true, "no-answer": true, "canceled": true}

// LiveStatuses are the statuses of a call that has not ended: it has no end_time (and, queued,
// no start_time), so no date filter of the Calls list finds it; List asks for each by Status.
var LiveStatuses = []string{"queued", "ringing", "in-progress"}

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
	DateCreated   *string `json:"date_created"`
	DateUpdated   *string `json:"date_updated"`
}

type callsPage struct {
	Calls       []json.RawMessage `json:"calls"`
	NextPageURI *string           `json:"next_page_uri"`
}

// List returns one call.status event per call in [since, until), in whatever status the call
// is in — queued, ringing, in-progress, completed, busy, failed, no-answer or canceled — as the
// status callback reporting that status would have produced it. It reads the Calls list (Basic
// auth with the secret's account_sid and auth_token), following every page, with one query for
// ended calls and one per live status, because the list's filters cannot find both at once:
//
//   - EndTime>= / EndTime<= (a day wider than the window) finds every call that ended, in any
//     terminal status; a call that has not ended has no end_time and never matches;
//   - Status=queued, Status=ringing, Status=in-progress (Status takes one status per request;
//     leaving it out means any) find the calls not yet ended, which no date filter can: a queued
//     call has not even a start_time.
//
// A call is in the window by its end_time when it ended (else date_updated), and by the time it
// entered its current status when it is live: date_updated, else start_time, else date_created.
// Each call is mapped through the same mapping as a callback with CallStatus, CallDuration,
// From, To, Direction, AnsweredBy, CallerName, ParentCallSid and Timestamp = that time. A call
// that moved on between two queries (ringing, then completed) is reported in both statuses:
// both were real, and the timeline ranks them.
//
// The key is twilio:call:{CallSid}:{CallStatus}: the list cannot know the SequenceNumber a
// status-callback event carried, so a call whose callback was delivered with a sequence number
// has a different key; reconciliation therefore treats a listed call as delivered when the
// ledger holds its key OR an event of the same call activity in the same status (see
// shared/reconcile). The payload hash is the sha256 of the call resource as listed.
func (*Connector) List(ctx context.Context, since, until time.Time, sec connector.Secret, api connector.API) ([]canonical.Event, error) {
	sid, token := sec.Get(SecretAccountSID), sec.Get(SecretAuthToken)
	if sid == "" || token == "" {
		return nil, fmt.Errorf("twilio: list calls: the secret needs %s and %s", SecretAccountSID, SecretAuthToken)
	}
	base := api.BaseURL
	if base == "" {
		base = DefaultAPIBaseURL
	}
	hdr := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte(sid+":"+token))}}
	calls := "/2010-04-01/Accounts/" + url.PathEscape(sid) + "/Calls.json?"
	ended := url.Values{"PageSize": {"1000"}}
	if !since.IsZero() {
		ended.Set("EndTime>", since.UTC().AddDate(0, 0, -1).Format("2006-01-02"))
	}
	if !until.IsZero() {
		ended.Set("EndTime<", until.UTC().AddDate(0, 0, 1).Format("2006-01-02"))
	}
	queries := []url.Values{ended}
	for _, status := range LiveStatuses {
		queries = append(queries, url.Values{"PageSize": {"1000"}, "Status": {status}})
	}
	seen := map[string]bool{} // pages read, across queries
	keys := map[string]bool{} // events returned: one per call and status
	var out []canonical.Event
	for _, q := range queries {
		next := connector.JoinURL(base, calls+q.Encode())
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
				if ok && !keys[ev.Key] {
					keys[ev.Key] = true
					out = append(out, *ev)
				}
			}
			next = ""
			if page.NextPageURI != nil && *page.NextPageURI != "" {
				next = connector.JoinURL(base, *page.NextPageURI)
			}
		}
	}
	return out, nil
}

// listedCall maps one listed call to the call.status event of its current status (the secret's
// company_numbers decide the external party, as for callbacks); ok is false for a call whose
// status is not a Call status or whose time is outside the window.
func listedCall(raw json.RawMessage, since, until time.Time, sec connector.Secret) (*canonical.Event, bool, error) {
	var c call
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, false, fmt.Errorf("twilio: list calls: malformed call: %v", err)
	}
	status := strings.ToLower(strings.TrimSpace(c.Status))
	if c.SID == "" || !(TerminalStatuses[status] || slices.Contains(LiveStatuses, status)) {
		return nil, false, nil
	}
	stamp := statusTime(c, TerminalStatuses[status])
	at, ok := parseTimestamp(stamp)
	if !ok || !connector.InWindow(at, since, until) {
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
	ev, err := mapCall(p, at, CompanyNumbers(sec))
	if err != nil {
		return nil, false, err
	}
	ev.PayloadHash = canonical.PayloadHash(raw)
	ev.Unmapped = nil // the list resource is not the callback: its extra members say nothing about the mapping
	return ev, true, nil
}

// statusTime returns when a listed call entered its status (RFC 2822, as Twilio lists it): an
// ended call's end_time, else date_updated; a live call's date_updated (its last change, the
// status change), else start_time, else date_created.
func statusTime(c call, ended bool) string {
	candidates := []*string{c.DateUpdated, c.StartTime, c.DateCreated}
	if ended {
		candidates = []*string{c.EndTime, c.DateUpdated}
	}
	for _, s := range candidates {
		if v := strings.TrimSpace(deref(s)); v != "" {
			return v
		}
	}
	return ""
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
