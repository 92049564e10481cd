package decide

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestOwnerWritesOrdered: under owner_only and owner_wins_unless_blank the owner's writes are
// ordered by (occurred_at, event key) like latest without authority, so an older owner edit
// delivered (or replayed) after a newer one loses; an owner write still beats any value a
// non-owner wrote, whatever the times. Among the system of record's writes to a locked field,
// the newest stands too.
//
// Written before the fix; on the old code the ordering cases failed, e.g.
//
//	got stage applied owner_only "owner_only: owner crm writes"
//	want stage rejected owner_only "owner_only: current value is from a later owner event c2 (crm, 2026-11-01T14:00:00Z)"
//
// and "owner older same value" / "owner same value over vendor" came out noop where they must
// move the provenance (applied).
func TestOwnerWritesOrdered(t *testing.T) {
	pol := realPolicy(t)
	stageC2 := pv("won", "crm", "c2", 2)
	emailC2 := pv("new@x.com", "crm", "c2", 2)
	emailTF := pv("tf@x.com", "typeform", "t1", 5)

	tests := []struct {
		name    string
		entity  string
		field   string
		cur     Provenance
		prop    Proposal
		outcome Outcome
		rule    string
		reason  string // exact unless it ends in "…", then a prefix
		after   Provenance
	}{
		// owner_only (deal.stage, owner crm)
		{"owner_only older owner edit after newer rejected", "deal", "stage", stageC2, prop("crm", "c1", 1, "stage", "new"),
			Rejected, "owner_only", "owner_only: current value is from a later owner event c2 (crm, 2026-11-01T14:00:00Z)", stageC2},
		{"owner_only newer owner edit after older applied", "deal", "stage", pv("new", "crm", "c1", 1), prop("crm", "c2", 2, "stage", "won"),
			Applied, "owner_only", "owner_only: owner crm writes (later event)", stageC2},
		{"owner_only into blank", "deal", "stage", Provenance{}, prop("crm", "c1", 1, "stage", "new"),
			Applied, "owner_only", "owner_only: owner crm writes; field was blank", pv("new", "crm", "c1", 1)},
		{"owner_only tie higher key wins", "deal", "stage", pv("new", "crm", "k1", 2), prop("crm", "k2", 2, "stage", "won"),
			Applied, "owner_only", "owner_only: owner crm writes (tied, higher-key event)", pv("won", "crm", "k2", 2)},
		{"owner_only tie lower key loses", "deal", "stage", pv("new", "crm", "k2", 2), prop("crm", "k1", 2, "stage", "won"),
			Rejected, "owner_only", "owner_only: current value is from a tied, higher-key owner event k2 (crm, 2026-11-01T14:00:00Z)", pv("new", "crm", "k2", 2)},
		{"owner_only older same value noop", "deal", "stage", stageC2, prop("crm", "c1", 1, "stage", "won"),
			Noop, "owner_only", "same value as current", stageC2},
		{"owner_only newer same value moves provenance", "deal", "stage", pv("won", "crm", "c1", 1), prop("crm", "c2", 2, "stage", "won"),
			Applied, "owner_only", "same value; provenance moves to later owner event c2", stageC2},
		{"owner_only duplicate delivery noop", "deal", "stage", stageC2, prop("crm", "c2", 2, "stage", "won"),
			Noop, "owner_only", "same value as current", stageC2},
		{"owner_only blank from owner noop", "deal", "stage", stageC2, prop("crm", "c3", 9, "stage", ""),
			Noop, "owner_only", "blank proposal", stageC2},
		{"owner_only owner over a non-owner value (written under a lock) whatever the times", "deal", "stage", pv("lost", "typeform", "t1", 9), prop("crm", "c1", 1, "stage", "won"),
			Applied, "owner_only", "owner_only: owner crm writes over typeform value", pv("won", "crm", "c1", 1)},

		// owner_wins_unless_blank (contact.email, owner crm)
		{"owbu older owner edit after newer rejected", "contact", "email", emailC2, prop("crm", "c1", 1, "email", "old@x.com"),
			Rejected, "owner_wins_unless_blank", "owner_wins_unless_blank: current value is from a later owner event c2 (crm, 2026-11-01T14:00:00Z)", emailC2},
		{"owbu newer owner edit after older applied", "contact", "email", pv("old@x.com", "crm", "c1", 1), prop("crm", "c2", 2, "email", "new@x.com"),
			Applied, "owner_wins_unless_blank", "owner_wins_unless_blank: owner crm writes (later event)", emailC2},
		{"owbu owner over vendor-filled value, though older", "contact", "email", emailTF, prop("crm", "c1", 1, "email", "crm@x.com"),
			Applied, "owner_wins_unless_blank", "owner_wins_unless_blank: owner crm writes over typeform value", pv("crm@x.com", "crm", "c1", 1)},
		{"owbu owner same value over vendor moves provenance", "contact", "email", emailTF, prop("crm", "c1", 1, "email", "tf@x.com"),
			Applied, "owner_wins_unless_blank", "same value; provenance moves to owner crm event c1 (was typeform)", pv("tf@x.com", "crm", "c1", 1)},
		{"owbu tie higher key wins", "contact", "email", pv("a@x.com", "crm", "k1", 2), prop("crm", "k2", 2, "email", "b@x.com"),
			Applied, "owner_wins_unless_blank", "owner_wins_unless_blank: owner crm writes (tied, higher-key event)", pv("b@x.com", "crm", "k2", 2)},
		{"owbu tie lower key loses", "contact", "email", pv("a@x.com", "crm", "k2", 2), prop("crm", "k1", 2, "email", "b@x.com"),
			Rejected, "owner_wins_unless_blank", "owner_wins_unless_blank: current value is from a tied, higher-key owner event k2…", pv("a@x.com", "crm", "k2", 2)},
		{"owbu non-owner after owner rejected", "contact", "email", emailC2, prop("typeform", "t9", 9, "email", "tf@x.com"),
			Rejected, "owner_wins_unless_blank", "owner_wins_unless_blank: crm owns identity and the field is set", emailC2},
		{"owbu blank from owner noop", "contact", "email", emailC2, prop("crm", "c3", 9, "email", ""),
			Noop, "owner_wins_unless_blank", "blank proposal", emailC2},

		// unlock: the value that comes with it is judged by the ordered owner rule
		{"unlock with older owner value: unlock applies, value rejected", "contact", "email", locked(emailC2, "alice"),
			withUnlock(withRole(prop("crm", "c1", 1, "email", "old@x.com"), "bob", "admin"), "email"),
			Applied, "owner_wins_unless_blank", "unlocked by bob (was locked by alice); rejected: owner_wins_unless_blank: current value is from a later owner event c2…", emailC2},
		{"unlock with newer owner value", "contact", "email", locked(emailC2, "alice"),
			withUnlock(withRole(prop("crm", "c3", 3, "email", "newest@x.com"), "bob", "admin"), "email"),
			Applied, "owner_wins_unless_blank", "unlocked by bob (was locked by alice); owner_wins_unless_blank: owner crm writes (later event)", pv("newest@x.com", "crm", "c3", 3)},

		// locks: among the system of record's writes to a locked field, the newest stands
		{"override of locked field with an older crm edit rejected", "contact", "email", locked(emailC2, "alice"),
			withRole(prop("crm", "c1", 1, "email", "old@x.com"), "bob", "revops"),
			Rejected, RuleLock, "override by bob (revops) of field locked by alice: current value is from a later crm event c2 (crm, 2026-11-01T14:00:00Z)", locked(emailC2, "alice")},
		{"override of locked field with a newer crm edit applied", "contact", "email", locked(emailC2, "alice"),
			withRole(prop("crm", "c3", 3, "email", "newest@x.com"), "bob", "revops"),
			Applied, RuleLock, "override by bob (revops) of field locked by alice", locked(pv("newest@x.com", "crm", "c3", 3), "alice")},
		{"override same value, newer crm edit, moves provenance", "contact", "email", locked(emailC2, "alice"),
			withRole(prop("crm", "c3", 3, "email", "new@x.com"), "bob", "revops"),
			Applied, RuleLock, "same value; provenance moves to later crm event c3 (locked by alice)", locked(pv("new@x.com", "crm", "c3", 3), "alice")},
		{"override same value, older crm edit, noop", "contact", "email", locked(emailC2, "alice"),
			withRole(prop("crm", "c1", 1, "email", "new@x.com"), "bob", "revops"),
			Noop, RuleLock, "same value as current (locked by alice)", locked(emailC2, "alice")},
		{"override over a vendor value on a locked field, whatever the times", "contact", "email", locked(emailTF, "alice"),
			withRole(prop("crm", "c1", 1, "email", "crm@x.com"), "bob", "revops"),
			Applied, RuleLock, "override by bob (revops) of field locked by alice", locked(pv("crm@x.com", "crm", "c1", 1), "alice")},
		{"lock with an older crm value: locks, keeps the newer value", "contact", "email", emailC2,
			withLock(withRole(prop("crm", "c1", 1, "email", "old@x.com"), "bob", "admin"), "email"),
			Applied, RuleLock, "locked by bob; value not written: current value is from a later crm event c2 (crm, 2026-11-01T14:00:00Z)", locked(emailC2, "bob")},
		{"lock with a newer crm value writes it", "contact", "email", emailC2,
			withLock(withRole(prop("crm", "c3", 3, "email", "newest@x.com"), "bob", "admin"), "email"),
			Applied, RuleLock, "locked by bob with value written by override", locked(pv("newest@x.com", "crm", "c3", 3), "bob")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := Record{}
			if tt.cur != (Provenance{}) {
				rec[tt.field] = tt.cur
			}
			ds := Decide(pol, tt.entity, rec, tt.prop)
			if len(ds) != 1 {
				t.Fatalf("got %d decisions, want 1: %+v", len(ds), ds)
			}
			d := ds[0]
			reasonOK := d.Reason == tt.reason
			if prefix, ok := strings.CutSuffix(tt.reason, "…"); ok {
				reasonOK = strings.HasPrefix(d.Reason, prefix)
			}
			if d.Field != tt.field || d.Outcome != tt.outcome || d.Rule != tt.rule || !reasonOK {
				t.Errorf("got %s %s %s %q\nwant %s %s %s %q", d.Field, d.Outcome, d.Rule, d.Reason, tt.field, tt.outcome, tt.rule, tt.reason)
			}
			if diff := cmp.Diff(tt.after, d.After); diff != "" {
				t.Errorf("After (-want +got):\n%s", diff)
			}
		})
	}
}
