package twilio

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
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
