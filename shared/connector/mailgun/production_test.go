package mailgun

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/decide"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/timeline"
)

// payloads holds the sample deliveries, built from Mailgun's documented webhook payloads
// (documentation.mailgun.com, user manual → webhooks → webhook payloads).
const payloads = "../../../events/payloads"

// parseFile parses one sample delivery.
func parseFile(t *testing.T, name string) canonical.Event {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(payloads, name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New().Parse(&connector.Request{Body: b, ReceivedAt: time.Unix(1741900000, 0)}, connector.Secret{})
	if err != nil {
		t.Fatalf("Parse(%s) = %v", name, err)
	}
	if len(p.Events) != 1 {
		t.Fatalf("Parse(%s): %d events, want 1", name, len(p.Events))
	}
	if err := p.Events[0].Validate(); err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return p.Events[0]
}

const sampleMessage = "email:by5pr11mb4180c3d2a1e0f9b8c7d6e5f4a3b2c1d0@by5pr11mb4180.namprd11.prod.outlook.com"

func TestParseDocumentedPayloads(t *testing.T) {
	tests := []struct {
		file      string
		status    string
		recipient string
		attrs     map[string]string
		contact   map[string]string
		// noUserVariables: the older sample carries no user-variables member.
		noUserVariables bool
	}{
		{file: "mailgun.json", status: "delivered", recipient: "grace@example.org",
			attrs: map[string]string{"delivery_status_code": "250"}, noUserVariables: true},
		{file: "mailgun-temporary-fail.json", status: StatusTemporaryFail, recipient: "grace@example.org",
			attrs: map[string]string{"severity": "temporary", "reason": "generic", "delivery_status_code": "421"}},
		{file: "mailgun-permanent-fail.json", status: StatusPermanentFail, recipient: "alan@example.com",
			attrs: map[string]string{"severity": "permanent", "reason": "bounce", "delivery_status_code": "550"}},
		{file: "mailgun-unsubscribed.json", status: "unsubscribed", recipient: "grace@example.org",
			contact: map[string]string{FieldEmailOptOut: "true", FieldEmailOptOutReason: "unsubscribed", FieldEmailOptOutAt: "2025-03-12T15:45:01Z"}},
		{file: "mailgun-complained.json", status: "complained", recipient: "grace@example.org",
			contact: map[string]string{FieldEmailOptOut: "true", FieldEmailOptOutReason: "complained", FieldEmailOptOutAt: "2025-03-13T15:45:02Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			ev := parseFile(t, tt.file)
			a := ev.Activity
			if a.ID != sampleMessage || a.Status != tt.status {
				t.Errorf("activity %s status %q, want %s %q", a.ID, a.Status, sampleMessage, tt.status)
			}
			if got := a.Attrs[RecipientStatusAttr+tt.recipient]; got != tt.status {
				t.Errorf("attrs[%s%s] = %q, want %q (attrs %v)", RecipientStatusAttr, tt.recipient, got, tt.status, a.Attrs)
			}
			for k, want := range tt.attrs {
				if got := a.Attrs[k]; got != want {
					t.Errorf("attrs[%s] = %q, want %q", k, got, want)
				}
			}
			if diff := cmp.Diff(tt.contact, ev.Fields["contact"]); diff != "" {
				t.Errorf("contact fields (-want +got):\n%s", diff)
			}
			// Mailgun's current payloads carry account, domain and delivered-at: plumbing, not unmapped.
			wantUnmapped := []string{"event-data.user-variables"}
			if tt.noUserVariables {
				wantUnmapped = nil
			}
			if diff := cmp.Diff(wantUnmapped, ev.Unmapped); diff != "" {
				t.Errorf("unmapped (-want +got):\n%s", diff)
			}
			if ev.MappingVersion != MappingVersion || ev.Key != "mailgun:"+ev.ExternalIDs["event_id"] {
				t.Errorf("key %s mapping %s", ev.Key, ev.MappingVersion)
			}
		})
	}
}

func TestActivityStatus(t *testing.T) {
	tests := []struct{ event, severity, want string }{
		{"failed", "temporary", StatusTemporaryFail},
		{"failed", "Permanent", StatusPermanentFail},
		{"failed", "", "failed"},
		{"failed", "unknown", "failed"},
		{"delivered", "", "delivered"},
		{"delivered", "temporary", "delivered"},
		{"unsubscribed", "", "unsubscribed"},
	}
	for _, tt := range tests {
		if got := ActivityStatus(tt.event, tt.severity); got != tt.want {
			t.Errorf("ActivityStatus(%q, %q) = %q, want %q", tt.event, tt.severity, got, tt.want)
		}
	}
}

// The documented payloads merged in any order: a temporary failure never overrides the
// delivery, a permanent failure is final, and each recipient's own outcome stays visible.
func TestSeverityAndRecipientsOnTheActivity(t *testing.T) {
	temp, delivered := parseFile(t, "mailgun-temporary-fail.json"), parseFile(t, "mailgun.json")
	bounce := parseFile(t, "mailgun-permanent-fail.json")
	// A late temporary failure for Grace (Mailgun retried before it saw the delivery's answer).
	lateTemp := temp
	lateTemp.Key, lateTemp.OccurredAt = "mailgun:late", delivered.OccurredAt.Add(time.Second)
	lateTemp.Activity = cloneActivity(temp.Activity)
	// Alan's address bounced after an earlier temporary failure.
	alanTemp := bounce
	alanTemp.Key, alanTemp.OccurredAt = "mailgun:alan-temp", bounce.OccurredAt.Add(-time.Minute)
	alanTemp.Activity = cloneActivity(bounce.Activity)
	alanTemp.Activity.Status = StatusTemporaryFail
	alanTemp.Activity.Attrs = map[string]string{RecipientStatusAttr + "alan@example.com": StatusTemporaryFail}

	tests := []struct {
		name   string
		evs    []canonical.Event
		status string
		attrs  map[string]string
	}{
		{"temporary failure then delivered", []canonical.Event{temp, delivered}, "delivered",
			map[string]string{RecipientStatusAttr + "grace@example.org": "delivered"}},
		{"delivered then the earlier temporary failure", []canonical.Event{delivered, temp}, "delivered",
			map[string]string{RecipientStatusAttr + "grace@example.org": "delivered"}},
		{"a temporary failure stamped after the delivery", []canonical.Event{delivered, lateTemp}, "delivered",
			map[string]string{RecipientStatusAttr + "grace@example.org": "delivered"}},
		{"permanent failure after a temporary one", []canonical.Event{bounce, alanTemp}, StatusPermanentFail,
			map[string]string{RecipientStatusAttr + "alan@example.com": StatusPermanentFail}},
		{"one message, two recipients", []canonical.Event{temp, bounce, delivered}, StatusPermanentFail,
			map[string]string{RecipientStatusAttr + "grace@example.org": "delivered", RecipientStatusAttr + "alan@example.com": StatusPermanentFail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a *timeline.Activity
			for i := range tt.evs {
				m := timeline.Merge(a, &tt.evs[i])
				a = &m
			}
			if a.Status != tt.status {
				t.Errorf("status = %q, want %q", a.Status, tt.status)
			}
			for k, want := range tt.attrs {
				if got := a.Attrs[k]; got != want {
					t.Errorf("attrs[%s] = %q, want %q (attrs %v)", k, got, want, a.Attrs)
				}
			}
			if len(a.Entries) != len(tt.evs) {
				t.Errorf("%d entries, want %d", len(a.Entries), len(tt.evs))
			}
		})
	}
}

// The recipient's own status is the attribute the timeline ranks like a status.
func TestRecipientStatusIsRanked(t *testing.T) {
	if RecipientStatusAttr != timeline.RankedAttrPrefix {
		t.Errorf("RecipientStatusAttr = %q, timeline ranks %q", RecipientStatusAttr, timeline.RankedAttrPrefix)
	}
}

func cloneActivity(a *canonical.Activity) *canonical.Activity {
	c := *a
	c.Attrs = map[string]string{}
	for k, v := range a.Attrs {
		c.Attrs[k] = v
	}
	return &c
}

// The opt-out fields an unsubscribe or complaint proposes are governed by config/policy.yaml:
// Mailgun sets them, the latest statement wins (a CRM re-consent after an unsubscribe holds until
// the next unsubscribe), and a replay of an older opt-out changes nothing.
func TestOptOutUnderThePolicy(t *testing.T) {
	pol, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{FieldEmailOptOut, FieldEmailOptOutReason, FieldEmailOptOutAt} {
		g, ok := pol.GroupOf("contact", f)
		if !ok || g.Rule != policy.Latest {
			t.Fatalf("policy: contact.%s governed by %+v, want a latest group", f, g)
		}
	}
	unsub := parseFile(t, "mailgun-unsubscribed.json")
	complaint := parseFile(t, "mailgun-complained.json")
	proposal := func(ev canonical.Event) decide.Proposal {
		return decide.Proposal{Source: ev.Source, EventKey: ev.Key, OccurredAt: ev.OccurredAt, Fields: ev.Fields["contact"]}
	}
	reconsent := decide.Proposal{Source: "crm", EventKey: "crm:reconsent", OccurredAt: unsub.OccurredAt.Add(time.Hour),
		Actor: "alice@example.com", Role: "revops", Fields: map[string]string{FieldEmailOptOut: "false"}}

	tests := []struct {
		name  string
		steps []decide.Proposal
		want  map[string]string
	}{
		{"unsubscribe opts out", []decide.Proposal{proposal(unsub)},
			map[string]string{FieldEmailOptOut: "true", FieldEmailOptOutReason: "unsubscribed", FieldEmailOptOutAt: "2025-03-12T15:45:01Z"}},
		{"a later CRM re-consent wins", []decide.Proposal{proposal(unsub), reconsent},
			map[string]string{FieldEmailOptOut: "false", FieldEmailOptOutReason: "unsubscribed", FieldEmailOptOutAt: "2025-03-12T15:45:01Z"}},
		{"a replayed older unsubscribe does not undo the re-consent", []decide.Proposal{reconsent, proposal(unsub)},
			map[string]string{FieldEmailOptOut: "false", FieldEmailOptOutReason: "unsubscribed", FieldEmailOptOutAt: "2025-03-12T15:45:01Z"}},
		{"a complaint after the re-consent opts out again", []decide.Proposal{proposal(unsub), reconsent, proposal(complaint)},
			map[string]string{FieldEmailOptOut: "true", FieldEmailOptOutReason: "complained", FieldEmailOptOutAt: "2025-03-13T15:45:02Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := decide.Record{}
			for _, p := range tt.steps {
				ds := decide.Decide(pol, "contact", rec, p)
				for _, d := range ds {
					if d.Outcome == decide.Rejected && (d.Rule == decide.RuleUnknownField || d.Rule == decide.RuleUnknownSource) {
						t.Fatalf("%s: %s rejected: %s", p.EventKey, d.Field, d.Reason)
					}
				}
				rec = decide.Apply(rec, ds)
			}
			got := map[string]string{}
			for f, pv := range rec {
				got[f] = pv.Value
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("contact fields (-want +got):\n%s", diff)
			}
		})
	}
}

// signSub returns a subaccount's delivery: signature made with the subaccount's key and
// parent-signature with the primary account's key (either may be left out or garbled).
func signSub(t *testing.T, subKey, parentKey string) *connector.Request {
	t.Helper()
	ts, token := "1700000000", "5f1e0c3b9a7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a0b2c4d6e"
	sig := map[string]string{"timestamp": ts, "token": token}
	if subKey != "" {
		sig["signature"] = hex.EncodeToString(mac(subKey, ts, token))
	}
	if parentKey != "" {
		sig["parent-signature"] = hex.EncodeToString(mac(parentKey, ts, token))
	}
	b, err := json.Marshal(map[string]any{"signature": sig, "event-data": json.RawMessage(sampleEventData)})
	if err != nil {
		t.Fatal(err)
	}
	return &connector.Request{Body: b}
}

func TestVerifyParentSignature(t *testing.T) {
	now := time.Unix(1700000000, 0)
	keys := func(signing, parent, parentPrev string) connector.Secret {
		s := connector.Secret{Current: map[string]string{}, Previous: map[string]string{}}
		if signing != "" {
			s.Current[SecretSigningKey] = signing
		}
		if parent != "" {
			s.Current[SecretParentSigningKey] = parent
		}
		if parentPrev != "" {
			s.Previous[SecretParentSigningKey] = parentPrev
		}
		return s
	}
	tests := []struct {
		name    string
		req     *connector.Request
		sec     connector.Secret
		wantErr bool
	}{
		{"parent-signature with parent_signing_key", signSub(t, "sub", "primary"), keys("", "primary", ""), false},
		{"parent-signature with the primary key as signing_key", signSub(t, "sub", "primary"), keys("primary", "", ""), false},
		{"subaccount's own signature still verifies", signSub(t, "sub", "primary"), keys("sub", "other", ""), false},
		{"previous parent key during rotation", signSub(t, "sub", "old-primary"), keys("x", "primary", "old-primary"), false},
		{"parent-signature alone", signSub(t, "", "primary"), keys("", "primary", ""), false},
		{"parent-signature from another account", signSub(t, "sub", "intruder"), keys("x", "primary", ""), true},
		{"parent key does not verify the subaccount signature", signSub(t, "primary", ""), keys("x", "primary", ""), true},
		{"no keys at all", signSub(t, "sub", "primary"), connector.Secret{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New().Verify(tt.req, tt.sec, now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Verify() = %+v, %v; wantErr %v", v, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, connector.ErrUnauthenticated) {
				t.Errorf("Verify() = %v, want ErrUnauthenticated", err)
			}
			if err == nil && v.Nonce != "mailgun:5f1e0c3b9a7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a0b2c4d6e" {
				t.Errorf("nonce = %q", v.Nonce)
			}
		})
	}
}

// Sign produces a subaccount's delivery when the secret names the primary account's key.
func TestSignSubaccountDelivery(t *testing.T) {
	now := time.Unix(1700000000, 0)
	r := &connector.Request{Body: []byte(`{"event-data": ` + sampleEventData + `}`)}
	if err := New().Sign(r, connector.Secret{Current: map[string]string{SecretSigningKey: "sub", SecretParentSigningKey: "primary"}}, now); err != nil {
		t.Fatal(err)
	}
	var b struct{ Signature signature }
	if err := json.Unmarshal(r.Body, &b); err != nil || b.Signature.ParentSignature == "" {
		t.Fatalf("signed body has no parent-signature: %s", r.Body)
	}
	if _, err := New().Verify(r, connector.Secret{Current: map[string]string{SecretParentSigningKey: "primary"}}, now); err != nil {
		t.Errorf("Verify(primary key only) = %v", err)
	}
}

// Mailgun stops retrying only on 200 and 406: a quarantined delivery is answered 406.
func TestQuarantineAnswer(t *testing.T) {
	var c connector.Connector = New()
	qa, ok := c.(connector.QuarantineAnswerer)
	if !ok {
		t.Fatal("the Mailgun connector does not choose its quarantine answer")
	}
	if got := qa.QuarantineAnswer(); got.Status != 406 || got.Body == "" {
		t.Errorf("QuarantineAnswer() = %+v, want 406", got)
	}
}
