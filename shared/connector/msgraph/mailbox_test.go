package msgraph

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
)

// Graph names the mailbox by user id, as production notifications do.
const repID = "3f0b6c2e-8d4a-4e71-b5c9-2a7d1e9f4b60"

func guidItem(change, collection, id string) string {
	return fmt.Sprintf(`{"subscriptionId":"sub-g","subscriptionExpirationDateTime":"2026-03-05T10:00:00.0000000Z","changeType":%q,`+
		`"resource":"Users/%s/%s/%s","tenantId":"tenant-9","clientState":%q,`+
		`"resourceData":{"@odata.type":"#Microsoft.Graph.%s","@odata.id":"Users/%s/%s/%s","@odata.etag":"W/\"CQAAAB\"","id":%q}}`,
		change, repID, collection, id, state, strings.TrimSuffix(collection, "s"), repID, collection, id, id)
}

const repUser = `{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users(mail,userPrincipalName)/$entity",` +
	`"mail":"sam.rivera@example.net","userPrincipalName":"sam.rivera@example.net"}`

const sentByRep = `{
  "internetMessageId": "<sent-1@example.net>",
  "subject": "Proposal",
  "isDraft": false,
  "from": {"emailAddress": {"name": "Sam Rivera", "address": "Sam.Rivera@example.net"}},
  "toRecipients": [{"emailAddress": {"name": "Grace Hopper", "address": "grace@example.org"}}],
  "ccRecipients": [],
  "sentDateTime": "2026-03-02T11:00:00Z",
  "receivedDateTime": "2026-03-02T11:00:01Z",
  "conversationId": "conv-9"
}`

// A rep's sent mail in a mailbox named by GUID, with no internal domains configured, is
// email.sent to the external recipient; the rep is the actor, never the subject. Before, the
// GUID never matched an address, so the mail was email.received from the rep and the rep became
// the subject (a contact). The owner lookup is cached.
func TestHydrateMailboxByUserID(t *testing.T) {
	g := &graph{t: t, body: sentByRep, users: map[string]string{repID: repUser}}
	srv := g.server()
	defer srv.Close()
	c := New()
	api := connector.API{BaseURL: srv.URL + "/v1.0", Client: srv.Client()}
	for i := 0; i < 2; i++ {
		ev := thin(t, guidItem("created", "Messages", fmt.Sprintf("AAMkS%d=", i)))
		if err := c.Hydrate(context.Background(), &ev, sec, api); err != nil {
			t.Fatalf("Hydrate: %v", err)
		}
		if ev.Kind != canonical.KindEmailSent || ev.Activity.Direction != "outbound" {
			t.Errorf("kind/direction = %s/%s, want email.sent/outbound", ev.Kind, ev.Activity.Direction)
		}
		if got := ev.Subject.Emails; len(got) != 1 || got[0] != "grace@example.org" {
			t.Errorf("subject = %v, want only grace@example.org", got)
		}
		if ev.GroupKey != "email:grace@example.org" || ev.Fields["contact"]["email"] != "grace@example.org" {
			t.Errorf("group key %q, contact %v", ev.GroupKey, ev.Fields["contact"])
		}
		if ev.Actor == nil || ev.Actor.Email != "sam.rivera@example.net" {
			t.Errorf("actor = %+v, want the rep", ev.Actor)
		}
		if ev.Activity.Attrs["mailbox"] != "sam.rivera@example.net" {
			t.Errorf("mailbox attr = %q", ev.Activity.Attrs["mailbox"])
		}
		if err := ev.Validate(); err != nil {
			t.Error(err)
		}
	}
	if g.path != "/v1.0/users/"+repID+"/messages/AAMkS1=" {
		t.Errorf("item path = %q", g.path)
	}
	if g.lookups != 1 {
		t.Errorf("user lookups = %d, want 1 (cached)", g.lookups)
	}
}

// Mail the rep received in that mailbox is email.received from the external sender; the rep
// (a recipient) is not in the subject.
func TestHydrateReceivedInMailboxByUserID(t *testing.T) {
	body := strings.NewReplacer(`"Sam Rivera", "address": "Sam.Rivera@example.net"`, `"Grace Hopper", "address": "grace@example.org"`,
		`"Grace Hopper", "address": "grace@example.org"}}],`, `"Sam Rivera", "address": "sam.rivera@example.net"}}],`).Replace(sentByRep)
	g := &graph{t: t, body: body, users: map[string]string{repID: repUser}}
	srv := g.server()
	defer srv.Close()
	ev := thin(t, guidItem("created", "Messages", "AAMkR="))
	if err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()}); err != nil {
		t.Fatalf("Hydrate: %v", err)
	}
	if ev.Kind != canonical.KindEmailReceived || len(ev.Subject.Emails) != 1 || ev.Subject.Emails[0] != "grace@example.org" {
		t.Errorf("got %s with subject %v, want email.received about grace@example.org only", ev.Kind, ev.Subject.Emails)
	}
	if ev.Actor == nil || ev.Actor.ID != repID || ev.Actor.Email != "sam.rivera@example.net" {
		t.Errorf("actor = %+v", ev.Actor)
	}
}

// A draft is skipped: no event, a reason, and the worker never retries it.
func TestHydrateDraftIsSkipped(t *testing.T) {
	draft := strings.Replace(sentByRep, `"isDraft": false`, `"isDraft": true`, 1)
	g := &graph{t: t, body: draft, users: map[string]string{repID: repUser}}
	srv := g.server()
	defer srv.Close()
	ev := thin(t, guidItem("created", "Messages", "AAMkD="))
	err := New().Hydrate(context.Background(), &ev, sec, connector.API{BaseURL: srv.URL, Client: srv.Client()})
	if !errors.Is(err, connector.ErrSkipped) || !errors.Is(err, connector.ErrNotFound) || !strings.Contains(err.Error(), "draft") {
		t.Fatalf("Hydrate(draft): got %v, want a skip naming the draft", err)
	}
	if ev.Hydrate == nil || ev.Kind != canonical.KindNotification {
		t.Error("a skipped draft was filled in")
	}
	if !strings.Contains(g.sel, "isDraft") {
		t.Errorf("$select %q does not ask for isDraft", g.sel)
	}
}

const repEvent = `{
  "iCalUId": "040000008200E00074C5B7101A82E00800000000D0B4F1A2C3D4DB01000000000000000010000000A1B2C3D4",
  "subject": "Demo",
  "isCancelled": false,
  "organizer": {"emailAddress": {"name": "Sam Rivera", "address": "sam.rivera@example.net"}},
  "attendees": [{"type": "required", "status": {"response": "accepted", "time": "2026-03-02T10:00:00Z"},
                 "emailAddress": {"name": "Grace Hopper", "address": "grace@example.org"}}],
  "start": {"dateTime": "2026-03-10T15:00:00.0000000", "timeZone": "UTC"},
  "end": {"dateTime": "2026-03-10T15:30:00.0000000", "timeZone": "UTC"},
  "lastModifiedDateTime": "2026-03-03T09:00:00.0000000Z",
  "createdDateTime": "2026-03-02T10:00:00.0000000Z"
}`

// An organizer's cancellation reaches the organizer's mailbox as a deleted notification for the
// event (moved to Deleted Items, still readable by its immutable id): a canceled meeting keyed
// by iCalUId, so it lands on the same activity as the scheduled one. Before, a deleted event was
// a not-found error and the meeting stayed scheduled.
func TestHydrateOrganizerCancellation(t *testing.T) {
	g := &graph{t: t, body: repEvent, users: map[string]string{repID: repUser}}
	srv := g.server()
	defer srv.Close()
	api := connector.API{BaseURL: srv.URL, Client: srv.Client()}
	for _, c := range []struct {
		change, body string
		want         canonical.Kind
	}{
		{"created", repEvent, canonical.KindMeetingScheduled},
		{"deleted", repEvent, canonical.KindMeetingCanceled},
		{"updated", strings.Replace(repEvent, `"isCancelled": false`, `"isCancelled": true`, 1), canonical.KindMeetingCanceled},
	} {
		g.body = c.body
		ev := thin(t, guidItem(c.change, "Events", "AAMkE="))
		if err := New().Hydrate(context.Background(), &ev, sec, api); err != nil {
			t.Fatalf("%s: Hydrate: %v", c.change, err)
		}
		if ev.Kind != c.want || ev.Activity.ID != "meeting:040000008200E00074C5B7101A82E00800000000D0B4F1A2C3D4DB01000000000000000010000000A1B2C3D4" {
			t.Errorf("%s: got %s on %s, want %s on the iCalUId", c.change, ev.Kind, ev.Activity.ID, c.want)
		}
		if c.want == canonical.KindMeetingCanceled && ev.Activity.Status != "canceled" {
			t.Errorf("%s: status %q", c.change, ev.Activity.Status)
		}
		if len(ev.Subject.Emails) != 1 || ev.Subject.Emails[0] != "grace@example.org" {
			t.Errorf("%s: subject %v", c.change, ev.Subject.Emails)
		}
	}
}
