package worker

import (
	"slices"
	"sort"
	"strings"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/decide"
	"github.com/crmsync/crmsync/shared/identity"
)

// identities returns the event subject's normalised emails and phones, deduplicated, in order.
func identities(person canonical.Person) (emails, phones []string) {
	for _, raw := range person.Emails {
		if email, ok := identity.Email(raw); ok && !slices.Contains(emails, email) {
			emails = append(emails, email)
		}
	}
	for _, raw := range person.Phones {
		if phone, ok := identity.Phone(raw); ok && !slices.Contains(phones, phone) {
			phones = append(phones, phone)
		}
	}
	return emails, phones
}

// proposal builds the decision package's proposal for one entity of an event.
func proposal(ev *canonical.Event, entity string) decide.Proposal {
	prop := decide.Proposal{Source: ev.Source, EventKey: ev.Key, OccurredAt: ev.OccurredAt, Fields: ev.Fields[entity]}
	if actor := ev.Actor; actor != nil {
		prop.Actor = firstNonEmpty(actor.Email, actor.ID, actor.Name)
		prop.Role = actor.Role
	}
	for field, op := range ev.Fields[entity+LockSuffix] {
		switch strings.ToLower(op) {
		case "lock":
			prop.Lock = append(prop.Lock, field)
		case "unlock":
			prop.Unlock = append(prop.Unlock, field)
		}
	}
	sort.Strings(prop.Lock)
	sort.Strings(prop.Unlock)
	return prop
}

// empty reports whether a proposal asks for nothing.
func empty(prop decide.Proposal) bool {
	return len(prop.Fields) == 0 && len(prop.Lock) == 0 && len(prop.Unlock) == 0
}

// firstNonEmpty returns the first of values that is not empty.
func firstNonEmpty(values ...string) string {
	for _, value := range values {
		if value != "" {
			return value
		}
	}
	return ""
}

// actorName names who made an event's changes, for the audit.
func actorName(ev *canonical.Event) string {
	if actor := ev.Actor; actor != nil {
		if name := firstNonEmpty(actor.Email, actor.ID, actor.Name); name != "" {
			return name
		}
	}
	return ev.Source
}
