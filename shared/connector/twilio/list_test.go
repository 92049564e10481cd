package twilio

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/connector"
)

const fixtures = "../../../events/vendor"

// fakeTwilio serves the repo's vendor fixtures the way localcloud.VendorFakes does and records
// every request.
type fakeTwilio struct {
	mu     sync.Mutex
	reqs   []*http.Request
	status int
}

func (f *fakeTwilio) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	status := f.status
	f.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	b, err := os.ReadFile(filepath.Join(fixtures, filepath.FromSlash(strings.TrimPrefix(path.Clean(r.URL.Path), "/"))+".json"))
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	_, _ = w.Write(b)
}

func listSecret() connector.Secret {
	return connector.Secret{Current: map[string]string{SecretAccountSID: "ACdec0de00000000000000000000000001", SecretAuthToken: "tok"}}
}

func TestListTerminalCalls(t *testing.T) {
	f := &fakeTwilio{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(24*time.Hour), listSecret(), connector.API{BaseURL: srv.URL + "/twilio"})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range evs {
		keys = append(keys, e.Key)
		if err := e.Validate(); err != nil {
			t.Error(err)
		}
	}
	want := []string{"twilio:call:CA5e1f0a2b3c4d5e6f708192a3b4c5d6e7:completed", "twilio:call:CA9b8a7c6d5e4f30211f2e3d4c5b6a7980:completed"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Fatalf("keys (-want +got):\n%s", diff)
	}
	out := evs[1]
	if out.GroupKey != "phone:+12125550147" || out.Activity.Direction != "outbound" || out.Activity.DurationSec != 443 ||
		out.Activity.Attrs["answered_by"] != "human" || !out.OccurredAt.Equal(time.Date(2025, 3, 11, 17, 27, 39, 0, time.UTC)) ||
		out.Fields["contact"]["last_call_status"] != "completed" {
		t.Errorf("outbound call = %+v %+v", out, out.Activity)
	}
	r := f.reqs[0]
	if u, p, ok := r.BasicAuth(); !ok || u != "ACdec0de00000000000000000000000001" || p != "tok" {
		t.Errorf("basic auth = %q %q %v", u, p, ok)
	}
	q, _ := url.ParseQuery(r.URL.RawQuery)
	if q.Get("EndTime>") != "2025-03-10" || q.Get("EndTime<") != "2025-03-13" {
		t.Errorf("query = %v", q)
	}
	// A window that ends before the second call leaves it out.
	evs, err = New().List(context.Background(), since, time.Date(2025, 3, 11, 17, 0, 0, 0, time.UTC), listSecret(), connector.API{BaseURL: srv.URL + "/twilio"})
	if err != nil || len(evs) != 1 {
		t.Errorf("narrow window: %d events, %v", len(evs), err)
	}
}

// A listed call maps to the same fields and activity as the terminal callback that reports it;
// only the key (no SequenceNumber) and the payload hash differ.
func TestListedCallMatchesCallback(t *testing.T) {
	srv := httptest.NewServer(&fakeTwilio{})
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(24*time.Hour), listSecret(), connector.API{BaseURL: srv.URL + "/twilio"})
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile("../../../events/payloads/twilio.form")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New().Parse(&connector.Request{Body: body, Headers: map[string]string{"content-type": "application/x-www-form-urlencoded"}}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	hook, listed := p.Events[0], evs[0]
	if hook.Key == listed.Key || hook.Activity.ID != listed.Activity.ID || hook.Activity.Status != listed.Activity.Status {
		t.Fatalf("keys %s / %s, activities %+v / %+v", hook.Key, listed.Key, hook.Activity, listed.Activity)
	}
	if diff := cmp.Diff(hook.Fields, listed.Fields); diff != "" {
		t.Errorf("fields (-callback +listed):\n%s", diff)
	}
	if hook.GroupKey != listed.GroupKey || !hook.OccurredAt.Equal(listed.OccurredAt) || hook.Activity.DurationSec != listed.Activity.DurationSec {
		t.Errorf("callback %+v vs listed %+v", hook, listed)
	}
}

func TestListErrors(t *testing.T) {
	f := &fakeTwilio{status: http.StatusServiceUnavailable}
	srv := httptest.NewServer(f)
	defer srv.Close()
	api := connector.API{BaseURL: srv.URL + "/twilio"}
	if _, err := New().List(context.Background(), time.Time{}, time.Time{}, listSecret(), api); !errors.Is(err, connector.ErrTransient) {
		t.Errorf("503: %v, want transient", err)
	}
	f.status = http.StatusUnauthorized
	_, err := New().List(context.Background(), time.Time{}, time.Time{}, listSecret(), api)
	if err == nil || errors.Is(err, connector.ErrTransient) || strings.Contains(err.Error(), "tok") {
		t.Errorf("401: %v", err)
	}
	if _, err := New().List(context.Background(), time.Time{}, time.Time{}, connector.Secret{}, api); err == nil {
		t.Error("no credentials: no error")
	}
}

// twilioCalls answers the Calls list the way Twilio filters it: Status keeps the calls in that
// one status; EndTime> and EndTime< (YYYY-MM-DD, on or after / on or before midnight) keep the
// calls whose end_time is in range, so a call that has not ended never matches a date filter.
// The calls come from a fixture of events/vendor.
type twilioCalls struct {
	t       *testing.T
	fixture string
	mu      sync.Mutex
	queries []url.Values
}

func (f *twilioCalls) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.mu.Unlock()
	b, err := os.ReadFile(f.fixture)
	if err != nil {
		f.t.Error(err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var page map[string]any
	if err := json.Unmarshal(b, &page); err != nil {
		f.t.Error(err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	midnight := func(name string) (time.Time, bool) {
		d, err := time.Parse("2006-01-02", q.Get(name))
		return d, err == nil
	}
	var kept []any
	for _, c := range page["calls"].([]any) {
		call := c.(map[string]any)
		if s := q.Get("Status"); s != "" && call["status"] != s {
			continue
		}
		end, _ := call["end_time"].(string)
		ended, endOK := parseTimestamp(end)
		if after, ok := midnight("EndTime>"); ok && (!endOK || ended.Before(after)) {
			continue
		}
		if before, ok := midnight("EndTime<"); ok && (!endOK || ended.After(before)) {
			continue
		}
		kept = append(kept, call)
	}
	page["calls"] = kept
	_ = json.NewEncoder(w).Encode(page)
}

// The lister recovers a call in every status Twilio's Calls list reports, not only the terminal
// ones: ended calls through the EndTime filter, live calls (which have no end_time, and queued
// ones no start_time) by asking for each live status.
func TestListRecoversEveryStatus(t *testing.T) {
	const account = "ACdec0de00000000000000000000000002"
	f := &twilioCalls{t: t, fixture: filepath.Join(fixtures, "twilio/2010-04-01/Accounts", account, "Calls.json.json")}
	srv := httptest.NewServer(f)
	defer srv.Close()
	sec := connector.Secret{Current: map[string]string{SecretAccountSID: account, SecretAuthToken: "tok", SecretCompanyNumbers: "+14155550100"}}
	day := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	at := func(h, m, s int) time.Time {
		return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(s)*time.Second)
	}

	type call struct {
		Key, Status, Phone string
		At                 time.Time
		DurationSec        int
	}
	all := []call{
		{"twilio:call:CA10000000000000000000000000000001:completed", "completed", "+14155550131", at(9, 15, 40), 338},
		{"twilio:call:CA10000000000000000000000000000002:busy", "busy", "+12125550132", at(10, 2, 3), 0},
		{"twilio:call:CA10000000000000000000000000000003:failed", "failed", "+12125550133", at(10, 30, 12), 0},
		{"twilio:call:CA10000000000000000000000000000004:no-answer", "no-answer", "+12125550134", at(11, 0, 31), 0},
		{"twilio:call:CA10000000000000000000000000000005:canceled", "canceled", "+12125550135", at(11, 20, 7), 0},
		{"twilio:call:CA10000000000000000000000000000006:in-progress", "in-progress", "+14155550136", at(16, 40, 9), 0},
		{"twilio:call:CA10000000000000000000000000000007:ringing", "ringing", "+12125550137", at(16, 45, 2), 0},
		{"twilio:call:CA10000000000000000000000000000008:queued", "queued", "+12125550138", at(16, 50, 0), 0},
	}
	tests := []struct {
		name         string
		since, until time.Time
		want         []call
	}{
		{"the whole day: every status", day, day.Add(24 * time.Hour), all},
		{"the morning: the calls that ended then", day, at(12, 0, 0), all[:5]},
		{"the late afternoon: the live calls, by when they entered their status", at(16, 0, 0), at(17, 0, 0), all[5:]},
		{"up to the in-progress call's answer", at(16, 0, 0), at(16, 42, 0), all[5:6]},
		{"the next day: nothing", day.Add(24 * time.Hour), day.Add(48 * time.Hour), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := New().List(context.Background(), tt.since, tt.until, sec, connector.API{BaseURL: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			var got []call
			for _, e := range evs {
				if err := e.Validate(); err != nil {
					t.Error(err)
				}
				got = append(got, call{e.Key, e.Activity.Status, strings.Join(e.Subject.Phones, ","), e.OccurredAt, e.Activity.DurationSec})
				if e.Fields["contact"]["last_call_status"] != e.Activity.Status {
					t.Errorf("%s: last_call_status %q", e.Key, e.Fields["contact"]["last_call_status"])
				}
			}
			sort.Slice(got, func(i, j int) bool { return got[i].At.Before(got[j].At) })
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("listed calls (-want +got):\n%s", diff)
			}
		})
	}

	// One query for ended calls (no Status: any), one per live status (no date filter).
	f.mu.Lock()
	defer f.mu.Unlock()
	var asked []string
	for _, q := range f.queries[:4] {
		asked = append(asked, "Status="+q.Get("Status")+" EndTime>="+q.Get("EndTime>")+" EndTime<="+q.Get("EndTime<"))
	}
	want := []string{"Status= EndTime>=2025-03-10 EndTime<=2025-03-13", "Status=queued EndTime>= EndTime<=",
		"Status=ringing EndTime>= EndTime<=", "Status=in-progress EndTime>= EndTime<="}
	if diff := cmp.Diff(want, asked); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
}
