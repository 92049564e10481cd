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
func Compare(expected map[string]*Person, actual *Actual) Report {
	var report Report
	ids := make([]string, 0, len(expected))
	for id := range expected {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	claimed := map[string]bool{} // contacts some person accounts for
	seenUnassociated := map[string]bool{}
	for _, person := range expected {
		for activityID := range person.Activities {
			seenUnassociated[activityID] = true // a person's activity left unassociated counts against that person
		}
	}
	for _, id := range ids {
		report.comparePerson(id, expected[id], actual, claimed, seenUnassociated)
	}
	report.countOrphanContacts(actual, claimed)
	report.countStrayActivities(actual, seenUnassociated)
	report.countDuplicates(actual)
	return report
}

// comparePerson compares one person's record and timeline, counting and describing how they
// diverge; it marks the contacts the person accounts for as claimed, and the unassociated
// activities that are theirs as seen.
func (r *Report) comparePerson(id string, person *Person, actual *Actual, claimed, seenUnassociated map[string]bool) {
	r.People++
	var recordDiffs, timelineDiffs []string
	var timeline map[string]*Timeline
	if person.HasContact {
		r.Contacts++
		recordDiffs, timelineDiffs, timeline = comparePersonWithContact(person, actual, claimed)
	} else {
		recordDiffs, timeline = comparePersonWithoutContact(person, actual, seenUnassociated)
	}
	if timeline != nil || len(person.Activities) > 0 {
		timelineDiffs = append(timelineDiffs, compareTimeline(person.Activities, timeline)...)
	}
	if len(recordDiffs) > 0 {
		r.DivergedRecords++
		r.diff("person %s record: %s", id, strings.Join(recordDiffs, "; "))
	}
	if len(timelineDiffs) > 0 {
		r.DivergedTimelines++
		r.diff("person %s timeline: %s", id, strings.Join(timelineDiffs, "; "))
	}
}

// comparePersonWithContact finds the one contact owning the person's identities (marking every
// owner claimed) and compares it; timeline is that contact's activities (nil when there is no
// such contact), timelineDiffs the person's activities left unassociated instead.
func comparePersonWithContact(person *Person, actual *Actual, claimed map[string]bool) (recordDiffs, timelineDiffs []string, timeline map[string]*Timeline) {
	owners := map[string]bool{}
	for _, identity := range person.Identities {
		if owner := actual.Owners[identity]; owner != "" {
			owners[owner] = true
		}
	}
	switch {
	case len(owners) == 0:
		recordDiffs = append(recordDiffs, "no contact owns its identities")
	case len(owners) > 1:
		recordDiffs = append(recordDiffs, fmt.Sprintf("identities split across %d contacts", len(owners)))
	}
	for contactID := range owners {
		claimed[contactID] = true
	}
	var contact *Contact
	for contactID := range owners {
		if len(owners) == 1 {
			contact = actual.Contacts[contactID]
			if contact == nil {
				recordDiffs = append(recordDiffs, "identity claimed for contact "+contactID+" with no profile")
			}
		}
	}
	if contact == nil {
		return recordDiffs, nil, nil
	}
	recordDiffs = append(recordDiffs, compareContact(person, contact, actual)...)
	timeline = contact.Activities
	for activityID := range person.Activities {
		if timeline[activityID] == nil && actual.Unassociated[activityID] != nil {
			timelineDiffs = append(timelineDiffs, "activity "+activityID+" left unassociated")
		}
	}
	return recordDiffs, timelineDiffs, timeline
}

// comparePersonWithoutContact checks that no contact claims the identities of a person no event
// proposes contact fields for; timeline is the person's activities found unassociated (marked
// seen).
func comparePersonWithoutContact(person *Person, actual *Actual, seenUnassociated map[string]bool) (recordDiffs []string, timeline map[string]*Timeline) {
	for _, identity := range person.Identities {
		if owner := actual.Owners[identity]; owner != "" {
			recordDiffs = append(recordDiffs, "no event proposes contact fields, yet "+identity+" is claimed by "+owner)
		}
	}
	timeline = map[string]*Timeline{}
	for activityID := range person.Activities {
		if activity := actual.Unassociated[activityID]; activity != nil {
			timeline[activityID] = activity
			seenUnassociated[activityID] = true
		}
	}
	return recordDiffs, timeline
}

// countOrphanContacts counts (as diverged records) the contacts no person claimed.
func (r *Report) countOrphanContacts(actual *Actual, claimed map[string]bool) {
	var orphans []string
	for contactID := range actual.Contacts {
		if !claimed[contactID] {
			orphans = append(orphans, contactID)
		}
	}
	sort.Strings(orphans)
	for _, contactID := range orphans {
		r.DivergedRecords++
		r.diff("contact %s belongs to no generated person", contactID)
	}
}

// countStrayActivities counts (as diverged timelines) the unassociated activities of no person.
func (r *Report) countStrayActivities(actual *Actual, seenUnassociated map[string]bool) {
	var stray []string
	for activityID := range actual.Unassociated {
		if !seenUnassociated[activityID] {
			stray = append(stray, activityID)
		}
	}
	sort.Strings(stray)
	for _, activityID := range stray {
		r.DivergedTimelines++
		r.diff("activity %s is unassociated and belongs to no generated person", activityID)
	}
}

// countDuplicates counts the activities held live in more than one place and the audit entries
// written more than once.
func (r *Report) countDuplicates(actual *Actual) {
	for activityID, homes := range actual.Homes {
		if len(homes) > 1 {
			r.DuplicateActivities++
			r.diff("activity %s is held in %d places: %v", activityID, len(homes), homes)
		}
	}
	for key, n := range actual.Audits {
		if n > 1 {
			r.DuplicateAudits++
			r.diff("audit entry %s written %d times", key, n)
		}
	}
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
