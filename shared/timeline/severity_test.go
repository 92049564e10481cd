package timeline

import (
	"fmt"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
)

// A failed email delivery ranks by its severity (Mailgun's temporary_fail and permanent_fail):
// a temporary failure never overrides a delivery, in either arrival order; a permanent failure is
// final, whatever arrives after it.
func TestEmailFailureSeverityRanks(t *testing.T) {
	ev := func(n int, status string) *canonical.Event {
		return &canonical.Event{Key: fmt.Sprintf("mailgun:ev%d", n), Source: "mailgun", Kind: canonical.KindEmailEvent,
			OccurredAt: t0.Add(time.Duration(n) * time.Minute),
			Activity: &canonical.Activity{ID: "email:<m1@x>", Type: "email", Status: status,
				Attrs: map[string]string{RankedAttrPrefix + "grace@example.org": status, "reason": status}}}
	}
	tests := []struct {
		name string
		evs  []*canonical.Event
		want string
	}{
		{"temporary failure then delivered", []*canonical.Event{ev(1, "accepted"), ev(2, "temporary_fail"), ev(3, "delivered")}, "delivered"},
		{"delivered arrives before an earlier temporary failure", []*canonical.Event{ev(3, "delivered"), ev(2, "temporary_fail")}, "delivered"},
		{"a later temporary failure does not undo delivered", []*canonical.Event{ev(1, "delivered"), ev(2, "temporary_fail")}, "delivered"},
		{"temporary failure after accepted shows", []*canonical.Event{ev(1, "accepted"), ev(2, "temporary_fail")}, "temporary_fail"},
		{"accepted arriving late does not hide a later temporary failure", []*canonical.Event{ev(2, "temporary_fail"), ev(1, "accepted")}, "temporary_fail"},
		{"permanent failure after temporary ones", []*canonical.Event{ev(1, "temporary_fail"), ev(2, "temporary_fail"), ev(3, "permanent_fail")}, "permanent_fail"},
		{"permanent failure is final over a later delivered", []*canonical.Event{ev(1, "permanent_fail"), ev(2, "delivered")}, "permanent_fail"},
		{"permanent failure is final over opened and complained", []*canonical.Event{ev(3, "opened"), ev(4, "complained"), ev(1, "permanent_fail")}, "permanent_fail"},
		{"failed without severity keeps its old rank", []*canonical.Event{ev(1, "delivered"), ev(2, "failed")}, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mergeAll(tt.evs...)
			if a.Status != tt.want {
				t.Errorf("status = %q, want %q", a.Status, tt.want)
			}
			// The recipient's own status ranks the same way.
			if got := a.Attrs[RankedAttrPrefix+"grace@example.org"]; got != tt.want {
				t.Errorf("recipient status = %q, want %q", got, tt.want)
			}
			// Merge is a join: the reverse arrival order converges to the same status.
			rev := make([]*canonical.Event, len(tt.evs))
			for i, e := range tt.evs {
				rev[len(tt.evs)-1-i] = e
			}
			if got := mergeAll(rev...).Status; got != tt.want {
				t.Errorf("reversed: status = %q, want %q", got, tt.want)
			}
		})
	}
}

// Other attributes still take the latest value, whatever its status's rank.
func TestUnrankedAttrsTakeTheLatest(t *testing.T) {
	ev := func(n int, status, reason string) *canonical.Event {
		return &canonical.Event{Key: fmt.Sprintf("mailgun:ev%d", n), Source: "mailgun", Kind: canonical.KindEmailEvent,
			OccurredAt: t0.Add(time.Duration(n) * time.Minute),
			Activity:   &canonical.Activity{ID: "email:<m1@x>", Type: "email", Status: status, Attrs: map[string]string{"reason": reason}}}
	}
	tests := []struct {
		name string
		evs  []*canonical.Event
		want string
	}{
		{"in order", []*canonical.Event{ev(1, "delivered", "ok"), ev(2, "temporary_fail", "generic")}, "generic"},
		{"reversed", []*canonical.Event{ev(2, "temporary_fail", "generic"), ev(1, "delivered", "ok")}, "generic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeAll(tt.evs...).Attrs["reason"]; got != tt.want {
				t.Errorf("reason = %q, want %q", got, tt.want)
			}
		})
	}
}
