package worker

import (
	"context"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/store"
)

// lookups backs association with the CRM table, seeing the plan's in-memory contact.
type lookups struct {
	reader  reader
	contact *store.Record
}

// ContactByEmail reads the email's identity claim.
func (l lookups) ContactByEmail(ctx context.Context, email string) (string, error) {
	return l.reader.claimOwner(ctx, store.IdentEmailPK(email), store.SKIdent)
}

// ContactByPhone reads the phone's identity claim.
func (l lookups) ContactByPhone(ctx context.Context, phone string) (string, error) {
	return l.reader.claimOwner(ctx, store.IdentPhonePK(phone), store.SKIdent)
}

// AccountOfContact answers from the plan's contact, else reads the contact's profile.
func (l lookups) AccountOfContact(ctx context.Context, id string) (string, error) {
	if l.contact != nil && l.contact.ID == id {
		return l.contact.AccountID, nil
	}
	rec, err := l.reader.record(ctx, store.Contact, id)
	if err != nil || rec == nil {
		return "", err
	}
	return rec.AccountID, nil
}

// AccountByDomain reads the domain's claim.
func (l lookups) AccountByDomain(ctx context.Context, domain string) (string, error) {
	return l.reader.claimOwner(ctx, store.DomainPK(domain), store.SKDomain)
}

// DealsOfAccount lists the account's deals through the ByAccount index.
func (l lookups) DealsOfAccount(ctx context.Context, accountID string) ([]association.Deal, error) {
	records, err := l.reader.deals(ctx, accountID)
	if err != nil {
		return nil, err
	}
	out := make([]association.Deal, 0, len(records))
	for _, deal := range records {
		last, err := store.ParseTime(deal.LastActivityAt)
		if err != nil {
			return nil, permanent("deal %s last_activity_at: %v", deal.ID, err)
		}
		out = append(out, association.Deal{ID: deal.ID, Open: deal.Open(), LastActivityAt: last})
	}
	return out, nil
}
