package calendly

import (
	"context"
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
	paths []string
	auth  []string
	extra map[string]string // path -> body served instead of the fixture
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.paths = append(f.paths, r.URL.Path+"?"+r.URL.RawQuery)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	body, ok := f.extra[r.URL.Path]
	f.mu.Unlock()
	if ok {
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
	return connector.Secret{Current: map[string]string{SecretAPIToken: "pat"}}
}

func TestListInvitees(t *testing.T) {
	f := &fake{}
	srv := httptest.NewServer(f)
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(24*time.Hour), listSecret(), connector.API{BaseURL: srv.URL + "/calendly"})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range evs {
		keys = append(keys, e.Key)
	}
	want := []string{
		"calendly:invitee.created:https://api.calendly.com/scheduled_events/FCDA5BHRWZQ6NTXW/invitees/DHFE2JQZ7KX4MNPA",
		"calendly:invitee.created:https://api.calendly.com/scheduled_events/HKQ7M2VXR4TZ8NBC/invitees/QW3RT8YUP2LKJ6HG",
	}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Fatalf("keys (-want +got):\n%s", diff)
	}
	if !strings.Contains(f.paths[0], "/users/me") || !strings.Contains(f.paths[1], "organization=https%3A%2F%2Fapi.calendly.com%2Forganizations%2FAAGDEC0DE0000001") ||
		!strings.Contains(f.paths[1], "min_start_time=2025-03-11T00%3A00%3A00Z") {
		t.Errorf("requests = %v", f.paths)
	}
	for _, a := range f.auth {
		if a != "Bearer pat" {
			t.Errorf("authorization %q", a)
		}
	}
	// An organization in the secret saves the /users/me call; a window after the bookings
	// finds nothing.
	f.paths = nil
	sec := listSecret()
	sec.Current[SecretOrganization] = "https://api.calendly.com/organizations/X"
	evs, err = New().List(context.Background(), since.Add(24*time.Hour), since.Add(48*time.Hour), sec, connector.API{BaseURL: srv.URL + "/calendly"})
	if err != nil || len(evs) != 0 || strings.Contains(f.paths[0], "/users/me") {
		t.Errorf("later window: %d events, %v, requests %v", len(evs), err, f.paths)
	}
}

// A listed invitee becomes exactly the event its webhook delivery maps to (same key, fields,
// activity, identities), only the payload hash differs.
func TestListedInviteeMatchesWebhook(t *testing.T) {
	srv := httptest.NewServer(&fake{})
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(24*time.Hour), listSecret(), connector.API{BaseURL: srv.URL + "/calendly"})
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile("../../../events/payloads/calendly.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New().Parse(&connector.Request{Body: body}, connector.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	hook, listed := p.Events[0], evs[0]
	if listed.PayloadHash == hook.PayloadHash {
		t.Error("payload hashes should differ (the rebuilt delivery is not the raw body)")
	}
	listed.PayloadHash = hook.PayloadHash
	if diff := cmp.Diff(hook, listed); diff != "" {
		t.Errorf("listed event differs from the webhook's (-webhook +listed):\n%s", diff)
	}
}

func TestListCanceledInvitee(t *testing.T) {
	canceled := `{"collection":[{"uri":"https://api.calendly.com/scheduled_events/E1/invitees/I1","email":"kim@example.com",
	"name":"Kim","status":"canceled","created_at":"2025-03-01T10:00:00Z","updated_at":"2025-03-11T09:00:00Z",
	"cancellation":{"canceled_by":"Kim","reason":"conflict","canceler_type":"invitee"}}],"pagination":{"next_page_token":null}}`
	events := `{"collection":[{"uri":"https://api.calendly.com/scheduled_events/E1","name":"Intro","start_time":"2025-03-12T10:00:00Z",
	"end_time":"2025-03-12T10:30:00Z","event_memberships":[]}],"pagination":{"next_page_token":null}}`
	srv := httptest.NewServer(&fake{extra: map[string]string{"/calendly/scheduled_events": events, "/calendly/scheduled_events/E1/invitees": canceled}})
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(24*time.Hour), listSecret(), connector.API{BaseURL: srv.URL + "/calendly"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Key != "calendly:invitee.canceled:https://api.calendly.com/scheduled_events/E1/invitees/I1" || evs[0].Activity.Status != "canceled" {
		t.Fatalf("events = %+v", evs)
	}
}

// A listed invitee that rescheduled, and one marked as a no-show, become the events their
// webhooks map to: the old meeting rescheduled and linked, the no-show on the invitee.
func TestListRescheduledAndNoShowInvitees(t *testing.T) {
	invitees := `{"collection":[
	{"uri":"https://api.calendly.com/scheduled_events/E1/invitees/I1","email":"kim@example.com","name":"Kim","status":"canceled",
	 "rescheduled":true,"old_invitee":null,"new_invitee":"https://api.calendly.com/scheduled_events/E2/invitees/I2","no_show":null,
	 "created_at":"2025-03-01T10:00:00Z","updated_at":"2025-03-11T09:00:00Z",
	 "cancellation":{"canceled_by":"Kim","reason":"conflict","canceler_type":"invitee"}},
	{"uri":"https://api.calendly.com/scheduled_events/E1/invitees/I3","email":"lee@example.com","name":"Lee","status":"active",
	 "rescheduled":false,"old_invitee":null,"new_invitee":null,
	 "no_show":{"uri":"https://api.calendly.com/invitee_no_shows/N1","created_at":"2025-03-11T11:00:00Z"},
	 "created_at":"2025-03-01T10:05:00Z","updated_at":"2025-03-01T10:05:00Z"}],"pagination":{"next_page_token":null}}`
	events := `{"collection":[{"uri":"https://api.calendly.com/scheduled_events/E1","name":"Intro","status":"active","start_time":"2025-03-11T10:00:00Z",
	"end_time":"2025-03-11T10:30:00Z","invitees_counter":{"total":2,"active":1,"limit":1},"event_memberships":[]}],"pagination":{"next_page_token":null}}`
	srv := httptest.NewServer(&fake{extra: map[string]string{"/calendly/scheduled_events": events, "/calendly/scheduled_events/E1/invitees": invitees}})
	defer srv.Close()
	since := time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	evs, err := New().List(context.Background(), since, since.Add(24*time.Hour), listSecret(), connector.API{BaseURL: srv.URL + "/calendly"})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ Key, Kind, Status, Participation, RescheduledTo string }
	var got []row
	for _, e := range evs {
		id := inviteeID(e.ExternalIDs["invitee_uri"])
		got = append(got, row{e.Key, string(e.Kind), e.Activity.Status, e.Activity.Attrs["invitee_status."+id], e.Activity.Attrs["rescheduled_to"]})
	}
	want := []row{
		{"calendly:invitee.canceled:https://api.calendly.com/scheduled_events/E1/invitees/I1", "meeting.scheduled", "rescheduled", "rescheduled", "meeting:https://api.calendly.com/scheduled_events/E2"},
		{"calendly:invitee_no_show.created:https://api.calendly.com/scheduled_events/E1/invitees/I3:https://api.calendly.com/invitee_no_shows/N1", "meeting.scheduled", "", "no_show", ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listed events (-want +got):\n%s", diff)
	}
}
