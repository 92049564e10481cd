package oracle

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Actual is what the CRM table holds, decoded by the caller.
type Actual struct {
	// Owners maps a claimed identity ("email:<addr>", "phone:<e164>") to its contact id.
	Owners map[string]string
	// Contacts are the contact profiles by id.
	Contacts map[string]*Contact
	// Unassociated are the live (not moved) activities waiting for a contact, by id.
	Unassociated map[string]*Timeline
	// Homes lists, per activity id, every partition holding it live (not moved): a contact's, or
	// UNASSOC. More than one is a duplicate activity.
	Homes map[string][]string
	// DomainAccounts maps a claimed email domain to its account id.
	DomainAccounts map[string]string
	// Accounts maps an account id to its name.
	Accounts map[string]string
	// Audits counts audit entries per "<event key>|<entity>|<field>|<rerun>"; more than one is a
	// duplicate audit entry.
	Audits map[string]int
}

// Contact is a stored contact.
type Contact struct {
	ID         string
	Identities []string
	Fields     map[string]Field
	AccountID  string
	Activities map[string]*Timeline
}

// Report is the comparison of the expected and the actual CRM.
type Report struct {
	// People is how many people were compared; Contacts how many must have a contact.
	People, Contacts int
	// DivergedRecords counts people whose contact (existence, identities, fields, account)
	// differs from the oracle, plus contacts that belong to no person.
	DivergedRecords int
	// DivergedTimelines counts people whose timeline differs (an activity of theirs left
	// unassociated included), plus unassociated activities of no person.
	DivergedTimelines int
	// DuplicateActivities counts activities held live in more than one place.
	DuplicateActivities int
	// DuplicateAudits counts audit entries written more than once.
	DuplicateAudits int
	// Diffs describes the first differences found (at most MaxDiffs).
	Diffs []string
}

// MaxDiffs bounds Report.Diffs.
const MaxDiffs = 40

func (r *Report) diff(format string, args ...any) {
	if len(r.Diffs) < MaxDiffs {
		r.Diffs = append(r.Diffs, fmt.Sprintf(format, args...))
	}
}

// Compare checks every person's expected state against the actual CRM.
func Compare(expected map[string]*Person, a *Actual) Report {
	var r Report
	ids := make([]string, 0, len(expected))
	for id := range expected {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	claimed := map[string]bool{} // contacts some person accounts for
	seenUnassoc := map[string]bool{}
	for _, x := range expected {
		for aid := range x.Activities {
			seenUnassoc[aid] = true // a person's activity left unassociated counts against that person
		}
	}
	for _, id := range ids {
		x := expected[id]
		r.People++
		var recDiffs, tlDiffs []string
		var actual map[string]*Timeline
		if x.HasContact {
			r.Contacts++
			owners := map[string]bool{}
			for _, ident := range x.Identities {
				if o := a.Owners[ident]; o != "" {
					owners[o] = true
				}
			}
			switch {
			case len(owners) == 0:
				recDiffs = append(recDiffs, "no contact owns its identities")
			case len(owners) > 1:
				recDiffs = append(recDiffs, fmt.Sprintf("identities split across %d contacts", len(owners)))
			}
			for cid := range owners {
				claimed[cid] = true
			}
			var c *Contact
			for cid := range owners {
				if len(owners) == 1 {
					c = a.Contacts[cid]
					if c == nil {
						recDiffs = append(recDiffs, "identity claimed for contact "+cid+" with no profile")
					}
				}
			}
			if c != nil {
				recDiffs = append(recDiffs, compareContact(x, c, a)...)
				actual = c.Activities
				for aid := range x.Activities {
					if actual[aid] == nil && a.Unassociated[aid] != nil {
						tlDiffs = append(tlDiffs, "activity "+aid+" left unassociated")
					}
				}
			}
		} else {
			for _, ident := range x.Identities {
				if o := a.Owners[ident]; o != "" {
					recDiffs = append(recDiffs, "no event proposes contact fields, yet "+ident+" is claimed by "+o)
				}
			}
			actual = map[string]*Timeline{}
			for aid := range x.Activities {
				if t := a.Unassociated[aid]; t != nil {
					actual[aid] = t
					seenUnassoc[aid] = true
				}
			}
		}
		if actual != nil || len(x.Activities) > 0 {
			tlDiffs = append(tlDiffs, compareTimeline(x.Activities, actual)...)
		}
		if len(recDiffs) > 0 {
			r.DivergedRecords++
			r.diff("person %s record: %s", id, strings.Join(recDiffs, "; "))
		}
		if len(tlDiffs) > 0 {
			r.DivergedTimelines++
			r.diff("person %s timeline: %s", id, strings.Join(tlDiffs, "; "))
		}
	}
	var orphans []string
	for cid := range a.Contacts {
		if !claimed[cid] {
			orphans = append(orphans, cid)
		}
	}
	sort.Strings(orphans)
	for _, cid := range orphans {
		r.DivergedRecords++
		r.diff("contact %s belongs to no generated person", cid)
	}
	var stray []string
	for aid := range a.Unassociated {
		if !seenUnassoc[aid] {
			stray = append(stray, aid)
		}
	}
	sort.Strings(stray)
	for _, aid := range stray {
		r.DivergedTimelines++
		r.diff("activity %s is unassociated and belongs to no generated person", aid)
	}
	for aid, homes := range a.Homes {
		if len(homes) > 1 {
			r.DuplicateActivities++
			r.diff("activity %s is held in %d places: %v", aid, len(homes), homes)
		}
	}
	for k, n := range a.Audits {
		if n > 1 {
			r.DuplicateAudits++
			r.diff("audit entry %s written %d times", k, n)
		}
	}
	return r
}

func compareContact(x *Person, c *Contact, a *Actual) []string {
	var d []string
	if !slices.Equal(x.Identities, c.Identities) {
		d = append(d, fmt.Sprintf("identities %v, want %v", c.Identities, x.Identities))
	}
	names := map[string]bool{}
	for f := range x.Fields {
		names[f] = true
	}
	for f := range c.Fields {
		names[f] = true
	}
	keys := make([]string, 0, len(names))
	for f := range names {
		keys = append(keys, f)
	}
	sort.Strings(keys)
	for _, f := range keys {
		want, ok := x.Fields[f]
		got, has := c.Fields[f]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("field %s = %q, not expected", f, got.Value))
		case !has:
			d = append(d, fmt.Sprintf("field %s missing, want %q", f, want.Value))
		case want.Value != got.Value:
			d = append(d, fmt.Sprintf("field %s = %q, want %q", f, got.Value, want.Value))
		case want.EventKey != "" && (want.EventKey != got.EventKey || want.Source != got.Source):
			d = append(d, fmt.Sprintf("field %s written by %s %s, want %s %s", f, got.Source, got.EventKey, want.Source, want.EventKey))
		}
	}
	if x.AccountDomain != "" {
		aid := a.DomainAccounts[x.AccountDomain]
		switch {
		case aid == "":
			d = append(d, "no account for domain "+x.AccountDomain)
		case c.AccountID != aid:
			d = append(d, fmt.Sprintf("account %q, want %q (domain %s)", c.AccountID, aid, x.AccountDomain))
		case a.Accounts[aid] != x.AccountName:
			d = append(d, fmt.Sprintf("account name %q, want %q", a.Accounts[aid], x.AccountName))
		}
	} else if c.AccountID != "" {
		d = append(d, fmt.Sprintf("account %q, want none", c.AccountID))
	}
	return d
}

func compareTimeline(want, got map[string]*Timeline) []string {
	var d []string
	ids := map[string]bool{}
	for id := range want {
		ids[id] = true
	}
	for id := range got {
		ids[id] = true
	}
	keys := make([]string, 0, len(ids))
	for id := range ids {
		keys = append(keys, id)
	}
	sort.Strings(keys)
	for _, id := range keys {
		w, g := want[id], got[id]
		switch {
		case g == nil:
			d = append(d, "activity "+id+" missing")
		case w == nil:
			d = append(d, "activity "+id+" not expected")
		default:
			if w.Status != g.Status {
				d = append(d, fmt.Sprintf("activity %s status %q, want %q", id, g.Status, w.Status))
			}
			if w.Type != g.Type {
				d = append(d, fmt.Sprintf("activity %s type %q, want %q", id, g.Type, w.Type))
			}
			if w.Canceled != g.Canceled {
				d = append(d, fmt.Sprintf("activity %s canceled %v, want %v", id, g.Canceled, w.Canceled))
			}
			if !slices.Equal(w.Keys, g.Keys) {
				d = append(d, fmt.Sprintf("activity %s history %v, want %v", id, g.Keys, w.Keys))
			}
		}
	}
	return d
}
