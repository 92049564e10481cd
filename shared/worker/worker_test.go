package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/store"
)

func TestLeadCreatesContactTimelineAndAudit(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Minute))
	var metrics bytes.Buffer
	w := newWorker(t, tb, tb.ddb, c, func(cfg *Config) { cfg.Metrics = &metrics })
	ev := lead("typeform:e1", "ann@acme.com", t0, map[string]string{"first_name": "Ann", "utm_source": "google"})
	res := mustApply(t, w, ev)
	if res.Outcome != store.Applied || res.ContactID != ContactIDFor("typeform:e1") {
		t.Fatalf("result = %+v", res)
	}
	v := getContact(t, w, ContactQuery{Email: "ANN@acme.com"})
	if f := v.Contact.Fields["first_name"]; f.Value != "Ann" || f.Source != "typeform" || f.EventKey != "typeform:e1" || f.OccurredAt == "" {
		t.Errorf("first_name provenance = %+v", f)
	}
	if v.Contact.Version != 1 || len(v.Contact.Identities) != 1 || !strings.HasPrefix(v.Contact.UpdatedAt, "2026-11-02T") {
		t.Errorf("contact = %+v", v.Contact)
	}
	if len(v.Timeline) != 1 || v.Timeline[0].Activity.ID != "form:typeform:e1" || v.Timeline[0].Assoc.Contact == nil ||
		v.Timeline[0].Assoc.Contact.Method != association.ExactEmail {
		t.Errorf("timeline = %+v", v.Timeline)
	}
	if len(v.Audit) != 2 || v.Audit[0].Decision != "applied" || v.Audit[0].PolicyVersion != tb.pol.Version() {
		t.Errorf("audit = %+v", v.Audit)
	}
	led, err := w.getLedger(context.Background(), ev.Key)
	if err != nil || led == nil {
		t.Fatal(led, err)
	}
	if led.Outcome != store.Applied || !led.DedupForever || led.GroupKey != "email:ann@acme.com" || !led.HasEvent() ||
		led.PolicyVersion != tb.pol.Version() || led.MappingVersion != "typeform/1" || led.Attempts != 1 ||
		led.ExpiresAt != 0 { // typeform's window is forever: its ledger items have no TTL
		t.Errorf("ledger = %+v", led)
	}
	var processed, lag bool
	for _, line := range bytes.Split(metrics.Bytes(), []byte("\n")) {
		// The record names its connector (for Logs Insights); the series is per outcome only.
		named := bytes.Contains(line, []byte(`"Connector":"typeform"`))
		for _, d := range emf.Parse(line) {
			_, perConnector := d.Dimensions["Connector"]
			processed = processed || (d.Name == "Processed" && d.Dimensions["Outcome"] == store.Applied && named && !perConnector)
			lag = lag || (d.Name == "LagMs" && d.Value == 60000)
		}
	}
	if !processed || !lag {
		t.Errorf("metrics missing (processed %v, lag %v): %s", processed, lag, metrics.String())
	}
}

// An event that changes nothing writes only its ledger item (outcome NOOP).
func TestNoopWritesOnlyTheLedger(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	api := newCounting(tb.ddb)
	w := newWorker(t, tb, api, c)
	mustApply(t, w, lead("typeform:n1", "nat@acme.com", t0, map[string]string{"first_name": "Nat"}))
	again := lead("typeform:n2", "nat@acme.com", t0.Add(time.Minute), map[string]string{"first_name": "Nat"})
	again.Activity = nil
	api.reset()
	res := mustApply(t, w, again)
	if res.Outcome != store.Noop || api.calls["TransactWriteItems"] != 0 || api.calls["PutItem"] != 1 {
		t.Fatalf("outcome %+v with %d transactions and %d PutItem, want the ledger item's PutItem alone", res,
			api.calls["TransactWriteItems"], api.calls["PutItem"])
	}
}

// A duplicate delivered after SQS's 5-minute deduplication window is caught by the ledger read:
// acknowledged, and not one write.
func TestDuplicateAfterSQSWindowCostsNoWrite(t *testing.T) {
	tb := provision(t)
	c := newClock(t0)
	api := newCounting(tb.ddb)
	w := newWorker(t, tb, api, c)
	ev := callback(1, "ringing", "+14155550100", 0)
	batch := events.SQSEvent{Records: []events.SQSMessage{message(t, "m1", ev)}}
	if resp, _ := w.Handle(context.Background(), batch); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("first delivery failed: %+v", resp)
	}
	if api.writes() != 1 {
		t.Fatalf("first delivery made %d writes, want one transaction", api.writes())
	}
	before := getContact(t, w, ContactQuery{Phone: "+14155550100"})
	c.Advance(10 * time.Minute)
	api.reset()
	batch.Records[0].MessageId = "m2"
	resp, err := w.Handle(context.Background(), batch)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("duplicate not acknowledged: %+v %v", resp, err)
	}
	if api.writes() != 0 || api.calls["GetItem"] != 1 {
		t.Fatalf("duplicate cost %v, want one ledger read and no write", api.calls)
	}
	after := getContact(t, w, ContactQuery{Phone: "+14155550100"})
	if d := cmp.Diff(before, after); d != "" {
		t.Fatalf("duplicate changed the contact: %s", d)
	}
}

// A crash after the transaction committed but before the batch response: SQS re-delivers, and
// the re-delivery changes nothing.
func TestCrashAfterCommitRedeliveryChangesNothing(t *testing.T) {
	tb := provision(t)
	c := newClock(t0)
	crash := &crashAfterCommit{DynamoAPI: tb.ddb}
	crash.armed.Store(true)
	w := newWorker(t, tb, crash, c)
	ev := lead("typeform:crash", "cara@initech.com", t0, map[string]string{"first_name": "Cara", "utm_campaign": "fall"})
	batch := events.SQSEvent{Records: []events.SQSMessage{message(t, "m1", ev)}}
	resp, _ := w.Handle(context.Background(), batch)
	if len(resp.BatchItemFailures) != 1 {
		t.Fatalf("lost response not reported for retry: %+v", resp)
	}
	before := getContact(t, w, ContactQuery{Email: "cara@initech.com"})

	api := newCounting(tb.ddb)
	w2 := newWorker(t, tb, api, c) // the re-delivery reaches a fresh instance
	c.Advance(3 * time.Minute)
	resp, _ = w2.Handle(context.Background(), batch)
	if len(resp.BatchItemFailures) != 0 || api.writes() != 0 {
		t.Fatalf("re-delivery: failures %+v, calls %v", resp, api.calls)
	}
	after := getContact(t, w2, ContactQuery{Email: "cara@initech.com"})
	if d := cmp.Diff(before, after); d != "" {
		t.Fatalf("re-delivery changed the contact: %s", d)
	}
	if len(after.Audit) != 2 || after.Contact.Version != 1 {
		t.Fatalf("applied more than once: version %d, %d audit entries", after.Contact.Version, len(after.Audit))
	}
}

// The retry inside one invocation after a lost response finds the ledger item and stops.
func TestLostResponseRetryIsDuplicate(t *testing.T) {
	tb := provision(t)
	c := newClock(t0)
	crash := &crashAfterCommit{DynamoAPI: tb.ddb}
	w := newWorker(t, tb, crash, c)
	ev := lead("typeform:lost", "lou@initech.com", t0, map[string]string{"first_name": "Lou"})
	crash.armed.Store(true)
	if _, err := w.Apply(context.Background(), ev); err == nil {
		t.Fatal("injected crash not reported")
	}
	res := mustApply(t, w, ev)
	if !res.Duplicate {
		t.Fatalf("retry = %+v, want duplicate", res)
	}
}

// Two workers race on one contact: both finish, and the record reflects both events per policy.
func TestTwoWorkersRacingOnOneRecord(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	base := newWorker(t, tb, tb.ddb, c)
	mustApply(t, base, lead("typeform:seed", "rae@acme.com", t0, map[string]string{"first_name": "Rae"}))

	r := newRace(2)
	counters := []*counting{newCounting(&gate{DynamoAPI: tb.ddb, g: r}), newCounting(&gate{DynamoAPI: tb.ddb, g: r})}
	evs := []*canonical.Event{
		lead("typeform:a", "rae@acme.com", t0.Add(time.Minute), map[string]string{"last_name": "Ray", "utm_source": "ads"}),
		lead("typeform:b", "rae@acme.com", t0.Add(2*time.Minute), map[string]string{"job_title": "CTO", "utm_source": "late"}),
	}
	var wg sync.WaitGroup
	results := make([]Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = newWorker(t, tb, counters[i], c).Apply(context.Background(), evs[i])
		}()
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil || results[i].Outcome != store.Applied {
			t.Fatalf("worker %d: %+v %v", i, results[i], errs[i])
		}
	}
	if results[0].Attempts+results[1].Attempts != 3 {
		t.Errorf("attempts %d and %d: want one conflict and one retry", results[0].Attempts, results[1].Attempts)
	}
	v := getContact(t, base, ContactQuery{Email: "rae@acme.com"})
	got := map[string]string{}
	for f, fv := range v.Contact.Fields {
		got[f] = fv.Value
	}
	want := map[string]string{"first_name": "Rae", "last_name": "Ray", "job_title": "CTO", "utm_source": "ads"} // first touch
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("record (-want +got): %s", d)
	}
	if v.Contact.Version != 3 {
		t.Errorf("version = %d, want 3", v.Contact.Version)
	}
}

// Two events racing to create the same person yield one contact.
func TestTwoEventsRacingToCreateOnePerson(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	r := newRace(2)
	evs := []*canonical.Event{
		lead("typeform:x1", "new@globex.com", t0, map[string]string{"first_name": "Nia"}),
		lead("typeform:x2", "new@globex.com", t0.Add(time.Minute), map[string]string{"last_name": "Ng"}),
	}
	var wg sync.WaitGroup
	results := make([]Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = newWorker(t, tb, &gate{DynamoAPI: tb.ddb, g: r}, c).Apply(context.Background(), evs[i])
		}()
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil || results[i].Outcome != store.Applied {
			t.Fatalf("event %d: %+v %v", i, results[i], errs[i])
		}
	}
	if results[0].ContactID != results[1].ContactID {
		t.Fatalf("two contacts for one person: %s and %s", results[0].ContactID, results[1].ContactID)
	}
	v := getContact(t, newWorker(t, tb, tb.ddb, c), ContactQuery{Email: "new@globex.com"})
	if v.Contact.Fields["first_name"].Value != "Nia" || v.Contact.Fields["last_name"].Value != "Ng" || len(v.Timeline) != 2 {
		t.Fatalf("merged contact = %+v, %d activities", v.Contact.Fields, len(v.Timeline))
	}
	// The loser's would-be contact was never written.
	loser := ContactIDFor("typeform:x1")
	if loser == v.Contact.ID {
		loser = ContactIDFor("typeform:x2")
	}
	if _, err := newWorker(t, tb, tb.ddb, c).GetContact(context.Background(), ContactQuery{ID: loser}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("loser contact exists: %v", err)
	}
}

// Twilio callbacks delivered in reverse order end with the terminal status and its duration.
func TestCallCallbacksInReverseOrderEndTerminal(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c)
	phone := "+14155550123"
	for _, ev := range []*canonical.Event{callback(4, "completed", phone, 63), callback(3, "in-progress", phone, 0),
		callback(2, "ringing", phone, 0), callback(1, "queued", phone, 0)} {
		mustApply(t, w, ev)
	}
	v := getContact(t, w, ContactQuery{Phone: "(415) 555-0123"})
	if len(v.Timeline) != 1 {
		t.Fatalf("%d activities, want one per CallSid", len(v.Timeline))
	}
	a := v.Timeline[0].Activity
	if a.Status != "completed" || a.Outcome != "completed" || a.DurationSec != 63 || len(a.Entries) != 4 {
		t.Fatalf("call = status %q outcome %q duration %d entries %d", a.Status, a.Outcome, a.DurationSec, len(a.Entries))
	}
	if got := v.Contact.Fields["last_call_status"].Value; got != "completed" {
		t.Errorf("last_call_status = %q (latest rule)", got)
	}
}

// A field locked by a revops user is not changed by a later lead; the audit says why.
func TestLockedFieldBlockedForLaterLead(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c)
	mustApply(t, w, lead("typeform:l1", "lee@acme.com", t0, map[string]string{"first_name": "Lee"}))
	change := &canonical.Event{Key: "crm:chg-1", Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: t0.Add(time.Minute),
		GroupKey: "email:lee@acme.com", Subject: canonical.Person{Emails: []string{"lee@acme.com"}},
		Actor:       &canonical.Actor{Email: "alice@example.com", Role: "revops", Type: "user"},
		Fields:      map[string]map[string]string{"contact": {"phone": "+14155550199"}, "contact" + LockSuffix: {"phone": "lock"}},
		PayloadHash: "h-chg-1", MappingVersion: "crm/1"}
	mustApply(t, w, change)
	later := lead("typeform:l2", "lee@acme.com", t0.Add(2*time.Minute), map[string]string{"phone": "+14155550000"})
	later.Source = "meta-leads"
	res := mustApply(t, w, later)
	v := getContact(t, w, ContactQuery{Email: "lee@acme.com"})
	if f := v.Contact.Fields["phone"]; f.Value != "+14155550199" || f.LockedBy != "alice@example.com" {
		t.Fatalf("phone = %+v", f)
	}
	var blocked bool
	for _, a := range v.Audit {
		if a.EventKey == later.Key && a.Field == "phone" {
			blocked = a.Decision == "blocked_by_lock" && a.Rule == "lock" && a.Reason == "locked by alice@example.com"
		}
	}
	if !blocked {
		t.Fatalf("no blocked_by_lock audit entry: %+v", v.Audit)
	}
	if res.Outcome != store.Applied { // the lead's form activity still lands on the timeline
		t.Errorf("outcome = %+v", res)
	}
}

// flakyHydrator fails transiently for one resource, and 404s for another.
type flakyHydrator struct{}

func (flakyHydrator) Hydrate(_ context.Context, ev *canonical.Event, _ connector.Secret, _ connector.API) error {
	switch ev.Hydrate.Resource {
	case "transient":
		return connector.ErrTransient
	case "gone":
		return connector.ErrNotFound
	}
	ev.Kind = canonical.KindLeadSubmitted
	ev.Fields = map[string]map[string]string{"contact": {"first_name": "Hy"}}
	return nil
}

func notification(key, email, resource string) *canonical.Event {
	return &canonical.Event{Key: key, Source: "meta-leads", Kind: canonical.KindNotification, OccurredAt: t0,
		GroupKey: "email:" + email, Subject: canonical.Person{Emails: []string{email}},
		Hydrate: &canonical.HydrateRef{Object: "lead", Resource: resource}, PayloadHash: "h-" + key}
}

// A transient failure holds back its message and the rest of its group; other groups carry on;
// permanent failures are recorded REJECTED and acknowledged.
func TestBatchOrderingWithTransientFailure(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c, func(cfg *Config) {
		cfg.Hydrators = map[string]Hydration{"meta-leads": {Hydrator: flakyHydrator{}, SecretID: "s"}}
		cfg.Secrets = SecretFunc(func(context.Context, string) (connector.Secret, error) { return connector.Secret{}, nil })
	})
	a1 := lead("typeform:a1", "a@acme.com", t0, map[string]string{"first_name": "A"})
	a2 := notification("meta-leads:a2", "a@acme.com", "transient")
	a3 := lead("typeform:a3", "a@acme.com", t0.Add(time.Minute), map[string]string{"last_name": "Later"})
	b1 := lead("typeform:b1", "b@acme.com", t0, map[string]string{"first_name": "B"})
	b2 := notification("meta-leads:b2", "b@acme.com", "gone")
	b3 := lead("typeform:b3", "b@acme.com", t0.Add(time.Minute), map[string]string{"last_name": "Bee"})
	batch := events.SQSEvent{Records: []events.SQSMessage{
		message(t, "a1", a1), message(t, "b1", b1), message(t, "a2", a2), message(t, "b2", b2),
		message(t, "a3", a3), message(t, "b3", b3),
		{MessageId: "junk", Body: `{"key":"generic:junk","source":"generic"}`, Attributes: map[string]string{"MessageGroupId": "g-junk"}},
		{MessageId: "junk2", Body: `not json`, Attributes: map[string]string{"MessageGroupId": "g-junk2"}},
	}}
	resp, err := w.Handle(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, f := range resp.BatchItemFailures {
		failed = append(failed, f.ItemIdentifier)
	}
	if d := cmp.Diff([]string{"a2", "a3"}, failed); d != "" {
		t.Fatalf("batch item failures (-want +got): %s", d)
	}
	va := getContact(t, w, ContactQuery{Email: "a@acme.com"})
	if _, ok := va.Contact.Fields["last_name"]; ok {
		t.Error("a3 applied although a2 before it failed")
	}
	vb := getContact(t, w, ContactQuery{Email: "b@acme.com"})
	if vb.Contact.Fields["last_name"].Value != "Bee" {
		t.Error("group b did not carry on")
	}
	for key, reason := range map[string]string{"meta-leads:b2": "vendor object not found", "generic:junk": "empty kind"} {
		led, err := w.getLedger(context.Background(), key)
		if err != nil || led == nil || led.Outcome != store.Rejected {
			t.Fatalf("%s ledger = %+v, %v", key, led, err)
		}
		if !contains(led.Reason, reason) {
			t.Errorf("%s reason = %q, want it to mention %q", key, led.Reason, reason)
		}
	}
	// The retry of a2/a3 succeeds once the vendor recovers: order is kept.
	w.cfg.Hydrators["meta-leads"] = Hydration{Hydrator: flakyHydrator{}}
	a2.Hydrate.Resource = "ok"
	retry := events.SQSEvent{Records: []events.SQSMessage{message(t, "a2", a2), message(t, "a3", a3)}}
	if resp, _ := w.Handle(context.Background(), retry); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("retry failed: %+v", resp)
	}
	va = getContact(t, w, ContactQuery{Email: "a@acme.com"})
	if va.Contact.Fields["last_name"].Value != "Later" {
		t.Errorf("a3 not applied on retry: %+v", va.Contact.Fields)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// The same key with a different payload is flagged and never applied.
func TestSameKeyDifferentPayloadFlagged(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c)
	mustApply(t, w, lead("typeform:f1", "fay@acme.com", t0, map[string]string{"first_name": "Fay"}))
	evil := lead("typeform:f1", "fay@acme.com", t0, map[string]string{"first_name": "Mallory"})
	evil.PayloadHash = "different"
	res := mustApply(t, w, evil)
	if !res.Flagged || res.Outcome != "" {
		t.Fatalf("result = %+v", res)
	}
	led, _ := w.getLedger(context.Background(), "typeform:f1")
	if !led.Flagged || led.Conflicts != 1 || led.ConflictingHash != "different" || led.Outcome != store.Applied {
		t.Fatalf("ledger = %+v", led)
	}
	if v := getContact(t, w, ContactQuery{Email: "fay@acme.com"}); v.Contact.Fields["first_name"].Value != "Fay" {
		t.Fatal("conflicting payload applied")
	}
}

// A forced re-run records who and why in the ledger and the audit trail and changes nothing
// else when the effects are already there; Rebuild recomputes the record from the ledger.
func TestReplayAndRebuild(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c)
	phone := "+14155550177"
	mustApply(t, w, callback(2, "completed", phone, 30))
	mustApply(t, w, callback(1, "ringing", phone, 0))
	before := getContact(t, w, ContactQuery{Phone: phone})

	res, err := w.Replay(context.Background(), "twilio:call:CA1:2", "ops@example.com", "verify after incident")
	if err != nil || res.Outcome == "" {
		t.Fatalf("replay: %+v %v", res, err)
	}
	led, _ := w.getLedger(context.Background(), "twilio:call:CA1:2")
	if len(led.Reruns) != 1 || led.Reruns[0].By != "ops@example.com" || led.Reruns[0].Why != "verify after incident" {
		t.Fatalf("reruns = %+v", led.Reruns)
	}
	after := getContact(t, w, ContactQuery{Phone: phone})
	if d := cmp.Diff(before.Contact.Fields, after.Contact.Fields); d != "" {
		t.Errorf("replay changed fields: %s", d)
	}
	var rerunAudit bool
	for _, a := range after.Audit {
		rerunAudit = rerunAudit || (a.Decision == "rerun" && a.RerunBy == "ops@example.com")
	}
	if !rerunAudit {
		t.Error("no rerun audit entry")
	}
	if _, err := w.Replay(context.Background(), "nope", "a", "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("replay of unknown key: %v", err)
	}

	rb, err := w.Rebuild(context.Background(), after.Contact.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Rebuild folds the events in the order the worker decided them, so every field rebuilds
	// exactly — phone too (owner_wins_unless_blank: the first non-owner writer applied, the
	// later callback, wins) — and the forced re-run is folded as the third decision.
	if d := cmp.Diff(after.Contact.Fields, rb.Fields); d != "" {
		t.Errorf("rebuilt fields differ from stored: %s", d)
	}
	if want := []string{"twilio:call:CA1:2", "twilio:call:CA1:1", "twilio:call:CA1:2"}; !slices.Equal(rb.Events, want) {
		t.Errorf("rebuilt from %v, want %v", rb.Events, want)
	}
	if len(rb.Activities) != 1 || !jsonEqual(rb.Activities[0], after.Timeline[0].Activity) {
		t.Errorf("rebuilt timeline differs:\n%+v\n%+v", rb.Activities, after.Timeline)
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// An activity whose person is unknown waits unassociated and moves under the contact that
// later claims the identity.
func TestUnassociatedActivityAdoptedByNewContact(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c)
	mg := &canonical.Event{Key: "mailgun:ev1", Source: "mailgun", Kind: canonical.KindEmailEvent, OccurredAt: t0,
		GroupKey: "email:uma@acme.com", Subject: canonical.Person{Emails: []string{"uma@acme.com"}},
		Activity: &canonical.Activity{ID: "email:<m1@us.com>", Type: "email", Status: "delivered"}, PayloadHash: "h-mg1"}
	res := mustApply(t, w, mg)
	if res.Outcome != store.Applied || res.ContactID != "" {
		t.Fatalf("unassociated result = %+v", res)
	}
	mustApply(t, w, lead("typeform:u1", "uma@acme.com", t0.Add(time.Minute), map[string]string{"first_name": "Uma"}))
	v := getContact(t, w, ContactQuery{Email: "uma@acme.com"})
	if len(v.Timeline) != 2 {
		t.Fatalf("timeline has %d activities, want the adopted email and the form", len(v.Timeline))
	}
	// A later event of the moved activity follows it under the contact.
	opened := *mg
	opened.Key, opened.PayloadHash, opened.OccurredAt = "mailgun:ev2", "h-mg2", t0.Add(2*time.Minute)
	opened.Activity = &canonical.Activity{ID: "email:<m1@us.com>", Type: "email", Status: "opened"}
	mustApply(t, w, &opened)
	v = getContact(t, w, ContactQuery{Email: "uma@acme.com"})
	for _, e := range v.Timeline {
		if e.Activity.ID == "email:<m1@us.com>" && (e.Activity.Status != "opened" || len(e.Activity.Entries) != 2 ||
			e.Assoc.Contact == nil || e.Assoc.Contact.Via != "uma@acme.com") {
			t.Fatalf("email activity = %+v, %+v", e.Activity, e.Assoc)
		}
	}
}

// Two workers racing on the same event (a re-delivery picked up while the first is still
// running): one applies it, the other's ledger condition fails and it acknowledges a duplicate.
func TestSameEventRacingIsAppliedOnce(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	r := newRace(2)
	ev := lead("typeform:same", "sam@acme.com", t0, map[string]string{"first_name": "Sam"})
	var wg sync.WaitGroup
	results := make([]Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = newWorker(t, tb, &gate{DynamoAPI: tb.ddb, g: r}, c).Apply(context.Background(), ev)
		}()
	}
	wg.Wait()
	applied, dups := 0, 0
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("worker %d: %v", i, errs[i])
		}
		if results[i].Outcome == store.Applied {
			applied++
		}
		if results[i].Duplicate {
			dups++
		}
	}
	if applied != 1 || dups != 1 {
		t.Fatalf("results = %+v", results)
	}
	v := getContact(t, newWorker(t, tb, tb.ddb, c), ContactQuery{Email: "sam@acme.com"})
	if v.Contact.Version != 1 || len(v.Audit) != 1 {
		t.Fatalf("applied twice: version %d, audit %d", v.Contact.Version, len(v.Audit))
	}
}

// A CRM change creates an account (claiming its domain) and a deal; a later call from one of the
// account's people is associated contact → account → deal, each link saying how it was made.
func TestAssociationThroughAccountAndDeal(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	w := newWorker(t, tb, tb.ddb, c)
	chg := &canonical.Event{Key: "crm:acct-1", Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: t0,
		GroupKey: "email:dan@acme.com", Subject: canonical.Person{Emails: []string{"dan@acme.com"}, Phones: []string{"+14155550142"}},
		Actor: &canonical.Actor{Email: "alice@example.com", Role: "revops"},
		Fields: map[string]map[string]string{
			"contact": {"first_name": "Dan"}, "account": {"name": "Acme", "domain": "acme.com"},
			"deal": {"name": "Acme renewal", "stage": "proposal"}},
		ExternalIDs: map[string]string{"deal_id": "d-1"}, PayloadHash: "h-acct-1"}
	mustApply(t, w, chg)
	// Someone else at acme.com: their contact joins the domain's account.
	mustApply(t, w, lead("typeform:eve", "eve@acme.com", t0.Add(time.Minute), map[string]string{"first_name": "Eve"}))
	ve := getContact(t, w, ContactQuery{Email: "eve@acme.com"})
	if ve.Contact.AccountID != AccountIDFor("acme.com") {
		t.Fatalf("eve's account = %q", ve.Contact.AccountID)
	}
	if a := ve.Timeline[0].Assoc; a.Account == nil || a.Account.Method != association.EmailDomain || a.Deal == nil ||
		a.Deal.ID != "d-1" || a.Deal.Method != association.LatestOpenDeal {
		t.Fatalf("eve's form associations = %+v %+v", a.Account, a.Deal)
	}
	ev := callback(1, "completed", "+14155550142", 12)
	mustApply(t, w, ev)
	v := getContact(t, w, ContactQuery{Email: "dan@acme.com"})
	var call *TimelineEntry
	for i := range v.Timeline {
		if v.Timeline[i].Activity.ID == "call:CA1" {
			call = &v.Timeline[i]
		}
	}
	if call == nil {
		t.Fatalf("no call on dan's timeline: %+v", v.Timeline)
	}
	want := association.Result{
		Contact: &association.Link{ID: v.Contact.ID, Method: association.Phone, Via: "+14155550142"},
		Account: &association.Link{ID: AccountIDFor("acme.com"), Method: association.ContactAccount},
		Deal:    &association.Link{ID: "d-1", Method: association.LatestOpenDeal},
	}
	if d := cmp.Diff(want, call.Assoc); d != "" {
		t.Fatalf("call associations (-want +got): %s", d)
	}
}

// queryCounter counts the Query requests a worker makes (the index reads of its decision path).
type queryCounter struct {
	DynamoAPI
	mu      sync.Mutex
	queries int
}

func (q *queryCounter) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	q.mu.Lock()
	q.queries++
	q.mu.Unlock()
	return q.DynamoAPI.Query(ctx, in, o...)
}

// BatchGetItem passes through, so the worker reads ahead as it does on a real client.
func (q *queryCounter) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	return q.DynamoAPI.(batchGetter).BatchGetItem(ctx, in, o...)
}

// An activity's deal is decided when it is first stored with an account: a later event of the
// call keeps it, records its time on that deal (not on the account's newest open deal), and
// does not list the account's deals again.
func TestLaterEventsOfAnActivityKeepItsDeal(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	counted := &queryCounter{DynamoAPI: tb.ddb}
	w := newWorker(t, tb, counted, c)
	mustApply(t, w, &canonical.Event{Key: "crm:acct-1", Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: t0,
		GroupKey: "email:dan@acme.com", Subject: canonical.Person{Emails: []string{"dan@acme.com"}, Phones: []string{"+14155550142"}},
		Actor: &canonical.Actor{Email: "alice@example.com", Role: "revops"},
		Fields: map[string]map[string]string{
			"contact": {"first_name": "Dan"}, "account": {"name": "Acme", "domain": "acme.com"},
			"deal": {"name": "Acme renewal", "stage": "proposal"}},
		ExternalIDs: map[string]string{"deal_id": "d-1"}, PayloadHash: "h-acct-1"})
	mustApply(t, w, callback(1, "ringing", "+14155550142", 0)) // t0+10s: the call joins d-1
	// A second deal opens and gets a later activity: it is now the account's latest open deal.
	mustApply(t, w, &canonical.Event{Key: "crm:deal-2", Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: t0.Add(20 * time.Second),
		GroupKey: "email:eve@acme.com", Subject: canonical.Person{Emails: []string{"eve@acme.com"}},
		Actor:       &canonical.Actor{Email: "alice@example.com", Role: "revops"},
		Fields:      map[string]map[string]string{"contact": {"first_name": "Eve"}, "deal": {"name": "Acme expansion", "stage": "proposal"}},
		ExternalIDs: map[string]string{"deal_id": "d-2"}, PayloadHash: "h-deal-2"})
	form := lead("typeform:eve", "eve@acme.com", t0.Add(30*time.Second), map[string]string{"first_name": "Eve"})
	form.ExternalIDs = map[string]string{"deal_id": "d-2"}
	mustApply(t, w, form)

	counted.mu.Lock()
	counted.queries = 0
	counted.mu.Unlock()
	mustApply(t, w, callback(5, "completed", "+14155550142", 40)) // t0+50s
	if counted.queries != 0 {
		t.Errorf("the completed callback made %d Query requests, want 0: the call's deal was already decided", counted.queries)
	}
	lastActivity := func(id string) string {
		t.Helper()
		var rec store.Record
		out, err := tb.ddb.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String(tb.crm), ConsistentRead: aws.Bool(true),
			Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: store.PK(store.Deal, id)},
				"sk": &types.AttributeValueMemberS{Value: store.SKProfile}}})
		if err != nil || attributevalue.UnmarshalMap(out.Item, &rec) != nil {
			t.Fatalf("read deal %s: %v", id, err)
		}
		return rec.LastActivityAt
	}
	if got, want := lastActivity("d-1"), store.FormatTime(t0.Add(50*time.Second)); got != want {
		t.Errorf("d-1 last_activity_at = %s, want %s (the call's own deal)", got, want)
	}
	if got, want := lastActivity("d-2"), store.FormatTime(t0.Add(30*time.Second)); got != want {
		t.Errorf("d-2 last_activity_at = %s, want %s (the call is not its activity)", got, want)
	}
	v := getContact(t, w, ContactQuery{Email: "dan@acme.com"})
	for _, entry := range v.Timeline {
		if entry.Activity.ID == "call:CA1" && (entry.Assoc.Deal == nil || entry.Assoc.Deal.ID != "d-1") {
			t.Errorf("call's deal = %+v, want d-1", entry.Assoc.Deal)
		}
	}
}

// An event with no activity and no deal fields (a CRM edit of a contact field) needs no deal:
// the account's deals are not listed for it.
func TestEventWithoutActivityListsNoDeals(t *testing.T) {
	tb := provision(t)
	counted := &queryCounter{DynamoAPI: tb.ddb}
	w := newWorker(t, tb, counted, newClock(t0.Add(time.Hour)))
	mustApply(t, w, &canonical.Event{Key: "crm:acct-1", Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: t0,
		GroupKey: "email:dan@acme.com", Subject: canonical.Person{Emails: []string{"dan@acme.com"}},
		Actor: &canonical.Actor{Email: "alice@example.com", Role: "revops"},
		Fields: map[string]map[string]string{
			"contact": {"first_name": "Dan"}, "account": {"name": "Acme", "domain": "acme.com"},
			"deal": {"name": "Acme renewal", "stage": "proposal"}},
		ExternalIDs: map[string]string{"deal_id": "d-1"}, PayloadHash: "h-acct-1"})
	counted.mu.Lock()
	counted.queries = 0
	counted.mu.Unlock()
	res := mustApply(t, w, &canonical.Event{Key: "crm:title", Source: "crm", Kind: canonical.KindCRMChange, OccurredAt: t0.Add(time.Minute),
		GroupKey: "email:dan@acme.com", Subject: canonical.Person{Emails: []string{"dan@acme.com"}},
		Actor:  &canonical.Actor{Email: "alice@example.com", Role: "revops"},
		Fields: map[string]map[string]string{"contact": {"job_title": "CFO"}}, PayloadHash: "h-title"})
	if res.Outcome != store.Applied {
		t.Fatalf("CRM edit: %+v", res)
	}
	if counted.queries != 0 {
		t.Errorf("a CRM edit without an activity made %d Query requests, want 0", counted.queries)
	}
}
