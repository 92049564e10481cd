package worker

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/tools/ddbfixture"
)

// tablesV1 holds every item the worker at 860bae1 — the code deployed when data model v2 (#14)
// began — wrote for six events: a CRM change creating Dan with his account and deal d-1, two
// status callbacks of his call CA1, two Typeform leads of Ann, and a Mailgun event about Zoe,
// who was no contact yet (the email parked under the legacy Unassociated key). Its items are in
// the v1 shapes: plain profile fields and documents, one audit item per field, no pending
// markers on identities. Regenerate it only from that commit.
var tablesV1 = filepath.Join("..", "..", "tools", "ddbfixture", "testdata", "tables-v1.json")

// loadV1 provisions fresh tables from today's template and fills them with tablesV1.
func loadV1(t *testing.T) *tables {
	t.Helper()
	tb := provision(t)
	fixture, err := ddbfixture.Read(tablesV1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := ddbfixture.Load(ctx, tb.ddb, tb.ledger, fixture["ledger"]); err != nil {
		t.Fatal(err)
	}
	if err := ddbfixture.Load(ctx, tb.ddb, tb.crm, fixture["crm"]); err != nil {
		t.Fatal(err)
	}
	return tb
}

// A deployed stack keeps working on the tables v1 filled, without a migration: today's worker
// reads every v1 item shape, applies new events on top of them, catches redeliveries of v1
// events, rebuilds v1 contacts to what they hold, and re-associates a v1 parked activity.
func TestTablesWrittenByV1KeepWorking(t *testing.T) {
	tb := loadV1(t)
	ctx := context.Background()
	c := newClock(t0.Add(2 * time.Hour))
	w := newWorker(t, tb, tb.ddb, c)

	dan := getContact(t, w, ContactQuery{Email: "dan@acme.com"})
	if got := dan.Contact.Fields["first_name"].Value + "/" + dan.Contact.Fields["job_title"].Value; got != "Dan/CFO" {
		t.Errorf("dan's fields = %s, want Dan/CFO", got)
	}
	if len(dan.Timeline) != 1 || dan.Timeline[0].Activity.Status != "in-progress" || dan.Timeline[0].Assoc.Deal == nil ||
		dan.Timeline[0].Assoc.Deal.ID != "d-1" {
		t.Fatalf("dan's timeline = %+v", dan.Timeline)
	}
	if len(dan.Audit) < 7 { // first_name, job_title, then phone and the two engagement fields of each callback
		t.Errorf("dan's audit trail has %d v1 entries, want at least 7: %+v", len(dan.Audit), dan.Audit)
	}

	// A redelivery of a v1 event is a duplicate; a new callback of the v1 call applies on top.
	if res := mustApply(t, w, callback(2, "in-progress", "+14155550142", 0)); !res.Duplicate {
		t.Errorf("redelivered v1 event: %+v, want a duplicate", res)
	}
	if res := mustApply(t, w, callback(3, "completed", "+14155550142", 25)); res.Outcome != store.Applied {
		t.Fatalf("new callback on a v1 call: %+v", res)
	}
	dan = getContact(t, w, ContactQuery{Email: "dan@acme.com"})
	if call := dan.Timeline[0].Activity; call.Status != "completed" || len(call.Entries) != 3 || dan.Contact.Fields["last_call_status"].Value != "completed" {
		t.Errorf("after the new callback: status %s, %d entries, last_call_status %q", call.Status, len(call.Entries),
			dan.Contact.Fields["last_call_status"].Value)
	}
	var deal store.Record
	out, err := tb.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(tb.crm), ConsistentRead: aws.Bool(true),
		Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: store.PK(store.Deal, "d-1")},
			"sk": &types.AttributeValueMemberS{Value: store.SKProfile}}})
	if err != nil || attributevalue.UnmarshalMap(out.Item, &deal) != nil {
		t.Fatalf("read d-1: %v", err)
	}
	if want := store.FormatTime(t0.Add(30 * time.Second)); deal.LastActivityAt != want {
		t.Errorf("d-1 last_activity_at = %s, want %s", deal.LastActivityAt, want)
	}

	// Rebuilding a v1 contact from its v1 ledger items gives what is stored.
	for _, email := range []string{"dan@acme.com", "ann@beta.io"} {
		id, err := w.ResolveContact(ctx, ContactQuery{Email: email})
		if err != nil {
			t.Fatal(err)
		}
		rebuilt, err := w.Rebuild(ctx, id)
		if err != nil {
			t.Fatalf("rebuild %s: %v", email, err)
		}
		diff, err := w.DiffRebuild(ctx, rebuilt)
		if err != nil {
			t.Fatal(err)
		}
		if !diff.Empty() {
			t.Errorf("rebuilding %s differs from what is stored: %+v", email, diff)
		}
	}

	// Zoe becomes a contact; the email v1 parked (no pending marker) is re-associated to her.
	mustApply(t, w, lead("typeform:zoe", "zoe@gamma.dev", t0.Add(time.Hour), map[string]string{"first_name": "Zoe"}))
	moved, err := w.Reassociate(ctx, "email:<m1@gamma.dev>", "test:migration", "v1 parked email")
	if err != nil || !moved.Moved {
		t.Fatalf("re-associating the v1 parked email: %+v, %v", moved, err)
	}
	zoe := getContact(t, w, ContactQuery{Email: "zoe@gamma.dev"})
	ids := map[string]bool{}
	for _, entry := range zoe.Timeline {
		ids[entry.Activity.ID] = true
	}
	if !ids["email:<m1@gamma.dev>"] || !ids["form:typeform:zoe"] {
		t.Errorf("zoe's timeline = %v, want the v1 email and her form", ids)
	}
}
