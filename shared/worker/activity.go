package worker

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// storedActivity is where an event's activity lives and what is stored of it.
type storedActivity struct {
	// pk is the partition the activity is stored under: its contact's, or UNASSOC.
	pk string
	// item is the stored item, nil when the activity is new. An item with an empty PK is the
	// content of an UNASSOC item the contact takes over (retire is then set).
	item *store.ActivityItem
	// retire is the tombstone of the UNASSOC item the contact takes over, if any.
	retire *activityWrite
	// absent are the items the write relies on staying absent.
	absent []itemKey
}

// mergeActivity merges the event's activity into its stored form. It returns the activity write
// (nil when nothing changed), the write that retires the UNASSOC item when the activity was
// waiting unassociated, and the items the writes rely on staying absent.
func (pl *planner) mergeActivity(ctx context.Context) (write, retire *activityWrite, absent []itemKey, err error) {
	found, err := pl.locateActivity(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	var stored *timeline.Activity
	var prev int64
	isNew := true
	current := found.item
	if current != nil {
		if stored, err = decodeActivity(current); err != nil {
			return nil, nil, nil, err
		}
		if current.PK != "" {
			prev, isNew = current.Version, false
		}
	}
	merged := timeline.Merge(stored, pl.ev)
	item := pl.mergedItem(found, &merged)
	if current != nil && current.PK != "" && found.retire == nil {
		before := *current
		before.Version, before.UpdatedAt = 0, ""
		after := item
		after.Version, after.UpdatedAt = 0, ""
		if sameActivityItem(before, after) {
			return nil, nil, nil, nil
		}
	}
	item.Version = prev + 1
	item.UpdatedAt = store.FormatTime(pl.now)
	return &activityWrite{item: item, prev: prev, isNew: isNew, evicted: evicted(stored, &merged, pl.ev)},
		found.retire, found.absent, nil
}

// evicted lists the entries of the stored activity, and the event's own, that the merged
// activity no longer holds: the timeline keeps only its newest timeline.MaxEntries.
func evicted(stored, merged *timeline.Activity, ev *canonical.Event) []timeline.Entry {
	kept := make(map[string]bool, len(merged.Entries))
	for _, entry := range merged.Entries {
		kept[entry.Key] = true
	}
	var out []timeline.Entry
	if stored != nil {
		for _, entry := range stored.Entries {
			if !kept[entry.Key] {
				out = append(out, entry)
			}
		}
	}
	if !kept[ev.Key] && !slices.ContainsFunc(out, func(e timeline.Entry) bool { return e.Key == ev.Key }) &&
		(stored == nil || !slices.ContainsFunc(stored.Entries, func(e timeline.Entry) bool { return e.Key == ev.Key })) {
		out = append(out, timeline.Entry{Key: ev.Key, Source: ev.Source, Kind: ev.Kind, At: ev.OccurredAt.UTC()})
	}
	return out
}

// locateActivity reads where the event's activity is stored. Events of different FIFO groups
// run concurrently, and one interaction can reach crmsync through several (a Graph email to
// Grace and Mailgun's delivery event for it), so:
//   - a new activity under a contact, when no UNASSOC item for it exists, relies on none being
//     created meanwhile (else an event parking the same activity concurrently would split it);
//   - an activity parked as UNASSOC is recorded as pending on the subject's unclaimed
//     identities, conditioned on their staying unclaimed (planner.markPending): a contact that
//     claims one first cancels this event's transaction, one that claims it later adopts.
func (pl *planner) locateActivity(ctx context.Context) (storedActivity, error) {
	id := pl.ev.Activity.ID
	contact := pl.contactRecord()
	found := storedActivity{pk: store.PKUnassociated}
	if contact != nil {
		found.pk = contact.PK
	}
	current, err := pl.reader.activity(ctx, found.pk, id)
	if err != nil {
		return found, err
	}
	if current != nil && current.MovedTo != "" { // an UNASSOC tombstone: the activity lives under its contact now
		found.pk = store.PK(store.Contact, current.MovedTo)
		if current, err = pl.reader.activity(ctx, found.pk, id); err != nil {
			return found, err
		}
	}
	if current == nil && contact != nil {
		parked, err := pl.reader.activity(ctx, store.PKUnassociated, id)
		if err != nil {
			return found, err
		}
		switch {
		case parked == nil:
			found.absent = append(found.absent, itemKey{store.PKUnassociated, store.ActivitySK(id)})
		case parked.MovedTo == "":
			current = &store.ActivityItem{Doc: parked.Doc, PlainDoc: parked.PlainDoc, Identities: parked.Identities, Assoc: parked.Assoc, Log: parked.Log}
			found.retire = tombstone(parked, contact.ID, pl.now)
		}
	}
	found.item = current
	return found, nil
}

// mergedItem is the activity item holding the merged activity: links once made are kept and
// missing ones filled from this event's association, and the subject's identities are added.
func (pl *planner) mergedItem(found storedActivity, merged *timeline.Activity) store.ActivityItem {
	id := pl.ev.Activity.ID
	item := store.ActivityItem{PK: found.pk, SK: store.ActivitySK(id), ActivityID: id}
	if found.item != nil {
		item.Assoc, item.Identities, item.Log = found.item.Assoc, found.item.Identities, found.item.Log
	}
	if item.Log == "" {
		// A new activity (or one stored before logs): its log is named after where it is stored
		// now and never moves, even when the activity does.
		item.Log = store.ActivityLogPK(found.pk, id)
	}
	if item.Assoc.Contact == nil && found.pk != store.PKUnassociated {
		item.Assoc.Contact = pl.assoc.Contact
	}
	if item.Assoc.Account == nil {
		item.Assoc.Account = pl.assoc.Account
	}
	if item.Assoc.Deal == nil {
		item.Assoc.Deal = pl.assoc.Deal
	}
	for _, email := range pl.emails {
		item.Identities = addSorted(item.Identities, "email:"+email)
	}
	for _, phone := range pl.phones {
		item.Identities = addSorted(item.Identities, "phone:"+phone)
	}
	fillActivityItem(&item, merged, found.pk)
	return item
}

// fillActivityItem sets an activity item's document, summary and index attributes from its
// merged activity, stored under pk.
func fillActivityItem(item *store.ActivityItem, activity *timeline.Activity, pk string) {
	document, _ := json.Marshal(activity)
	item.SetDoc(string(document))
	item.Type, item.Status = activity.Type, activity.Status
	item.OccurredAt = store.FormatTime(activity.FirstAt)
	item.Unassoc, item.ContactID, item.AccountID, item.DealID = "", "", "", ""
	if pk == store.PKUnassociated {
		item.Park()
	} else {
		item.ContactID = strings.TrimPrefix(pk, "CONTACT#")
	}
	if item.Assoc.Account != nil {
		item.AccountID = item.Assoc.Account.ID
	}
	if item.Assoc.Deal != nil {
		item.DealID = item.Assoc.Deal.ID
	}
}

// sameActivityItem reports whether two activity items hold the same attributes.
func sameActivityItem(first, second store.ActivityItem) bool {
	encodedFirst, _ := json.Marshal(first)
	encodedSecond, _ := json.Marshal(second)
	return string(encodedFirst) == string(encodedSecond)
}

// tombstone retires an UNASSOC item whose activity moved under a contact: it leaves the sparse
// index (unassoc removed) and says where the activity went.
func tombstone(parked *store.ActivityItem, contactID string, now time.Time) *activityWrite {
	retired := store.ActivityItem{PK: parked.PK, SK: parked.SK, ActivityID: parked.ActivityID, Type: parked.Type, Status: parked.Status,
		OccurredAt: parked.OccurredAt, MovedTo: contactID, Version: parked.Version + 1, UpdatedAt: store.FormatTime(now), PlainDoc: "{}"}
	return &activityWrite{item: retired, prev: parked.Version}
}

// adopt moves the unassociated activities pending on the identities the contact claims under
// it (at most maxMoves; the rest stay pending on the claim for the consistency job), skipping
// those the plan already writes. Each is read strongly consistently: no index is read.
func (pl *planner) adopt(ctx context.Context, contact *store.Record, newIdentities []string, planned []*activityWrite) ([]*activityWrite, error) {
	var out []*activityWrite
	adopted := map[string]bool{}
	for _, id := range pl.pendingActivities() {
		if len(adopted) >= maxMoves {
			break
		}
		adopted[id] = true
		if slices.ContainsFunc(planned, func(w *activityWrite) bool { return w.item.ActivityID == id }) {
			continue
		}
		parked, err := pl.reader.activity(ctx, store.PKUnassociated, id)
		if err != nil {
			return nil, err
		}
		if parked == nil || parked.MovedTo != "" {
			continue
		}
		if existing, err := pl.reader.activity(ctx, contact.PK, id); err != nil {
			return nil, err
		} else if existing != nil {
			continue
		}
		moved := *parked
		moved.PK = contact.PK
		moved.Assoc.Contact = adoptLink(contact.ID, newIdentities, parked.Identities)
		activity, err := decodeActivity(parked)
		if err != nil {
			return nil, err
		}
		if activity == nil {
			continue
		}
		fillActivityItem(&moved, activity, contact.PK)
		moved.Version, moved.UpdatedAt = 1, store.FormatTime(pl.now)
		out = append(out, &activityWrite{item: moved, isNew: true}, tombstone(parked, contact.ID, pl.now))
	}
	for i := range pl.plan.claims {
		claim := &pl.plan.claims[i].item
		claim.Pending = slices.DeleteFunc(slices.Clone(claim.Pending), func(id string) bool { return adopted[id] })
	}
	return out, nil
}

// pendingActivities lists, sorted and once each, the activities pending on the identities this
// event claims.
func (pl *planner) pendingActivities() []string {
	var ids []string
	for _, claim := range pl.plan.claims {
		ids = append(ids, claim.item.Pending...)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// adoptLink says how an adopted activity was linked: the first new identity it carries.
func adoptLink(contactID string, newIdentities, carried []string) *association.Link {
	for _, tag := range newIdentities {
		if !slices.Contains(carried, tag) {
			continue
		}
		if phone, ok := strings.CutPrefix(tag, "phone:"); ok {
			return &association.Link{ID: contactID, Method: association.Phone, Via: phone}
		}
		return &association.Link{ID: contactID, Method: association.ExactEmail, Via: strings.TrimPrefix(tag, "email:")}
	}
	return &association.Link{ID: contactID, Method: association.ExactEmail}
}

// addSorted inserts value into a sorted list unless it is there already.
func addSorted(list []string, value string) []string {
	i, found := slices.BinarySearch(list, value)
	if found {
		return list
	}
	return slices.Insert(list, i, value)
}
