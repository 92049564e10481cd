package reconcile_test

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector/typeform"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/shared/reconcile/check"
	"github.com/crmsync/crmsync/shared/store"
)

func findings(rep reconcile.Report, kind string) []check.Finding {
	var out []check.Finding
	for _, f := range rep.Findings {
		if f.Kind == kind {
			out = append(out, f)
		}
	}
	return out
}

// A contact edited behind the pipeline's back (a direct table write) is reported by parity as
// drift from its recomputation from the ledger; an untouched contact is not.
func TestParityReportsRecordEditedBehindThePipeline(t *testing.T) {
	s := newStack(t, 5*time.Minute)
	ctx := context.Background()
	s.deliver("typeform") // Ada
	body, ct := sample(t, "typeform")
	other := strings.NewReplacer("ada@example.com", "bob@example.com", "01JP2F4QGQ8JV0N7T6QX4D7M0S", "01JP2F4QGQ8JV0N7T6QX4D7M0T",
		"a3a12ec67a1365927098a606107fac15", "b3a12ec67a1365927098a606107fac15", "+14155550123", "+14155550999").Replace(string(body))
	for _, ev := range s.parse("typeform", []byte(other), ct) {
		s.apply(&ev)
	}
	ada := s.contact("ada@example.com").Contact
	if ada.Fields["first_name"].Value != "Ada" {
		t.Fatalf("ada = %+v", ada.Fields)
	}
	// Someone edits the record directly in DynamoDB (read, change the packed fields, write back).
	table := aws.String(s.st.Physical["CrmTable"].Ref)
	got, err := s.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: table, ConsistentRead: aws.Bool(true),
		Key: map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: ada.PK}, "sk": &ddbtypes.AttributeValueMemberS{Value: "PROFILE"}}})
	if err != nil {
		t.Fatal(err)
	}
	var edited store.Record
	if err := attributevalue.UnmarshalMap(got.Item, &edited); err != nil {
		t.Fatal(err)
	}
	if err := edited.Unpack(); err != nil { // written back with plain fields, as older code wrote them
		t.Fatal(err)
	}
	first := edited.Fields["first_name"]
	first.Value = "Mallory"
	edited.Fields["first_name"] = first
	item, err := attributevalue.MarshalMap(edited)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: table, Item: item}); err != nil {
		t.Fatal(err)
	}
	// Stuck work the run also counts: a quarantined payload and a rejected event.
	if _, err := s3.NewFromConfig(s.aws, func(o *s3.Options) { o.UsePathStyle = true }).PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.st.Physical["QuarantineBucket"].Ref), Key: aws.String("quarantine/calendly/x.json"), Body: strings.NewReader("{}")}); err != nil {
		t.Fatal(err)
	}
	if res, err := s.worker.ApplyBody(ctx, []byte(`{"key":"generic:broken","source":"generic","payload_hash":"h"}`)); err != nil || res.Outcome != store.Rejected {
		t.Fatalf("rejected event: %+v %v", res, err)
	}

	rep := s.run(reconcile.Request{Job: reconcile.JobParity})
	if rep.Counts["contacts_checked"] != 2 || rep.Counts["contacts_drifted"] != 1 || rep.DriftPercent != 50 {
		t.Fatalf("counts %v, drift %v%%", rep.Counts, rep.DriftPercent)
	}
	drift := findings(rep, check.KindFieldDrift)
	if len(drift) != 1 || drift[0].ID != ada.ID || drift[0].Field != "first_name" || drift[0].Stored != "Mallory" || drift[0].Expected != "Ada" ||
		drift[0].Repair != "crmsync rebuild --contact "+ada.ID {
		t.Fatalf("drift findings = %+v", drift)
	}
	if !rep.SLABreached || !slices.Contains(rep.Breaches, "drift_percent=50>0.1") {
		t.Errorf("breaches = %v", rep.Breaches)
	}
	if rep.Counts["quarantined_payloads"] != 1 || rep.Counts["rejected_events"] != 1 || len(findings(rep, check.KindRejectedEvent)) != 1 {
		t.Errorf("stuck work: %v", rep.Counts)
	}
	// The run is stored: report and findings.
	latest, err := s.runner.LatestReport(ctx, reconcile.JobParity)
	if err != nil || latest == nil || latest.RunID != rep.RunID || latest.Counts["contacts_drifted"] != 1 || latest.FindingsStored != rep.FindingsTotal {
		t.Fatalf("latest report = %+v, %v", latest, err)
	}
	stored, err := s.runner.Findings(ctx, reconcile.JobParity, rep.RunID)
	if err != nil || len(stored) != rep.FindingsTotal {
		t.Fatalf("stored findings: %d, %v", len(stored), err)
	}
	// And emitted: the metrics the alarms watch.
	if v := s.metrics.metric("DriftPercent", "Job", "parity"); len(v) != 1 || v[0] != 50 {
		t.Errorf("DriftPercent = %v", v)
	}
	for _, m := range []string{"JobHeartbeat", "SlaBreached", "QuarantinedPayloads", "RejectedEvents"} {
		if v := s.metrics.metric(m, "Job", "parity"); len(v) != 1 || v[0] != 1 {
			t.Errorf("%s = %v", m, v)
		}
	}
	if v := s.metrics.metric("JobOverdue", "Job", "mapping-review"); len(v) != 1 || v[0] != 0 {
		t.Errorf("JobOverdue{mapping-review} = %v (never ran, but parity's first report is now)", v)
	}
}

// Vendor items the fakes list but whose webhooks were never delivered are found and
// backfilled through the queue; a delivered item is recognised whether the ledger holds its key
// (Calendly, Mailgun) or an equivalent event under another key (Twilio's sequence-number
// callback, Typeform's event id). Applied by the worker, the backfilled events leave the records exactly
// as the webhooks would have.
func TestParityBackfillsMissedWebhooks(t *testing.T) {
	delivered := newStack(t, 0)
	for _, name := range []string{"twilio", "calendly", "typeform", "mailgun"} {
		delivered.deliver(name)
	}
	req := reconcile.Request{Job: reconcile.JobParity, Since: fixtureSince.Format(time.RFC3339), Until: fixtureUntil.Format(time.RFC3339)}
	// A dry run reports, repairs nothing, stores nothing and emits nothing.
	dry := req
	dry.DryRun = true
	if rep := delivered.run(dry); rep.Counts["missing_events"] != 6 || rep.Counts["backfilled"] != 0 {
		t.Fatalf("dry run: %v", rep.Counts)
	}
	if n := len(delivered.drain()); n != 0 {
		t.Fatalf("a dry run enqueued %d events", n)
	}
	if latest, err := delivered.runner.LatestReport(context.Background(), reconcile.JobParity); err != nil || latest != nil {
		t.Fatalf("a dry run stored %+v (%v)", latest, err)
	}
	rep := delivered.run(req)
	var missing []string
	for _, f := range findings(rep, check.KindMissingEvent) {
		missing = append(missing, f.ID)
		if !strings.HasPrefix(f.Repair, "backfilled") {
			t.Errorf("%s: repair %q", f.ID, f.Repair)
		}
	}
	sort.Strings(missing)
	want := []string{
		"calendly:invitee.created:https://api.calendly.com/scheduled_events/HKQ7M2VXR4TZ8NBC/invitees/QW3RT8YUP2LKJ6HG",
		// Mailgun's Events API lists the message's accepted, temporary failure and open beside
		// the delivery the webhook brought (events/vendor/mailgun).
		"mailgun:Ta5wX2yPUoO6qD4tA7bVgE",
		"mailgun:Wd2uS7rKPjJ0lY9oV1wQbZ",
		"mailgun:Yq3vT8sLQkK1mZ0pW2xRcA",
		"twilio:call:CA9b8a7c6d5e4f30211f2e3d4c5b6a7980:completed",
		"typeform:response:7c1d9e4b2f8a6035e1b7c9d2a4f6e8b0",
	}
	if !slices.Equal(missing, want) || rep.Counts["missing_events"] != 6 || rep.Counts["backfilled"] != 6 || rep.Counts["listed_items"] != 10 {
		t.Fatalf("missing %v, counts %v", missing, rep.Counts)
	}
	if v := delivered.metrics.metric("MissingEvents", "Job", "parity"); len(v) != 1 || v[0] != 6 {
		t.Errorf("MissingEvents = %v", v)
	}
	keys := delivered.drain()
	sort.Strings(keys)
	if !slices.Equal(keys, want) {
		t.Fatalf("enqueued %v", keys)
	}
	grace := delivered.contact("grace@example.org")
	if grace.Contact.Fields["utm_source"].Value != "newsletter" || len(grace.Timeline) < 2 {
		t.Errorf("grace after backfill = %+v, %d activities", grace.Contact.Fields, len(grace.Timeline))
	}
	// A second run finds nothing missing: the backfill went through the ledger.
	again := delivered.run(req)
	if again.Counts["missing_events"] != 0 || again.Counts["backfilled"] != 0 {
		t.Errorf("second run: %v", again.Counts)
	}

	// A stack where no webhook arrived at all: parity backfills every listed item, including the
	// four the first stack got by webhook, and Ada's record is the same in both.
	missed := newStack(t, 0)
	rep = missed.run(req)
	if rep.Counts["missing_events"] != 10 || rep.Counts["backfilled"] != 10 {
		t.Fatalf("nothing delivered: %v", rep.Counts)
	}
	if n := len(missed.drain()); n != 10 {
		t.Fatalf("drained %d", n)
	}
	byWebhook, byBackfill := delivered.contact("ada@example.com"), missed.contact("ada@example.com")
	values := func(v map[string]store.Field) map[string]string {
		out := map[string]string{}
		for k, f := range v {
			out[k] = f.Value + " @" + f.OccurredAt + " from " + f.Source
		}
		return out
	}
	if a, b := values(byWebhook.Contact.Fields), values(byBackfill.Contact.Fields); !maps.Equal(a, b) {
		t.Errorf("ada's fields differ:\nwebhook  %v\nbackfill %v", a, b)
	}
	var a, b []string
	for _, e := range byWebhook.Timeline {
		a = append(a, e.Activity.ID+" "+e.Activity.Status+" "+e.Activity.Outcome+" "+e.Activity.Subject)
	}
	for _, e := range byBackfill.Timeline {
		b = append(b, e.Activity.ID+" "+e.Activity.Status+" "+e.Activity.Outcome+" "+e.Activity.Subject)
	}
	if !slices.Equal(a, b) || len(a) != 3 {
		t.Errorf("ada's timeline differs:\nwebhook  %v\nbackfill %v", a, b)
	}
	// The CLI's backfill (no settle delay) agrees there is nothing left.
	res, err := missed.runner.Backfill(context.Background(), "twilio", fixtureSince, fixtureUntil, 0, true)
	if err != nil || res.Listed != 2 || res.Delivered != 2 || len(res.Missing) != 0 {
		t.Errorf("backfill dry run: %+v, %v", res, err)
	}
}

// The consistency job moves an activity that waits unassociated under the contact that now owns
// its identity (a contact created without adopting it: imported, or racing the activity), with
// an audit entry; a second run has nothing to do.
func TestConsistencyAssociatesOnceTheContactExists(t *testing.T) {
	s := newStack(t, 0)
	now := time.Now().UTC()
	email := &canonical.Event{Key: "mailgun:ev-uma", Source: "mailgun", Kind: canonical.KindEmailEvent, OccurredAt: now.Add(-time.Hour),
		ReceivedAt: now, GroupKey: "email:uma@acme.com", Subject: canonical.Person{Emails: []string{"uma@acme.com"}},
		Activity: &canonical.Activity{ID: "email:<m1@us.com>", Type: "email", Status: "delivered"}, MappingVersion: "mailgun/1", PayloadHash: "h1"}
	if res := s.apply(email); res.ContactID != "" {
		t.Fatalf("expected an unassociated activity: %+v", res)
	}
	// Nobody owns the identity yet: the activity keeps waiting.
	rep := s.run(reconcile.Request{Job: reconcile.JobConsistency})
	if rep.Counts["reassociated"] != 0 || rep.Counts["unassociated_activities"] != 1 {
		t.Fatalf("before the contact: %v", rep.Counts)
	}
	// The contact appears without adopting it.
	putImportedContact(t, s, "c-uma", "Uma", "uma@acme.com", now)
	rep = s.run(reconcile.Request{Job: reconcile.JobConsistency})
	if rep.Counts["reassociated"] != 1 || rep.Counts["unassociated_activities"] != 0 {
		t.Fatalf("after the contact: %v %+v", rep.Counts, rep.Findings)
	}
	if f := findings(rep, check.KindReassociated); len(f) != 1 || f[0].Expected != "c-uma" || f[0].Field != "email:uma@acme.com" {
		t.Errorf("findings = %+v", f)
	}
	v := s.contact("uma@acme.com")
	if len(v.Timeline) != 1 || v.Timeline[0].Activity.ID != "email:<m1@us.com>" || v.Timeline[0].Assoc.Contact == nil ||
		v.Timeline[0].Assoc.Contact.ID != "c-uma" || v.Timeline[0].Assoc.Contact.Via != "uma@acme.com" {
		t.Fatalf("timeline = %+v", v.Timeline)
	}
	audited := false
	for _, a := range v.Audit {
		audited = audited || (a.Field == "_activity" && a.Decision == "reassociated" && strings.HasPrefix(a.EventKey, "reconcile:consistency:"+rep.RunID+":activity:"))
	}
	if !audited {
		t.Errorf("no audit entry for the re-association: %+v", v.Audit)
	}
	// A later event of the activity follows it under the contact.
	opened := *email
	opened.Key, opened.PayloadHash, opened.OccurredAt = "mailgun:ev-uma-2", "h2", now.Add(-30*time.Minute)
	opened.Activity = &canonical.Activity{ID: "email:<m1@us.com>", Type: "email", Status: "opened"}
	s.apply(&opened)
	if v := s.contact("uma@acme.com"); len(v.Timeline) != 1 || v.Timeline[0].Activity.Status != "opened" {
		t.Errorf("after a later event: %+v", v.Timeline)
	}
	if rep := s.run(reconcile.Request{Job: reconcile.JobConsistency}); rep.Counts["reassociated"] != 0 || rep.Counts["unassociated_activities"] != 0 {
		t.Errorf("third run: %v", rep.Counts)
	}
	if v := s.metrics.metric("Reassociated", "Job", "consistency"); !slices.Equal(v, []float64{0, 1, 0}) {
		t.Errorf("Reassociated metrics = %v", v)
	}
}

// The mapping review reports a vendor field a sample payload gained (Typeform hidden field
// "favorite_color"), with its count and an example key, and the versions in use.
func TestMappingReviewReportsAnAddedVendorField(t *testing.T) {
	s := newStack(t, 0)
	body, ct := sample(t, "typeform")
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	doc["form_response"].(map[string]any)["hidden"].(map[string]any)["favorite_color"] = "teal"
	edited, _ := json.Marshal(doc)
	evs := s.parse("typeform", edited, ct)
	if !slices.Contains(evs[0].Unmapped, "form_response.hidden.favorite_color") {
		t.Fatalf("unmapped = %v", evs[0].Unmapped)
	}
	s.apply(&evs[0])
	s.deliver("twilio")
	rep := s.run(reconcile.Request{Job: reconcile.JobMappingReview})
	var got *check.Finding
	for _, f := range findings(rep, check.KindUnmappedField) {
		if f.Source == "typeform" && f.Field == "form_response.hidden.favorite_color" {
			got = &f
		}
	}
	if got == nil || got.Count != 1 || got.Example != evs[0].Key {
		t.Fatalf("unmapped findings = %+v", findings(rep, check.KindUnmappedField))
	}
	var versions []string
	for _, f := range findings(rep, check.KindVersions) {
		versions = append(versions, f.ID+"="+f.Stored)
	}
	if !slices.Contains(versions, "typeform="+typeform.MappingVersion+" (1)") || !slices.Contains(versions, "twilio=twilio/1 (1)") {
		t.Errorf("versions = %v", versions)
	}
	if rep.Counts["events_reviewed"] != 2 || rep.Counts["unmapped_fields"] < 1 || rep.Counts["policy_fields_never_seen"] == 0 {
		t.Errorf("counts = %v", rep.Counts)
	}
	if v := s.metrics.metric("UnmappedFields", "Job", "mapping-review"); len(v) != 1 || v[0] != float64(rep.Counts["unmapped_fields"]) {
		t.Errorf("UnmappedFields = %v", v)
	}
}

// Items written before the Unassociated index was sharded carry its legacy hash key ("1"), and
// profiles written before the ByChange index was dropped still carry its change_day attribute:
// the consistency job reads the legacy key beside the shards, and parity finds the window's
// contacts through the ledger whatever attributes their profiles carry, so a table filled by the
// older code keeps being reconciled without a migration.
func TestReconcileReadsIndexKeysWrittenBeforeSharding(t *testing.T) {
	s := newStack(t, 0)
	ctx := context.Background()
	now := time.Now().UTC()
	crm := aws.String(s.st.Physical["CrmTable"].Ref)
	setKey := func(pk, sk, attr, value string) {
		t.Helper()
		if _, err := s.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: crm,
			Key:              map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: pk}, "sk": &ddbtypes.AttributeValueMemberS{Value: sk}},
			UpdateExpression: aws.String("SET #a = :v"), ExpressionAttributeNames: map[string]string{"#a": attr},
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberS{Value: value}}}); err != nil {
			t.Fatal(err)
		}
	}
	email := &canonical.Event{Key: "mailgun:ev-vic", Source: "mailgun", Kind: canonical.KindEmailEvent, OccurredAt: now.Add(-time.Hour),
		ReceivedAt: now, GroupKey: "email:vic@acme.com", Subject: canonical.Person{Emails: []string{"vic@acme.com"}},
		Activity: &canonical.Activity{ID: "email:<m2@us.com>", Type: "email", Status: "delivered"}, MappingVersion: "mailgun/1", PayloadHash: "h1"}
	if res := s.apply(email); res.ContactID != "" {
		t.Fatalf("expected an unassociated activity: %+v", res)
	}
	setKey(store.PKUnassociated, store.ActivitySK("email:<m2@us.com>"), "unassoc", store.LegacyUnassocKey)

	rec := putImportedContact(t, s, "c-vic", "Vic", "vic@acme.com", now)
	rep := s.run(reconcile.Request{Job: reconcile.JobConsistency})
	if rep.Counts["reassociated"] != 1 || rep.Counts["unassociated_activities"] != 0 {
		t.Fatalf("consistency over a legacy-keyed parked activity: %v %+v", rep.Counts, rep.Findings)
	}
	// An attribute of the dropped ByChange index on an old profile is ignored.
	setKey(rec.PK, store.SKProfile, "change_day", now.Format(time.DateOnly))
	s.deliver("typeform")
	rep = s.run(reconcile.Request{Job: reconcile.JobParity})
	// The typeform lead's contact is found through its ledger event (checked, or left to settle
	// when changed within the last minute); the imported contact has no event in the window, so
	// parity has nothing to replay for it and does not look.
	if got := rep.Counts["contacts_checked"] + rep.Counts["contacts_settling"]; got != 1 || rep.Counts["records_changed"] != 1 {
		t.Fatalf("parity found %d contacts, want 1 (the typeform lead's): %v", got, rep.Counts)
	}
}

// putImportedContact writes a contact the way an import behind the pipeline would: its profile
// (plain fields, as older code wrote them) and its email's identity claim, no ledger event.
func putImportedContact(t *testing.T, s *stack, id, firstName, email string, now time.Time) *store.Record {
	t.Helper()
	rec := store.NewRecord(store.Contact, id)
	rec.Fields["first_name"] = store.Field{Value: firstName, Source: "crm"}
	rec.Identities = []string{"email:" + email}
	rec.Version = 1
	rec.Touch(now)
	claim := store.IdentityClaim{PK: store.IdentEmailPK(email), SK: store.SKIdent, ContactID: id, EventKey: "import", ClaimedAt: store.FormatTime(now)}
	for _, v := range []any{rec, claim} {
		av, err := attributevalue.MarshalMap(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.ddb.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(s.st.Physical["CrmTable"].Ref), Item: av}); err != nil {
			t.Fatal(err)
		}
	}
	return rec
}
