package mailgun

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/connector"
)

const fixtures = "../../../events/vendor"

// fakeMailgun serves the repo's vendor fixtures the way localcloud.VendorFakes does (the path
// names the fixture; the query is ignored) and records every request.
type fakeMailgun struct {
	mu     sync.Mutex
	reqs   []*http.Request
	status int
	body   string // answered instead of the fixture when set
}

func (f *fakeMailgun) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	status, body := f.status, f.body
	f.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	if body != "" {
		_, _ = w.Write([]byte(body))
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
	return connector.Secret{Current: map[string]string{SecretSigningKey: "s", SecretAPIKey: "key-dev", SecretDomain: "mg.example.net"}}
}

func TestListEvents(t *testing.T) {
	f := &fakeMailgun{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	until := since.Add(72 * time.Hour)
	evs, err := New().List(context.Background(), since, until, listSecret(), connector.API{BaseURL: srv.URL + "/mailgun"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Key+" "+e.Activity.Status)
		if err := e.Validate(); err != nil {
			t.Error(err)
		}
	}
	// The mailing-list event has no Message-Id: skipped, as its webhook would be quarantined.
	want := []string{
		"mailgun:Wd2uS7rKPjJ0lY9oV1wQbZ accepted",
		"mailgun:Yq3vT8sLQkK1mZ0pW2xRcA " + StatusTemporaryFail,
		"mailgun:CPgfbmQMTCKtHW6uIWtuVe delivered",
		"mailgun:Ta5wX2yPUoO6qD4tA7bVgE opened",
		"mailgun:Kp7xV0uNSmM3oB2rY4zTeC unsubscribed",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("listed (-want +got):\n%s", diff)
	}
	// A listed event is the webhook's event: same key, activity and fields as the sample delivery.
	hook := parseFile(t, "mailgun-unsubscribed.json")
	if diff := cmp.Diff(hook.Fields, evs[4].Fields); diff != "" {
		t.Errorf("listed unsubscribe fields (-webhook +listed):\n%s", diff)
	}
	if evs[2].Activity.ID != parseFile(t, "mailgun.json").Activity.ID {
		t.Errorf("listed delivery activity %s", evs[2].Activity.ID)
	}

	if len(f.reqs) != 3 {
		t.Fatalf("%d requests, want 3 (two pages, then the empty page that ends the listing)", len(f.reqs))
	}
	first := f.reqs[0]
	if u, p, ok := first.BasicAuth(); !ok || u != "api" || p != "key-dev" {
		t.Errorf("auth = %q %q %v, want api:key-dev", u, p, ok)
	}
	if first.URL.Path != "/mailgun/v3/mg.example.net/events" {
		t.Errorf("first page path %s", first.URL.Path)
	}
	q := first.URL.Query()
	if q.Get("begin") != "1741651200" || q.Get("end") != "1741910400" || q.Get("ascending") != "yes" || q.Get("limit") != "300" {
		t.Errorf("first page query %v", q)
	}
	// paging.next names api.mailgun.net: it is followed under the configured base, never elsewhere.
	if p := f.reqs[1].URL.Path; !strings.HasPrefix(p, "/mailgun/v3/mg.example.net/events/") {
		t.Errorf("second page path %s", p)
	}
}

func TestListWindow(t *testing.T) {
	srv := httptest.NewServer(&fakeMailgun{})
	defer srv.Close()
	// Only the delivery (15:45:03) and the open (16:45:02) lie inside [15:45, 17:00) on 11 March.
	since := time.Date(2025, 3, 11, 15, 45, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(75*time.Minute), listSecret(), connector.API{BaseURL: srv.URL + "/mailgun"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Key)
	}
	if diff := cmp.Diff([]string{"mailgun:CPgfbmQMTCKtHW6uIWtuVe", "mailgun:Ta5wX2yPUoO6qD4tA7bVgE"}, got); diff != "" {
		t.Errorf("listed (-want +got):\n%s", diff)
	}
}

func TestListErrors(t *testing.T) {
	tests := []struct {
		name    string
		fake    *fakeMailgun
		sec     connector.Secret
		want    error
		wantMsg string
	}{
		{name: "no api key", fake: &fakeMailgun{}, sec: connector.Secret{Current: map[string]string{SecretDomain: "mg.example.net"}},
			wantMsg: "the secret needs api_key and domain"},
		{name: "no domain", fake: &fakeMailgun{}, sec: connector.Secret{Current: map[string]string{SecretAPIKey: "k"}},
			wantMsg: "the secret needs api_key and domain"},
		{name: "vendor outage", fake: &fakeMailgun{status: 503}, sec: listSecret(), want: connector.ErrTransient},
		{name: "rate limited", fake: &fakeMailgun{status: 429}, sec: listSecret(), want: connector.ErrTransient},
		{name: "unknown domain", fake: &fakeMailgun{status: 404}, sec: listSecret(), want: connector.ErrNotFound},
		{name: "wrong key", fake: &fakeMailgun{status: 401}, sec: listSecret(), wantMsg: "status 401"},
		{name: "not an events page", fake: &fakeMailgun{body: `[1]`}, sec: listSecret(), wantMsg: "not an events list"},
		{name: "paging leads elsewhere", fake: &fakeMailgun{body: `{"items":[{"id":"x"}],"paging":{"next":"https://evil.example/steal"}}`},
			sec: listSecret(), wantMsg: "paging.next is not a page of /v3/mg.example.net/events"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.fake)
			defer srv.Close()
			_, err := New().List(context.Background(), time.Unix(1741651200, 0), time.Unix(1741910400, 0), tt.sec, connector.API{BaseURL: srv.URL})
			if err == nil {
				t.Fatal("List() = nil error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("List() = %v, want %v", err, tt.want)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("List() = %v, want it to say %q", err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "key-dev") {
				t.Errorf("List() error names the API key: %v", err)
			}
		})
	}
}

// A vendor that keeps answering the same next page cannot keep a run busy.
func TestListStopsOnARepeatedPage(t *testing.T) {
	f := &fakeMailgun{body: `{"items":[{"id":"E1","event":"delivered","timestamp":1741707903.2,"recipient":"grace@example.org",` +
		`"message":{"headers":{"message-id":"m@x"}}}],"paging":{"next":"https://api.mailgun.net/v3/mg.example.net/events/same"}}`}
	srv := httptest.NewServer(f)
	defer srv.Close()
	evs, err := New().List(context.Background(), time.Time{}, time.Time{}, listSecret(), connector.API{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.reqs) != 2 || len(evs) != 2 {
		t.Errorf("%d requests, %d events; want 2 and 2 (the repeated page is not fetched again)", len(f.reqs), len(evs))
	}
}
