package oracle

import (
	"strings"
	"testing"
	"time"

	"github.com/crmsync/crmsync/config"
)

func t0(min int) time.Time { return time.Date(2026, 3, 1, 10, min, 0, 0, time.UTC) }

func events() []Event {
	ada := []string{"ada@example.com"}
	return []Event{
		{Key: "typeform:1", Source: "typeform", OccurredAt: t0(10), Person: "p1", Emails: ada,
			Contact:     map[string]string{"first_name": "Ada", "company": "AE", "utm_source": "linkedin", "last_activity_at": "10"},
			AccountName: "AE", Domain: "example.com", Activity: &Activity{ID: "form:1", Type: "form", Status: "submitted"}},
		{Key: "meta-leads:2", Source: "meta-leads", OccurredAt: t0(5), Person: "p1", Emails: ada, Phones: []string{"+14155550100"},
			Contact:  map[string]string{"first_name": "Ada", "company": "AE Ltd", "utm_source": "facebook"},
			Activity: &Activity{ID: "form:2", Type: "form", Status: "submitted"}},
		{Key: "twilio:call:CA1:1", Source: "twilio", OccurredAt: t0(20), Person: "p1", Phones: []string{"+14155550100"},
			Contact:  map[string]string{"last_activity_at": "20", "last_call_status": "ringing"},
			Activity: &Activity{ID: "call:CA1", Type: "call", Status: "ringing"}},
		{Key: "twilio:call:CA1:2", Source: "twilio", OccurredAt: t0(15), Person: "p1", Phones: []string{"+14155550100"},
			Contact:  map[string]string{"last_activity_at": "15", "last_call_status": "completed"},
			Activity: &Activity{ID: "call:CA1", Type: "call", Status: "completed"}},
		{Key: "mailgun:9", Source: "mailgun", OccurredAt: t0(1), Person: "p2", Emails: []string{"bob@gmail.com"},
			Activity: &Activity{ID: "email:m1", Type: "email", Status: "delivered"}},
	}
}

// The rules of design section 5 and 6, applied plainly.
func TestExpect(t *testing.T) {
	p, err := ParsePolicy(config.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	x := Expect(p, events())
	ada := x["p1"]
	if !ada.HasContact || strings.Join(ada.Identities, ",") != "email:ada@example.com,phone:+14155550100" {
		t.Fatalf("p1: contact %v identities %v", ada.HasContact, ada.Identities)
	}
	for f, want := range map[string]Field{
		"first_name":       {Value: "Ada"},                                                      // owner_wins_unless_blank: value only
		"company":          {Value: "AE", Source: "typeform", EventKey: "typeform:1"},           // precedence: typeform 40 > meta 30
		"utm_source":       {Value: "facebook", Source: "meta-leads", EventKey: "meta-leads:2"}, // first_touch
		"last_activity_at": {Value: "20", Source: "twilio", EventKey: "twilio:call:CA1:1"},      // latest
		"last_call_status": {Value: "ringing", Source: "twilio", EventKey: "twilio:call:CA1:1"},
	} {
		if got := ada.Fields[f]; got != want {
			t.Errorf("p1 %s = %+v, want %+v", f, got, want)
		}
	}
	if ada.AccountDomain != "example.com" || ada.AccountName != "AE" {
		t.Errorf("p1 account %s %s", ada.AccountDomain, ada.AccountName)
	}
	call := ada.Activities["call:CA1"]
	if call.Status != "completed" || strings.Join(call.Keys, ",") != "twilio:call:CA1:1,twilio:call:CA1:2" {
		t.Errorf("call: status %q keys %v (a status never regresses)", call.Status, call.Keys)
	}
	bob := x["p2"]
	if bob.HasContact || bob.Activities["email:m1"] == nil {
		t.Errorf("p2: no event proposes contact fields: want no contact and one unassociated activity, got %+v", bob)
	}
}

// Compare finds each kind of difference.
func TestCompare(t *testing.T) {
	p, _ := ParsePolicy(config.PolicyYAML)
	x := Expect(p, events())
	good := func() *Actual {
		a := &Actual{Owners: map[string]string{"email:ada@example.com": "c1", "phone:+14155550100": "c1"},
			Contacts: map[string]*Contact{"c1": {ID: "c1", Identities: x["p1"].Identities, AccountID: "a1", Fields: map[string]Field{},
				Activities: map[string]*Timeline{}}},
			Unassociated: map[string]*Timeline{"email:m1": {ID: "email:m1", Type: "email", Status: "delivered", Keys: []string{"mailgun:9"}}},
			Homes:        map[string][]string{}, DomainAccounts: map[string]string{"example.com": "a1"}, Accounts: map[string]string{"a1": "AE"},
			Audits: map[string]int{}}
		for f, v := range x["p1"].Fields {
			a.Contacts["c1"].Fields[f] = v
		}
		for id, tl := range x["p1"].Activities {
			c := *tl
			a.Contacts["c1"].Activities[id] = &c
		}
		return a
	}
	if r := Compare(x, good()); r.DivergedRecords+r.DivergedTimelines+r.DuplicateActivities+r.DuplicateAudits != 0 {
		t.Fatalf("a faithful CRM differs: %v", r.Diffs)
	}
	for _, c := range []struct {
		name   string
		mutate func(a *Actual)
		want   string
	}{
		{"wrong provenance", func(a *Actual) {
			a.Contacts["c1"].Fields["utm_source"] = Field{Value: "facebook", Source: "x", EventKey: "y"}
		}, "written by"},
		{"split contact", func(a *Actual) {
			a.Owners["phone:+14155550100"] = "c2"
			a.Contacts["c2"] = &Contact{ID: "c2"}
		}, "split"},
		{"missing activity", func(a *Actual) { delete(a.Contacts["c1"].Activities, "form:2") }, "form:2 missing"},
		{"activity left unassociated", func(a *Actual) {
			a.Unassociated["form:2"] = a.Contacts["c1"].Activities["form:2"]
			delete(a.Contacts["c1"].Activities, "form:2")
		}, "left unassociated"},
		{"regressed status", func(a *Actual) { a.Contacts["c1"].Activities["call:CA1"].Status = "ringing" }, "status"},
		{"duplicate activity", func(a *Actual) { a.Homes["call:CA1"] = []string{"CONTACT#c1", "UNASSOC"} }, "held in 2 places"},
		{"duplicate audit", func(a *Actual) { a.Audits["k|contact|phone|"] = 2 }, "written 2 times"},
		{"orphan contact", func(a *Actual) { a.Contacts["c9"] = &Contact{ID: "c9"} }, "belongs to no generated person"},
		{"wrong account", func(a *Actual) { a.Accounts["a1"] = "Other" }, "account name"},
	} {
		a := good()
		c.mutate(a)
		r := Compare(x, a)
		if !strings.Contains(strings.Join(r.Diffs, "\n"), c.want) {
			t.Errorf("%s: diffs %v do not mention %q", c.name, r.Diffs, c.want)
		}
	}
}
