package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/worker"
	"github.com/crmsync/crmsync/tools/ddbfixture"
	"github.com/crmsync/crmsync/tools/samples"
)

// cli runs one crmsync command in process against the test's local stack and returns stdout.
func (s *testStack) cli(args ...string) (string, error) {
	s.t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(args, "--local", "--api", s.publicBase()))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// mustCLI is cli that fails the test on error.
func (s *testStack) mustCLI(args ...string) string {
	s.t.Helper()
	out, err := s.cli(args...)
	if err != nil {
		s.t.Fatalf("crmsync %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// eventually polls cond until it holds or the deadline passes (the event source mapping is
// asynchronous).
func (s *testStack) eventually(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s\nlogs (tail):\n%s", what, tail(s.logs.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// ledgerOf reads `events get <key> --json`; ok is false while the key is not in the ledger.
func (s *testStack) ledgerOf(key string) (ledgerEntry, bool) {
	out, err := s.cli("events", "get", key, "--json")
	if err != nil {
		return ledgerEntry{}, false
	}
	var e ledgerEntry
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		s.t.Fatalf("events get --json: %v\n%s", err, out)
	}
	return e, true
}

// deliver posts a connector's sample and waits until the worker recorded its events.
func (s *testStack) deliver(name string) []string {
	s.t.Helper()
	ev := s.sample(name)
	evs, err := samples.ParseEvent(ev, name, s.secrets[name], time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	if status, body := s.post(ev); status >= 300 {
		s.t.Fatalf("post %s: %d %s", name, status, body)
	}
	var keys []string
	for _, e := range evs {
		key := e.Key
		keys = append(keys, key)
		s.eventually("ledger entry "+key, func() bool { _, ok := s.ledgerOf(key); return ok })
	}
	return keys
}

func TestEventsGetAndList(t *testing.T) {
	s := startStack(t, true)
	key := s.deliver("twilio")[0]
	e, _ := s.ledgerOf(key)
	if e.Key != key || e.Source != "twilio" || e.Outcome != store.Applied || e.Attempts < 1 || e.PolicyVersion == "" || e.MappingVersion == "" {
		t.Errorf("events get --json = %+v: want an APPLIED twilio entry with attempts and versions", e)
	}
	var listed []ledgerEntry
	if err := json.Unmarshal([]byte(s.mustCLI("events", "list", "--source", "twilio", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].Key != key {
		t.Errorf("events list --source twilio = %+v, want just %s", listed, key)
	}
	if err := json.Unmarshal([]byte(s.mustCLI("events", "list", "--outcome", "REJECTED", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 0 {
		t.Errorf("events list --outcome REJECTED = %+v, want none", listed)
	}
	if out := s.mustCLI("events", "list"); !strings.Contains(out, key) || !strings.Contains(out, "APPLIED") {
		t.Errorf("events list table does not show %s APPLIED:\n%s", key, out)
	}
	if _, err := s.cli("events", "get", "twilio:call:nope:0"); err == nil {
		t.Errorf("events get of an unknown key succeeded")
	}
}

func TestReplayRecordsWhoAndWhy(t *testing.T) {
	s := startStack(t, true)
	key := s.deliver("typeform")[0]
	if _, err := s.cli("replay", key); err == nil {
		t.Fatalf("replay without --reason succeeded; it must say why")
	}
	out := s.mustCLI("replay", key, "--reason", "mapping fix #12", "--by", "ops@example.com", "--json")
	var res []worker.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || res[0].Key != key {
		t.Fatalf("replay --json = %s (%v)", out, err)
	}
	e, _ := s.ledgerOf(key)
	if len(e.Reruns) != 1 || e.Reruns[0].By != "ops@example.com" || e.Reruns[0].Why != "mapping fix #12" {
		t.Errorf("ledger reruns = %+v, want one by ops@example.com for \"mapping fix #12\"", e.Reruns)
	}
}

func TestRebuildRestoresDamagedRecord(t *testing.T) {
	s := startStack(t, true)
	s.deliver("typeform")
	view := func() *worker.ContactView {
		var v worker.ContactView
		out := s.mustCLI("contact", "get", "--email", "ada@example.com", "--json")
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("contact get --json: %v\n%s", err, out)
		}
		return &v
	}
	before := view()
	want := before.Contact.Fields["first_name"].Value
	if want == "" {
		t.Fatalf("the typeform lead set no first_name: %+v", before.Contact.Fields)
	}
	// Damage the record behind the pipeline's back: read it, change the packed field, write it.
	ddb := dynamodb.NewFromConfig(s.AWS)
	table := aws.String(s.Stack.Physical["CrmTable"].Ref)
	key, _ := attributevalue.MarshalMap(map[string]string{"pk": store.PK(store.Contact, before.Contact.ID), "sk": store.SKProfile})
	got, err := ddb.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: table, Key: key, ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	var damaged store.Record
	if err := attributevalue.UnmarshalMap(got.Item, &damaged); err != nil {
		t.Fatal(err)
	}
	if err := damaged.Unpack(); err != nil {
		t.Fatal(err)
	}
	first := damaged.Fields["first_name"]
	first.Value = "Mallory"
	damaged.Fields["first_name"] = first
	stored, err := damaged.Stored()
	if err != nil {
		t.Fatal(err)
	}
	item, err := attributevalue.MarshalMap(stored)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ddb.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: table, Item: item}); err != nil {
		t.Fatal(err)
	}
	var dry struct {
		DryRun bool               `json:"dry_run"`
		Diff   worker.RebuildDiff `json:"diff"`
	}
	if err := json.Unmarshal([]byte(s.mustCLI("rebuild", "--contact", "ada@example.com", "--dry-run", "--json")), &dry); err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || len(dry.Diff.Fields) != 1 || dry.Diff.Fields[0].Field != "first_name" ||
		dry.Diff.Fields[0].Stored.Value != "Mallory" || dry.Diff.Fields[0].Rebuilt.Value != want {
		t.Fatalf("rebuild --dry-run diff = %+v, want first_name Mallory → %s", dry.Diff, want)
	}
	if got := view().Contact.Fields["first_name"].Value; got != "Mallory" {
		t.Fatalf("--dry-run wrote: first_name = %q", got)
	}
	s.mustCLI("rebuild", "--contact", "ada@example.com", "--reason", "restore after manual edit")
	after := view()
	if got := after.Contact.Fields["first_name"]; got.Value != want || got != before.Contact.Fields["first_name"] {
		t.Errorf("after rebuild first_name = %+v, want exactly %+v", got, before.Contact.Fields["first_name"])
	}
	audited := false
	for _, a := range after.Audit {
		audited = audited || (a.Decision == "rebuild" && a.Field == "first_name" && a.RerunWhy == "restore after manual edit")
	}
	if !audited {
		t.Errorf("the rebuild left no audit entry for first_name")
	}
	if out := s.mustCLI("rebuild", "--contact", "ada@example.com", "--dry-run"); !strings.Contains(out, "nothing to rebuild") {
		t.Errorf("a second dry run should find nothing to rebuild:\n%s", out)
	}
}

func TestExplainShowsRejectedProposals(t *testing.T) {
	s := startStack(t, true)
	s.deliver("generic")  // lead_source "website", earlier
	s.deliver("typeform") // lead_source "typeform", later: first_touch keeps "website"
	var ex explanation
	if err := json.Unmarshal([]byte(s.mustCLI("explain", "--contact", "ada@example.com", "--field", "lead_source", "--json")), &ex); err != nil {
		t.Fatal(err)
	}
	if ex.Current.Value != "website" || ex.Current.Source != "generic" {
		t.Errorf("lead_source = %+v, want website from generic (first touch)", ex.Current)
	}
	if len(ex.Rejected) != 1 || ex.Rejected[0].Source != "typeform" || ex.Rejected[0].Rule != "first_touch" || ex.Rejected[0].Proposed != "typeform" {
		t.Errorf("rejected = %+v, want typeform's proposal refused by first_touch", ex.Rejected)
	}
	out := s.mustCLI("explain", "--contact", "ada@example.com", "--field", "lead_source")
	for _, want := range []string{`"website"`, "first_touch", "typeform"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
}

func TestQuarantineListShowRelease(t *testing.T) {
	s := startStack(t, true)
	junk := s.signed("typeform", []byte(`{"event_id":"x","event_type":"form_response","form_response":"not an object"}`), "application/json")
	if status, _ := s.post(junk); status != 202 {
		t.Fatalf("junk delivery = %d, want 202", status)
	}
	var items []quarantineItem
	if err := json.Unmarshal([]byte(s.mustCLI("quarantine", "list", "--json")), &items); err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Connector != "typeform" {
		t.Fatalf("quarantine list = %+v, want one typeform item", items)
	}
	if out := s.mustCLI("quarantine", "show", items[0].ID); !strings.Contains(out, `"reason"`) || !strings.Contains(out, "not an object") {
		t.Errorf("quarantine show lacks the reason and body:\n%s", out)
	}
	if _, err := s.cli("quarantine", "release", items[0].ID); err == nil || !strings.Contains(err.Error(), "still does not parse") {
		t.Errorf("releasing a payload that still fails = %v, want 'still does not parse'", err)
	}

	// A delivery quarantined under an older mapping that parses now: release applies it once.
	good := s.sample("typeform")
	q := ingest.Quarantined{Connector: "typeform", Reason: "old mapping", ReceivedAt: time.Now(), Method: "POST",
		Path: good.RawPath, Headers: good.Headers, PublicURL: s.publicBase() + good.RawPath, Body: []byte(good.Body)}
	b, _ := json.Marshal(q)
	id := ingest.QuarantineKey("typeform", q.Body, q.ReceivedAt)
	cl := s3.NewFromConfig(s.AWS, func(o *s3.Options) { o.UsePathStyle = true })
	bucket := s.Stack.Physical["QuarantineBucket"].Ref
	if _, err := cl.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(id), Body: bytes.NewReader(b)}); err != nil {
		t.Fatal(err)
	}
	out := s.mustCLI("quarantine", "release", id)
	if !strings.Contains(out, "1 event(s) enqueued") {
		t.Errorf("release output: %s", out)
	}
	evs, _ := samples.ParseEvent(good, "typeform", s.secrets["typeform"], time.Now())
	s.eventually("released event applied", func() bool { e, ok := s.ledgerOf(evs[0].Key); return ok && e.Outcome == store.Applied })
	if err := json.Unmarshal([]byte(s.mustCLI("quarantine", "list", "--json")), &items); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.ID == id {
			t.Errorf("released payload still listed in quarantine")
		}
	}
	if _, err := cl.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("released/" + strings.TrimPrefix(id, "quarantine/"))}); err != nil {
		t.Errorf("released payload not kept under released/: %v", err)
	}
}

// `crmsync migrate` on a ledger v1 filled: the dry run counts the forever source's items that
// still expire and writes nothing; --apply removes their TTL; a second run finds nothing.
func TestMigrateCommand(t *testing.T) {
	s := startStack(t, false)
	fixture, err := ddbfixture.Read("../../tools/ddbfixture/testdata/tables-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	ddb := dynamodb.NewFromConfig(s.AWS)
	ledger := s.Stack.Physical["LedgerTable"].Ref
	if err := ddbfixture.Load(context.Background(), ddb, ledger, fixture["ledger"]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.cli("migrate", "--max-pages", "-1"); err == nil || !strings.Contains(err.Error(), "--max-pages -1") {
		t.Errorf("a negative --max-pages: %v, want an error naming the flag", err)
	}
	out := s.mustCLI("migrate")
	if !strings.Contains(out, "scanned 6 ledger items, 2 to change (dry run") {
		t.Fatalf("dry run said:\n%s", out)
	}
	out = s.mustCLI("migrate", "--apply")
	if !strings.Contains(out, "2 to change; changed 2, skipped 0") {
		t.Fatalf("--apply said:\n%s", out)
	}
	var rep struct {
		Matched int `json:"matched"`
	}
	if err := json.Unmarshal([]byte(s.mustCLI("migrate", "--json")), &rep); err != nil || rep.Matched != 0 {
		t.Fatalf("after --apply: %+v, %v", rep, err)
	}
	got, err := ddb.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String(ledger), ConsistentRead: aws.Bool(true),
		Key: map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "typeform:ann"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, expires := got.Item["expires_at"]; expires || len(got.Item) == 0 {
		t.Errorf("typeform:ann after the migration: %v", got.Item)
	}
}
