package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/tools/localcloud"
)

// The mailbox of the Graph fixtures in events/vendor/msgraph: Graph names it by user id.
const (
	repUserID   = "3f0b6c2e-8d4a-4e71-b5c9-2a7d1e9f4b60"
	repAddress  = "sam.rivera@example.net"
	sentMsgID   = "AAMkADM0ZGRhMjdjLTA5NjUtNGMzYi1iNzM1LTk5NmJmYzk4NzVlMABGAAAAAADG8oR0pIpVQq3nAnj6_dKpBwCpOqNkdDOZSLNdY9hRCD-VAAAAAAEJAACpOqNkdDOZSLNdY9hRCD-VAAAP5FfSAAA="
	draftMsgID  = "AAMkADM0ZGRhMjdjLTA5NjUtNGMzYi1iNzM1LTk5NmJmYzk4NzVlMABGAAAAAADG8oR0pIpVQq3nAnj6_dKpBwCpOqNkdDOZSLNdY9hRCD-VAAAAAAEPAACpOqNkdDOZSLNdY9hRCD-VAAAP5FfTAAA="
	meetingID   = "AAMkADM0ZGRhMjdjLTA5NjUtNGMzYi1iNzM1LTk5NmJmYzk4NzVlMABGAAAAAADG8oR0pIpVQq3nAnj6_dKpBwCpOqNkdDOZSLNdY9hRCD-VAAAAAAENAACpOqNkdDOZSLNdY9hRCD-VAAAP5FfUAAA="
	sentEmailID = "email:by5pr11mb4180a1b2c3d4e5f60718293a4b5c6d7e@by5pr11mb4180.namprd11.prod.outlook.com"
	meetingAct  = "meeting:040000008200E00074C5B7101A82E00800000000E2A3B4C5D6E7DB01000000000000000010000000F1E2D3C4B5A69788"
	graphSub    = "9c1d2e3f-4a5b-4c6d-8e7f-a0b1c2d3e4f5"
)

func payload(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../events/payloads", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// graphNotification is one basic Graph notification (no id) for a resource in the rep's
// mailbox, as Graph sends it; the stack signs it with the dev clientState.
func graphNotification(change, collection, itemID, etag string) (body []byte, key string) {
	odataType := map[string]string{"Messages": "#Microsoft.Graph.Message", "Events": "#Microsoft.Graph.Event"}[collection]
	resource := "Users/" + repUserID + "/" + collection + "/" + itemID
	etagJSON, _ := json.Marshal(etag)
	body = []byte(fmt.Sprintf(`{"value":[{"subscriptionId":%q,"subscriptionExpirationDateTime":"2025-03-15T09:00:00.0000000+00:00",`+
		`"changeType":%q,"resource":%q,"resourceData":{"@odata.type":%q,"@odata.id":%q,"@odata.etag":%s,"id":%q},`+
		`"clientState":"x","tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95"}]}`,
		graphSub, change, resource, odataType, resource, etagJSON, itemID))
	return body, "msgraph:" + graphSub + ":" + change + ":" + resource + ":" + etag
}

// storedQuarantine reads every quarantined object of the stack.
func (s *testStack) storedQuarantine() map[string]ingest.Quarantined {
	s.t.Helper()
	client := s3.NewFromConfig(s.AWS, func(o *s3.Options) { o.UsePathStyle = true })
	out := map[string]ingest.Quarantined{}
	for _, key := range s.quarantined() {
		obj, err := client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(s.Stack.Physical["QuarantineBucket"].Ref), Key: aws.String(key)})
		if err != nil {
			s.t.Fatal(err)
		}
		b, _ := io.ReadAll(obj.Body)
		obj.Body.Close()
		var q ingest.Quarantined
		if err := json.Unmarshal(b, &q); err != nil {
			s.t.Fatalf("%s: %v", key, err)
		}
		out[key] = q
	}
	return out
}

// waitLedger polls `crmsync events get <key> --json` until the event is recorded.
func (s *testStack) waitLedger(key string) ledgerEntry {
	s.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		out, err := s.crmsync("events", "get", key, "--json")
		if err == nil {
			var e ledgerEntry
			if err := json.Unmarshal([]byte(out), &e); err != nil {
				s.t.Fatalf("events get printed %q: %v", out, err)
			}
			return e
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no ledger entry for %s: %v\nstack logs (tail):\n%s", key, err, lastBytes(s.logs.String(), 4000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fakeAnswer makes the vendor fake answer a GET of vendorPath with body.
func (s *testStack) fakeAnswer(vendorPath, body string) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, s.publicBase()+"/_vendor/"+vendorPath, strings.NewReader(body))
	req.Header.Set(localcloud.FakeStatusHeader, "200")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		s.t.Fatalf("PUT fake %s: %d", vendorPath, resp.StatusCode)
	}
}

func hasKind(e *timelineEntry, kind canonical.Kind) bool {
	for _, u := range e.Updates {
		if u.Kind == kind {
			return true
		}
	}
	return false
}

// Mixed deliveries, end to end with the worker: a Graph delivery batching a rep's sent mail
// (mailbox named by user id) with a contact notification, an unknown change type and a lifecycle
// notification, and a Meta delivery with a valid and a malformed leadgen change, answer 2xx; the
// valid items reach their correspondents' timelines and only the three bad items are
// quarantined, each alone. Before, each delivery was quarantined whole (202) and nothing reached
// a timeline.
func TestWorkerMixedDeliveriesQuarantineOnlyTheBadItems(t *testing.T) {
	s := startStack(t, true)
	if status, body := s.post(s.signed("msgraph", payload(t, "msgraph-batch.json"), "application/json")); status != 202 {
		t.Fatalf("Graph mixed delivery = %d %s, want 202", status, body)
	}
	if status, body := s.post(s.signed("meta-leads", payload(t, "meta-leads-batch.json"), "application/json")); status != 200 {
		t.Errorf("Meta mixed delivery = %d %s, want 200", status, body)
	}
	stored := s.storedQuarantine()
	byConnector := map[string][]ingest.Quarantined{}
	for key, q := range stored {
		if q.Item == nil || q.Delivery == "" {
			t.Errorf("%s is not a single item of a delivery: %+v", key, q)
		}
		byConnector[q.Connector] = append(byConnector[q.Connector], q)
	}
	if len(stored) != 3 || len(byConnector["msgraph"]) != 2 || len(byConnector["meta-leads"]) != 1 {
		t.Fatalf("quarantine holds %d objects (%v), want 2 Graph items and 1 Meta change", len(stored), s.quarantined())
	}
	for _, q := range byConnector["msgraph"] {
		var c struct {
			Value []json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(q.Body, &c); err != nil || len(c.Value) != 1 {
			t.Errorf("Graph item stored as %s, want a collection of one", q.Body)
		}
		if !strings.Contains(q.Reason, "neither a message nor an event") && !strings.Contains(q.Reason, "unsupported changeType") {
			t.Errorf("Graph item reason %q", q.Reason)
		}
	}
	if q := byConnector["meta-leads"][0]; *q.Item != 1 || !strings.Contains(q.Reason, "no leadgen_id") {
		t.Errorf("Meta item %v: %q", *q.Item, q.Reason)
	}
	// The valid Graph item: the rep's sent mail on Margaret's timeline.
	s.waitContact(func(d *contactDoc) error {
		if d.activity(sentEmailID) == nil {
			return errors.New("sent mail not on the timeline yet")
		}
		return nil
	}, "--email", "margaret@example.com")
	// The valid Meta change: Dorothy's lead.
	s.waitContact(func(d *contactDoc) error {
		if d.activity("form:918273645501240") == nil {
			return errors.New("lead not on the timeline yet")
		}
		return nil
	}, "--email", "dorothy@example.com")
}

// A rep's sent mail, in a mailbox Graph names by user id and with no internal domains
// configured, is email.sent on the external recipient's timeline and makes no contact of the
// rep. Before, the user id never matched the sender, so the mail was email.received from the
// rep, who became a contact.
func TestWorkerRepSentMailInMailboxNamedByUserID(t *testing.T) {
	s := startStack(t, true)
	body, _ := graphNotification("created", "Messages", sentMsgID, `W/"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHg"`)
	if status, resp := s.post(s.signed("msgraph", body, "application/json")); status != 202 {
		t.Fatalf("notification = %d %s, want 202", status, resp)
	}
	margaret := s.waitContact(func(d *contactDoc) error {
		e := d.activity(sentEmailID)
		if e == nil {
			return errors.New("sent mail not on the timeline yet")
		}
		if e.Direction != "outbound" || !hasKind(e, canonical.KindEmailSent) {
			return fmt.Errorf("mail direction %q, updates %+v; want outbound email.sent", e.Direction, e.Updates)
		}
		return nil
	}, "--email", "margaret@example.com")
	if c := margaret.activity(sentEmailID).Associations.Contact; c == nil || c.ID != margaret.Contact.ID {
		t.Errorf("sent mail association = %+v, want Margaret", c)
	}
	if rep, err := s.contact("--email", repAddress); err != nil || rep != nil {
		t.Errorf("the rep is a contact (%v, %v); a rep's own mailbox must never make one", rep, err)
	}
}

// A draft creates nothing; its notification is recorded with the reason. Before, the draft was
// hydrated like sent mail and its recipient became a contact.
func TestWorkerGraphDraftCreatesNothing(t *testing.T) {
	s := startStack(t, true)
	draft, key := graphNotification("created", "Messages", draftMsgID, `W/"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHh"`)
	if status, body := s.post(s.signed("msgraph", draft, "application/json")); status != 202 {
		t.Fatalf("draft notification = %d %s", status, body)
	}
	if e := s.waitLedger(key); !strings.Contains(e.Reason, "draft") || e.ContactID != "" || e.ActivityID != "" {
		t.Errorf("draft ledger entry = %+v, want no contact or activity and a reason naming the draft", e)
	}
	for _, who := range []string{"hedy@example.com", repAddress} {
		if d, err := s.contact("--email", who); err != nil || d != nil {
			t.Errorf("%s is a contact after a draft (%v, %v)", who, d, err)
		}
	}
}

// The rep schedules a meeting with Katherine, then cancels it as organizer: Graph notifies the
// organizer's mailbox that the event was deleted (moved to Deleted Items, still readable by its
// immutable id, now cancelled). The meeting on Katherine's timeline is canceled, on the same
// activity. Before, a deleted event was a not-found error and the meeting stayed scheduled.
func TestWorkerOrganizerCancellationCancelsTheMeeting(t *testing.T) {
	s := startStack(t, true)
	created, _ := graphNotification("created", "Events", meetingID, `W/"DwAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHi"`)
	if status, body := s.post(s.signed("msgraph", created, "application/json")); status != 202 {
		t.Fatalf("event created = %d %s", status, body)
	}
	s.waitContact(func(d *contactDoc) error {
		if m := d.activity(meetingAct); m == nil || m.Status != "scheduled" {
			return fmt.Errorf("meeting = %+v, want scheduled", m)
		}
		return nil
	}, "--email", "katherine@example.com")
	fixture, err := os.ReadFile(filepath.Join("../../events/vendor/msgraph/users", repUserID, "events", meetingID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	canceled := strings.NewReplacer(`"isCancelled": false`, `"isCancelled": true`,
		`"lastModifiedDateTime": "2025-03-12T10:05:00.0000000Z"`, `"lastModifiedDateTime": "2025-03-13T08:00:00.0000000Z"`).Replace(string(fixture))
	s.fakeAnswer("msgraph/users/"+repUserID+"/events/"+meetingID, canceled)
	deleted, _ := graphNotification("deleted", "Events", meetingID, `W/"DwAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHl"`)
	if status, body := s.post(s.signed("msgraph", deleted, "application/json")); status != 202 {
		t.Fatalf("event deleted = %d %s", status, body)
	}
	katherine := s.waitContact(func(d *contactDoc) error {
		m := d.activity(meetingAct)
		if m == nil || (m.Status != "canceled" && !m.Canceled) {
			return fmt.Errorf("meeting = %+v, want canceled", m)
		}
		return nil
	}, "--email", "katherine@example.com")
	if m := katherine.activity(meetingAct); !hasKind(m, canonical.KindMeetingScheduled) || !hasKind(m, canonical.KindMeetingCanceled) {
		t.Errorf("meeting updates %+v: want the scheduling and the cancellation on one activity", m.Updates)
	}
	if rep, err := s.contact("--email", repAddress); err != nil || rep != nil {
		t.Errorf("the organizer (the rep) became a contact: %v, %v", rep, err)
	}
}
