package association

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func TestAssociate(t *testing.T) {
	lk := Static{
		Emails:          map[string]string{"ann@acme.com": "c-ann", "bob@gmail.com": "c-bob"},
		Phones:          map[string]string{"+14155550100": "c-cal"},
		ContactAccounts: map[string]string{"c-ann": "a-acme-own"},
		Domains:         map[string]string{"acme.com": "a-acme", "gmail.com": "a-should-never-match", "globex.com": "a-globex"},
		Deals: map[string][]Deal{
			"a-acme-own": {
				{ID: "d-old", Open: true, LastActivityAt: t0},
				{ID: "d-new", Open: true, LastActivityAt: t0.Add(time.Hour)},
				{ID: "d-won", Open: false, LastActivityAt: t0.Add(2 * time.Hour)},
			},
			"a-globex": {{ID: "d-b", Open: true}, {ID: "d-a", Open: true}},
		},
	}
	tests := []struct {
		name string
		in   Input
		want Result
	}{
		{name: "exact email, contact's account, latest open deal",
			in: Input{Emails: []string{" Ann@ACME.com "}},
			want: Result{Contact: &Link{ID: "c-ann", Method: ExactEmail, Via: "ann@acme.com"},
				Account: &Link{ID: "a-acme-own", Method: ContactAccount},
				Deal:    &Link{ID: "d-new", Method: LatestOpenDeal}}},
		{name: "phone match when no email matches",
			in:   Input{Emails: []string{"nobody@nowhere.io"}, Phones: []string{"(415) 555-0100"}},
			want: Result{Contact: &Link{ID: "c-cal", Method: Phone, Via: "+14155550100"}}},
		{name: "free-mail domain never matches an account",
			in:   Input{Emails: []string{"bob@gmail.com"}},
			want: Result{Contact: &Link{ID: "c-bob", Method: ExactEmail, Via: "bob@gmail.com"}}},
		{name: "domain account when the contact has none; deal tie goes to higher id",
			in: Input{Emails: []string{"new@globex.com"}},
			want: Result{Account: &Link{ID: "a-globex", Method: EmailDomain, Via: "globex.com"},
				Deal: &Link{ID: "d-b", Method: LatestOpenDeal}}},
		{name: "explicit ids win",
			in: Input{Emails: []string{"ann@acme.com"}, AccountID: "a-x", DealID: "d-x"},
			want: Result{Contact: &Link{ID: "c-ann", Method: ExactEmail, Via: "ann@acme.com"},
				Account: &Link{ID: "a-x", Method: ExplicitID}, Deal: &Link{ID: "d-x", Method: ExplicitID}}},
		{name: "caller-resolved contact is kept",
			in: Input{Contact: &Link{ID: "c-fresh", Method: ExactEmail, Via: "fresh@acme.com"}, Emails: []string{"fresh@acme.com"}},
			want: Result{Contact: &Link{ID: "c-fresh", Method: ExactEmail, Via: "fresh@acme.com"},
				Account: &Link{ID: "a-acme", Method: EmailDomain, Via: "acme.com"}}},
		{name: "a stored activity keeps its deal, even when a later one is open",
			in: Input{Emails: []string{"ann@acme.com"}, DealDecided: true, ActivityDeal: &Link{ID: "d-old", Method: LatestOpenDeal}},
			want: Result{Contact: &Link{ID: "c-ann", Method: ExactEmail, Via: "ann@acme.com"},
				Account: &Link{ID: "a-acme-own", Method: ContactAccount},
				Deal:    &Link{ID: "d-old", Method: LatestOpenDeal}}},
		{name: "a stored activity keeps its deal over an explicit one",
			in: Input{Emails: []string{"ann@acme.com"}, DealID: "d-x", DealDecided: true, ActivityDeal: &Link{ID: "d-old", Method: LatestOpenDeal}},
			want: Result{Contact: &Link{ID: "c-ann", Method: ExactEmail, Via: "ann@acme.com"},
				Account: &Link{ID: "a-acme-own", Method: ContactAccount},
				Deal:    &Link{ID: "d-old", Method: LatestOpenDeal}}},
		{name: "a stored activity decided without a deal stays without one",
			in: Input{Emails: []string{"ann@acme.com"}, DealDecided: true},
			want: Result{Contact: &Link{ID: "c-ann", Method: ExactEmail, Via: "ann@acme.com"},
				Account: &Link{ID: "a-acme-own", Method: ContactAccount}}},
		{name: "an explicit deal fills one decided without a deal",
			in: Input{Emails: []string{"ann@acme.com"}, DealID: "d-x", DealDecided: true},
			want: Result{Contact: &Link{ID: "c-ann", Method: ExactEmail, Via: "ann@acme.com"},
				Account: &Link{ID: "a-acme-own", Method: ContactAccount}, Deal: &Link{ID: "d-x", Method: ExplicitID}}},
		{name: "nothing matches", in: Input{Emails: []string{"not-an-email"}, Phones: []string{"x"}}, want: Result{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Associate(context.Background(), tc.in, lk)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
			if got.Associated() != (tc.want.Contact != nil) {
				t.Error("Associated disagrees with Contact")
			}
		})
	}
}

type failing struct{ Static }

func (failing) ContactByEmail(context.Context, string) (string, error) { return "", errors.New("boom") }

func TestAssociateLookupError(t *testing.T) {
	if _, err := Associate(context.Background(), Input{Emails: []string{"a@b.com"}}, failing{}); err == nil {
		t.Fatal("lookup error swallowed")
	}
}
