package store

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// An event's audit item expands into the per-field entries readers show, with the event's
// attributes on each and the re-run's own entry attributed to who forced it.
func TestAuditEventItemExpandsPerField(t *testing.T) {
	item := AuditEventItem{PK: "CONTACT#c1", SK: AuditEventSK("2026-12-02T00:00:00.000000000Z", "twilio:CA1:3") + "#rerun-1",
		Entity: Contact, RecordID: "c1", EventKey: "twilio:CA1:3", Source: "twilio", Actor: "twilio",
		OccurredAt: "2026-12-02T00:00:00.000000000Z", RecordedAt: "2026-12-02T00:00:01.000000000Z", PolicyVersion: "p1",
		RerunBy: "ops@acme.com", RerunWhy: "fix"}
	decisions := []AuditDecision{
		{Field: "last_call_status", Decision: "applied", Rule: "latest", Proposed: "completed",
			Before: Field{Value: "ringing", EventKey: "twilio:CA1:1"}, After: Field{Value: "completed", EventKey: "twilio:CA1:3"}},
		{Field: "_rerun", Decision: "rerun", Rule: "forced_rerun", Reason: "fix"},
	}
	if err := item.SetDecisions(decisions); err != nil {
		t.Fatal(err)
	}
	got, err := item.Entries()
	if err != nil {
		t.Fatal(err)
	}
	want := []AuditItem{
		{PK: "CONTACT#c1", SK: item.SK + "#last_call_status", Entity: Contact, RecordID: "c1", Field: "last_call_status",
			Before: decisions[0].Before, After: decisions[0].After, Decision: "applied", Rule: "latest", PolicyVersion: "p1",
			Source: "twilio", Actor: "twilio", EventKey: "twilio:CA1:3", OccurredAt: item.OccurredAt, RecordedAt: item.RecordedAt,
			Proposed: "completed", RerunBy: "ops@acme.com", RerunWhy: "fix"},
		{PK: "CONTACT#c1", SK: item.SK + "#_rerun", Entity: Contact, RecordID: "c1", Field: "_rerun", Decision: "rerun",
			Rule: "forced_rerun", Reason: "fix", PolicyVersion: "p1", Source: "twilio", Actor: "ops@acme.com", EventKey: "twilio:CA1:3",
			OccurredAt: item.OccurredAt, RecordedAt: item.RecordedAt, RerunBy: "ops@acme.com", RerunWhy: "fix"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}
