package typeform

import (
	"context"
	"fmt"
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

type fake struct {
	mu    sync.Mutex
	reqs  []string
	extra func(r *http.Request) (string, bool)
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r.URL.Path+"?"+r.URL.RawQuery)
	f.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer tf" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if f.extra != nil {
		if b, ok := f.extra(r); ok {
			_, _ = w.Write([]byte(b))
			return
		}
	}
	b, err := os.ReadFile(filepath.Join(fixtures, filepath.FromSlash(strings.TrimPrefix(path.Clean(r.URL.Path), "/"))+".json"))
	if err != nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	_, _ = w.Write(b)
}

func listSecret() connector.Secret {
	return connector.Secret{Current: map[string]string{SecretAPIToken: "tf"}}
}

func TestListResponses(t *testing.T) {
	f := &fake{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(24*time.Hour), listSecret(), connector.API{BaseURL: srv.URL + "/typeform"})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range evs {
		keys = append(keys, e.Key)
	}
	want := []string{"typeform:response:a3a12ec67a1365927098a606107fac15", "typeform:response:7c1d9e4b2f8a6035e1b7c9d2a4f6e8b0"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Fatalf("keys (-want +got):\n%s", diff)
	}
	if len(f.reqs) != 2 || !strings.HasPrefix(f.reqs[0], "/typeform/forms?") || !strings.Contains(f.reqs[1], "since=2025-03-11T00%3A00%3A00Z") ||
		!strings.Contains(f.reqs[1], "completed=true") {
		t.Errorf("requests = %v", f.reqs)
	}
	// Form ids from the secret: the form itself is read for its title.
	f.reqs = nil
	sec := listSecret()
	sec.Current[SecretFormIDs] = "lT4Z3j"
	evs, err = New().List(context.Background(), since, time.Date(2025, 3, 11, 16, 0, 0, 0, time.UTC), sec, connector.API{BaseURL: srv.URL + "/typeform"})
	if err != nil || len(evs) != 1 || evs[0].Activity.Subject != "Request a demo" || f.reqs[0] != "/typeform/forms/lT4Z3j?" {
		t.Errorf("narrow window with form ids: %+v, %v, %v", evs, err, f.reqs)
	}
}

// A listed response maps to the webhook's fields, identities and activity; its key is the
// response token's (the list has no event_id).
func TestListedResponseMatchesWebhook(t *testing.T) {
	srv := httptest.NewServer(&fake{})
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(24*time.Hour), listSecret(), connector.API{BaseURL: srv.URL + "/typeform"})
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile("../../../events/payloads/typeform.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New().Parse(&connector.Request{Body: body}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	hook, listed := p.Events[0], evs[0]
	if listed.Key != ListedKeyPrefix+hook.ExternalIDs["response_token"] {
		t.Errorf("listed key %s", listed.Key)
	}
	delete(hook.ExternalIDs, "event_id")
	hook.Key, hook.PayloadHash = listed.Key, listed.PayloadHash
	if diff := cmp.Diff(hook, listed); diff != "" {
		t.Errorf("listed event differs from the webhook's (-webhook +listed):\n%s", diff)
	}
}

// Full pages are followed with before=<last token>; a fake that ignores the cursor cannot loop.
func TestListPagesWithBefore(t *testing.T) {
	item := func(i int) string {
		return fmt.Sprintf(`{"token":"t%04d","response_type":"completed","submitted_at":"2025-03-11T10:00:00Z","answers":[{"type":"email","email":"p%d@example.com","field":{"id":"e","type":"email","ref":"email"}}]}`, i, i)
	}
	var full []string
	for i := range listPageSize {
		full = append(full, item(i))
	}
	calls := 0
	f := &fake{extra: func(r *http.Request) (string, bool) {
		if r.URL.Path == "/typeform/forms/F" {
			return `{"id":"F","title":"Paged"}`, true
		}
		if r.URL.Path != "/typeform/forms/F/responses" {
			return "", false
		}
		calls++
		if r.URL.Query().Get("before") == "" {
			return `{"items":[` + strings.Join(full, ",") + `]}`, true
		}
		return `{"items":[` + item(5000) + `]}`, true
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	sec := listSecret()
	sec.Current[SecretFormIDs] = "F"
	evs, err := New().List(context.Background(), time.Time{}, time.Time{}, sec, connector.API{BaseURL: srv.URL + "/typeform"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != listPageSize+1 || calls != 2 {
		t.Errorf("%d events in %d calls", len(evs), calls)
	}
}
