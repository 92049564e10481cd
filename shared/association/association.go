// Package association owns how crmsync links an activity to CRM records (design section 6):
// the external person's identities → contact (exact email, else phone) → account (the contact's
// account, else the account of the email's domain; free-mail domains never match) → deal (an
// explicit deal id, else the account's open deal with the latest activity), recording how each
// link was made. An activity's deal is decided once, by the first of its events applied with an
// account: later events keep it (or keep it without one) and do not list the account's deals.
//
// The decision is pure: every fact it needs comes through the Lookups interface, which the worker
// backs with its CRM table reads and tests back with Static.
package association

import (
	"context"
	"fmt"
	"time"

	"github.com/crmsync/crmsync/shared/identity"
)

// Method names how a link was made.
type Method string

// The ways a link is made.
const (
	// ExactEmail: the contact owns one of the person's email addresses.
	ExactEmail Method = "exact_email"
	// Phone: the contact owns one of the person's phone numbers.
	Phone Method = "phone"
	// EmailDomain: the account owns the (non-free-mail) domain of the person's email.
	EmailDomain Method = "email_domain"
	// ExplicitID: the event named the account or deal itself.
	ExplicitID Method = "explicit_id"
	// ContactAccount: the account is the contact's own account.
	ContactAccount Method = "contact_account"
	// LatestOpenDeal: the deal is the account's open deal with the latest activity.
	LatestOpenDeal Method = "latest_open_deal"
)

// Link is one association and how it was made.
type Link struct {
	// ID is the linked record's id.
	ID string `json:"id" dynamodbav:"id"`
	// Method is how the link was made.
	Method Method `json:"method" dynamodbav:"method"`
	// Via is the identity or domain that matched, when one did (e.g. "example.com").
	Via string `json:"via,omitempty" dynamodbav:"via,omitempty"`
}

// Result is an activity's associations; nil links did not match.
type Result struct {
	// Contact is the person's contact.
	Contact *Link `json:"contact,omitempty" dynamodbav:"contact,omitempty"`
	// Account is the contact's or the domain's account.
	Account *Link `json:"account,omitempty" dynamodbav:"account,omitempty"`
	// Deal is the explicit or latest open deal.
	Deal *Link `json:"deal,omitempty" dynamodbav:"deal,omitempty"`
}

// Associated reports whether the activity has a contact (an activity without one is stored as
// unassociated).
func (r Result) Associated() bool { return r.Contact != nil }

// Deal is what association needs to know of one of an account's deals.
type Deal struct {
	// ID is the deal id.
	ID string
	// Open is false once the deal is won or lost.
	Open bool
	// LastActivityAt is the occurred_at of the deal's latest activity (zero if none).
	LastActivityAt time.Time
}

// Lookups answers association's questions. Each returns "" (or nil) and no error when nothing
// matches.
type Lookups interface {
	// ContactByEmail returns the contact owning a normalised email address.
	ContactByEmail(ctx context.Context, email string) (string, error)
	// ContactByPhone returns the contact owning an E.164 phone number.
	ContactByPhone(ctx context.Context, phone string) (string, error)
	// AccountOfContact returns the account a contact belongs to.
	AccountOfContact(ctx context.Context, contactID string) (string, error)
	// AccountByDomain returns the account owning an email domain.
	AccountByDomain(ctx context.Context, domain string) (string, error)
	// DealsOfAccount returns an account's deals.
	DealsOfAccount(ctx context.Context, accountID string) ([]Deal, error)
}

// Input is what association starts from.
type Input struct {
	// Emails and Phones are the external person's identities in priority order (the event's
	// subject first). They are normalised here; invalid ones are skipped. Participants who
	// are the company's own users must not be included.
	Emails []string
	// Phones are the person's phone numbers, any format identity.Phone accepts.
	Phones []string
	// Contact, when set, is a contact the caller already resolved (e.g. one it is creating
	// for this event); it is used as is.
	Contact *Link
	// AccountID is an explicit account id carried by the event, if any.
	AccountID string
	// DealID is an explicit deal id carried by the event, if any.
	DealID string
	// DealDecided says the deal is not to be looked for: the activity is already stored with an
	// account, so its deal was decided then (ActivityDeal, nil when it got none) — an activity's
	// deal is decided once, and its later events do not list the account's deals again — or the
	// caller has nothing to link to a deal. An explicit DealID still links one that was none.
	DealDecided bool
	// ActivityDeal is the deal the stored activity is linked to, when DealDecided.
	ActivityDeal *Link
}

// Associate decides an activity's contact, account and deal.
func Associate(ctx context.Context, in Input, lk Lookups) (Result, error) {
	var r Result
	if in.Contact != nil {
		c := *in.Contact
		r.Contact = &c
	}
	if r.Contact == nil {
		c, err := FindContact(ctx, in.Emails, in.Phones, lk)
		if err != nil {
			return r, err
		}
		r.Contact = c
	}

	switch {
	case in.AccountID != "":
		r.Account = &Link{ID: in.AccountID, Method: ExplicitID}
	case r.Contact != nil:
		id, err := lk.AccountOfContact(ctx, r.Contact.ID)
		if err != nil {
			return r, fmt.Errorf("account of contact: %w", err)
		}
		if id != "" {
			r.Account = &Link{ID: id, Method: ContactAccount}
		}
	}
	if r.Account == nil {
		for _, raw := range in.Emails {
			e, ok := identity.Email(raw)
			if !ok {
				continue
			}
			d := identity.Domain(e)
			if d == "" || identity.FreeMail(d) {
				continue
			}
			id, err := lk.AccountByDomain(ctx, d)
			if err != nil {
				return r, fmt.Errorf("account by domain: %w", err)
			}
			if id != "" {
				r.Account = &Link{ID: id, Method: EmailDomain, Via: d}
				break
			}
		}
	}

	switch {
	case in.DealDecided && in.ActivityDeal != nil:
		d := *in.ActivityDeal
		r.Deal = &d
	case in.DealID != "":
		r.Deal = &Link{ID: in.DealID, Method: ExplicitID}
	case in.DealDecided:
		// Decided without a deal: it stays without one.
	case r.Account != nil:
		deals, err := lk.DealsOfAccount(ctx, r.Account.ID)
		if err != nil {
			return r, fmt.Errorf("deals of account: %w", err)
		}
		if d, ok := LatestOpen(deals); ok {
			r.Deal = &Link{ID: d.ID, Method: LatestOpenDeal}
		}
	}
	return r, nil
}

// FindContact returns the contact owning the first of the identities that matches: emails
// first, then phones; nil when none does.
func FindContact(ctx context.Context, emails, phones []string, lk Lookups) (*Link, error) {
	for _, raw := range emails {
		e, ok := identity.Email(raw)
		if !ok {
			continue
		}
		id, err := lk.ContactByEmail(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("contact by email: %w", err)
		}
		if id != "" {
			return &Link{ID: id, Method: ExactEmail, Via: e}, nil
		}
	}
	for _, raw := range phones {
		p, ok := identity.Phone(raw)
		if !ok {
			continue
		}
		id, err := lk.ContactByPhone(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("contact by phone: %w", err)
		}
		if id != "" {
			return &Link{ID: id, Method: Phone, Via: p}, nil
		}
	}
	return nil, nil
}

// LatestOpen returns the open deal with the latest activity; ties (and deals without activity)
// go to the higher id, so the answer does not depend on the order deals are listed in.
func LatestOpen(deals []Deal) (Deal, bool) {
	var best Deal
	found := false
	for _, d := range deals {
		if !d.Open {
			continue
		}
		if !found || d.LastActivityAt.After(best.LastActivityAt) ||
			(d.LastActivityAt.Equal(best.LastActivityAt) && d.ID > best.ID) {
			best, found = d, true
		}
	}
	return best, found
}

// Static is an in-memory Lookups: maps from identity, domain and ids to what they resolve to.
// Rebuild and tests use it.
type Static struct {
	// Emails maps a normalised email to a contact id.
	Emails map[string]string
	// Phones maps an E.164 phone to a contact id.
	Phones map[string]string
	// ContactAccounts maps a contact id to its account id.
	ContactAccounts map[string]string
	// Domains maps an email domain to an account id.
	Domains map[string]string
	// Deals maps an account id to its deals.
	Deals map[string][]Deal
}

// ContactByEmail implements Lookups.
func (s Static) ContactByEmail(_ context.Context, e string) (string, error) { return s.Emails[e], nil }

// ContactByPhone implements Lookups.
func (s Static) ContactByPhone(_ context.Context, p string) (string, error) { return s.Phones[p], nil }

// AccountOfContact implements Lookups.
func (s Static) AccountOfContact(_ context.Context, c string) (string, error) {
	return s.ContactAccounts[c], nil
}

// AccountByDomain implements Lookups.
func (s Static) AccountByDomain(_ context.Context, d string) (string, error) {
	return s.Domains[d], nil
}

// DealsOfAccount implements Lookups.
func (s Static) DealsOfAccount(_ context.Context, a string) ([]Deal, error) { return s.Deals[a], nil }
