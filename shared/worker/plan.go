package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/association"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/decide"
	"github.com/crmsync/crmsync/shared/identity"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/timeline"
)

// LockSuffix turns an entity name into the pseudo-entity of Event.Fields that asks to lock or
// unlock its fields: Fields["contact"+LockSuffix] = {"phone": "lock"} (or "unlock").
const LockSuffix = "#lock"

// ContactIDKey is the Event.ExternalIDs key naming the contact an event is about explicitly (a
// CRM change addressed by contact id): the contact must exist, and it is used whatever the
// event's subject identities say (identities it does not own yet are claimed for it).
const ContactIDKey = "contact_id"

// MaxTransactItems is DynamoDB's limit on one TransactWriteItems.
const MaxTransactItems = 100

// maxMoves bounds how many unassociated activities one event re-associates.
const maxMoves = 10

// maxClaims bounds how many identities one event claims.
const maxClaims = 10

// ContactIDFor returns the deterministic id of a contact created by the event with this key.
func ContactIDFor(eventKey string) string { return "c-" + canonical.HashHex(eventKey)[:24] }

// AccountIDFor returns the deterministic id of an account created for an email domain.
func AccountIDFor(domain string) string { return "a-" + canonical.HashHex("domain:" + domain)[:24] }

// recordWrite is one profile to Put, conditioned on its previous version.
type recordWrite struct {
	rec   *store.Record
	prev  int64
	isNew bool
}

// activityWrite is one activity item to Put, conditioned on its previous version.
type activityWrite struct {
	item  store.ActivityItem
	prev  int64
	isNew bool
}

// plan is everything one event will write.
type plan struct {
	ledger     *store.LedgerItem
	ledgerPrev string // forced re-run: the recorded_at the ledger item must still have
	records    []*recordWrite
	claims     []store.IdentityClaim
	activities []*activityWrite
	audits     []store.AuditItem
	// absent are CRM items the plan read as absent and relies on staying absent; each becomes a
	// ConditionCheck, so an event of another group that creates one concurrently cancels this
	// transaction and this event is re-read and re-decided (see planActivity).
	absent []itemKey
}

// itemKey is a CRM table item's key.
type itemKey struct{ pk, sk string }

// entityState is one record the event touches.
type entityState struct {
	rec     *store.Record
	prev    int64
	isNew   bool
	changed bool
}

func (s *entityState) write() *recordWrite {
	return &recordWrite{rec: s.rec, prev: s.prev, isNew: s.isNew}
}

// identities returns the event subject's normalised emails and phones, deduplicated, in order.
func identities(p canonical.Person) (emails, phones []string) {
	for _, raw := range p.Emails {
		if e, ok := identity.Email(raw); ok && !slices.Contains(emails, e) {
			emails = append(emails, e)
		}
	}
	for _, raw := range p.Phones {
		if ph, ok := identity.Phone(raw); ok && !slices.Contains(phones, ph) {
			phones = append(phones, ph)
		}
	}
	return emails, phones
}

// proposal builds the decision package's proposal for one entity of an event.
func proposal(ev *canonical.Event, entity string) decide.Proposal {
	p := decide.Proposal{Source: ev.Source, EventKey: ev.Key, OccurredAt: ev.OccurredAt, Fields: ev.Fields[entity]}
	if a := ev.Actor; a != nil {
		p.Actor = firstNonEmpty(a.Email, a.ID, a.Name)
		p.Role = a.Role
	}
	for f, op := range ev.Fields[entity+LockSuffix] {
		switch strings.ToLower(op) {
		case "lock":
			p.Lock = append(p.Lock, f)
		case "unlock":
			p.Unlock = append(p.Unlock, f)
		}
	}
	sort.Strings(p.Lock)
	sort.Strings(p.Unlock)
	return p
}

// empty reports whether a proposal asks for nothing.
func empty(p decide.Proposal) bool {
	return len(p.Fields) == 0 && len(p.Lock) == 0 && len(p.Unlock) == 0
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// actorName names who made an event's changes, for the audit.
func actorName(ev *canonical.Event) string {
	if a := ev.Actor; a != nil {
		if n := firstNonEmpty(a.Email, a.ID, a.Name); n != "" {
			return n
		}
	}
	return ev.Source
}

// plan reads what the event touches and decides every write. led is the current ledger item
// (nil when absent); rr is set for a forced re-run.
func (w *Worker) plan(ctx context.Context, ev *canonical.Event, now time.Time, led *store.LedgerItem, rr *rerun) (*plan, error) {
	r := reader{w: w}
	p := &plan{ledger: w.ledgerItem(ev, now)}
	if led != nil {
		p.ledger.Reruns = led.Reruns
		p.ledger.Flagged, p.ledger.Conflicts, p.ledger.ConflictingHash = led.Flagged, led.Conflicts, led.ConflictingHash
	}
	if rr != nil {
		p.ledgerPrev = led.RecordedAt
		p.ledger.Reruns = append(slices.Clone(led.Reruns), store.Rerun{By: rr.by, Why: rr.why, At: store.FormatTime(now)})
	}
	var notes []string
	emails, phones := identities(ev.Subject)

	// Contact: the owner of the first claimed identity, else a new contact when the event
	// proposes contact fields.
	type ident struct{ pk, kind, value, owner string }
	var idents []ident
	for _, e := range emails {
		idents = append(idents, ident{pk: store.IdentEmailPK(e), kind: "email", value: e})
	}
	for _, ph := range phones {
		idents = append(idents, ident{pk: store.IdentPhonePK(ph), kind: "phone", value: ph})
	}
	var contactLink *association.Link
	for i := range idents {
		owner, err := r.claimOwner(ctx, idents[i].pk, store.SKIdent)
		if err != nil {
			return nil, err
		}
		idents[i].owner = owner
		if owner != "" && contactLink == nil {
			m := association.ExactEmail
			if idents[i].kind == "phone" {
				m = association.Phone
			}
			contactLink = &association.Link{ID: owner, Method: m, Via: idents[i].value}
		}
	}
	explicitContact := strings.TrimSpace(ev.ExternalIDs[ContactIDKey])
	if explicitContact != "" {
		contactLink = &association.Link{ID: explicitContact, Method: association.ExplicitID, Via: explicitContact}
	}
	contactProp := proposal(ev, store.Contact)
	var contact *entityState
	switch {
	case explicitContact != "":
		rec, err := r.record(ctx, store.Contact, explicitContact)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			return nil, permanent("contact %s does not exist", explicitContact)
		}
		contact = &entityState{rec: rec, prev: rec.Version}
	case contactLink != nil:
		rec, err := r.record(ctx, store.Contact, contactLink.ID)
		if err != nil {
			return nil, err
		}
		contact = &entityState{rec: rec}
		if rec == nil { // a claim without its profile: rebuild the profile under that id
			contact = &entityState{rec: store.NewRecord(store.Contact, contactLink.ID), isNew: true, changed: true}
		} else {
			contact.prev = rec.Version
		}
	case len(idents) > 0 && !empty(contactProp):
		id := ContactIDFor(ev.Key)
		m := association.ExactEmail
		if idents[0].kind == "phone" {
			m = association.Phone
		}
		contactLink = &association.Link{ID: id, Method: m, Via: idents[0].value}
		contact = &entityState{rec: store.NewRecord(store.Contact, id), isNew: true, changed: true}
	}

	var newIdents []string
	if contact != nil {
		for _, id := range idents {
			if id.owner != "" || len(p.claims) >= maxClaims {
				continue // claimed by this contact already, or by another one (never stolen)
			}
			p.claims = append(p.claims, store.IdentityClaim{PK: id.pk, SK: store.SKIdent, ContactID: contact.rec.ID,
				EventKey: ev.Key, ClaimedAt: store.FormatTime(now)})
			tag := id.kind + ":" + id.value
			if !slices.Contains(contact.rec.Identities, tag) {
				contact.rec.Identities = append(contact.rec.Identities, tag)
				sort.Strings(contact.rec.Identities)
				contact.changed = true
			}
			newIdents = append(newIdents, tag)
		}
		if !empty(contactProp) {
			ds := decide.Decide(w.cfg.Policy, store.Contact, contact.rec.Decidable(), contactProp)
			if decide.Changed(ds) {
				contact.rec.SetFields(decide.Apply(contact.rec.Decidable(), ds))
				contact.changed = true
			}
			p.audit(w, ev, now, rr, contact.rec, ds)
		}
	}

	// Association: contact → account → deal.
	explicitDeal := ev.ExternalIDs["deal_id"]
	if explicitDeal == "" && ev.Activity != nil {
		explicitDeal = ev.Activity.DealID
	}
	var contactRec *store.Record
	if contact != nil {
		contactRec = contact.rec
	}
	lk := lookups{r: r, contact: contactRec}
	assoc, err := association.Associate(ctx, association.Input{Emails: emails, Phones: phones, Contact: contactLink,
		AccountID: ev.ExternalIDs["account_id"], DealID: explicitDeal}, lk)
	if err != nil {
		return nil, err
	}

	// Account: the associated one, else one created for the proposed or email domain.
	accountProp := proposal(ev, store.Account)
	var account *entityState
	if assoc.Account != nil {
		rec, err := r.record(ctx, store.Account, assoc.Account.ID)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			account = &entityState{rec: rec, prev: rec.Version}
		} else if !empty(accountProp) {
			account = &entityState{rec: store.NewRecord(store.Account, assoc.Account.ID), isNew: true, changed: true}
		}
	} else if !empty(accountProp) {
		domain := ""
		if d := strings.ToLower(strings.TrimSpace(accountProp.Fields["domain"])); d != "" && !identity.FreeMail(d) {
			domain = d
		}
		for _, e := range emails {
			if d := identity.Domain(e); domain == "" && !identity.FreeMail(d) {
				domain = d
			}
		}
		if domain != "" {
			owner, err := r.claimOwner(ctx, store.DomainPK(domain), store.SKDomain)
			if err != nil {
				return nil, err
			}
			if owner != "" {
				rec, err := r.record(ctx, store.Account, owner)
				if err != nil {
					return nil, err
				}
				if rec != nil {
					account = &entityState{rec: rec, prev: rec.Version}
				} else {
					account = &entityState{rec: store.NewRecord(store.Account, owner), isNew: true, changed: true}
				}
			} else {
				id := AccountIDFor(domain)
				account = &entityState{rec: store.NewRecord(store.Account, id), isNew: true, changed: true}
				account.rec.Domains = []string{domain}
				p.claims = append(p.claims, store.IdentityClaim{PK: store.DomainPK(domain), SK: store.SKDomain, Account: id,
					EventKey: ev.Key, ClaimedAt: store.FormatTime(now)})
			}
			assoc.Account = &association.Link{ID: account.rec.ID, Method: association.EmailDomain, Via: domain}
		} else {
			notes = append(notes, "account fields without a domain or account id ignored")
		}
	}
	if account != nil && !empty(accountProp) {
		ds := decide.Decide(w.cfg.Policy, store.Account, account.rec.Decidable(), accountProp)
		if decide.Changed(ds) {
			account.rec.SetFields(decide.Apply(account.rec.Decidable(), ds))
			account.changed = true
		}
		p.audit(w, ev, now, rr, account.rec, ds)
	}
	if contact != nil && contact.rec.AccountID == "" && assoc.Account != nil {
		contact.rec.AccountID = assoc.Account.ID
		contact.changed = true
	}

	// Deal: proposals need an explicit deal id; an associated deal records its latest activity.
	dealProp := proposal(ev, store.Deal)
	var deal *entityState
	if assoc.Deal != nil && (!empty(dealProp) || ev.Activity != nil) {
		rec, err := r.record(ctx, store.Deal, assoc.Deal.ID)
		if err != nil {
			return nil, err
		}
		switch {
		case rec != nil:
			deal = &entityState{rec: rec, prev: rec.Version}
		case !empty(dealProp) && assoc.Deal.Method == association.ExplicitID:
			deal = &entityState{rec: store.NewRecord(store.Deal, assoc.Deal.ID), isNew: true, changed: true}
			if assoc.Account != nil {
				deal.rec.AccountID = assoc.Account.ID
			}
		}
	} else if !empty(dealProp) {
		notes = append(notes, "deal fields without a deal id ignored")
	}
	if deal != nil && !empty(dealProp) {
		ds := decide.Decide(w.cfg.Policy, store.Deal, deal.rec.Decidable(), dealProp)
		if decide.Changed(ds) {
			deal.rec.SetFields(decide.Apply(deal.rec.Decidable(), ds))
			deal.changed = true
		}
		p.audit(w, ev, now, rr, deal.rec, ds)
	}
	for ent := range ev.Fields {
		base := strings.TrimSuffix(ent, LockSuffix)
		if base != store.Contact && base != store.Account && base != store.Deal {
			notes = append(notes, fmt.Sprintf("entity %q ignored", ent))
		}
	}
	if contact == nil && !empty(contactProp) {
		notes = append(notes, "contact fields without an email or phone ignored")
	}

	// Activity: merged under the contact, or unassociated.
	if a := ev.Activity; a != nil && a.ID != "" {
		aw, moved, absent, err := w.planActivity(ctx, r, ev, now, contactRec, assoc, emails, phones)
		if err != nil {
			return nil, err
		}
		p.absent = append(p.absent, absent...)
		if aw != nil {
			p.activities = append(p.activities, aw)
		}
		if moved != nil {
			p.activities = append(p.activities, moved)
		}
		p.ledger.ActivityID = a.ID
		if deal != nil && assoc.Deal != nil && deal.rec.ID == assoc.Deal.ID &&
			ev.OccurredAt.After(store.ParseTime(deal.rec.LastActivityAt)) {
			deal.rec.LastActivityAt = store.FormatTime(ev.OccurredAt)
			deal.changed = true
		}
	}

	// A contact that gained identities adopts the unassociated activities waiting for them.
	if contact != nil && len(newIdents) > 0 {
		moves, err := w.adopt(ctx, r, contact.rec, newIdents, now, p.activities)
		if err != nil {
			return nil, err
		}
		p.activities = append(p.activities, moves...)
	}

	for _, s := range []*entityState{contact, account, deal} {
		if s != nil && s.changed {
			s.rec.Version = s.prev + 1
			s.rec.Touch(now)
			p.records = append(p.records, s.write())
		}
	}
	if contact != nil {
		p.ledger.ContactID = contact.rec.ID
	}
	if rr != nil && contact != nil {
		p.audits = append(p.audits, store.AuditItem{
			PK: contact.rec.PK, SK: store.AuditSK(ev.OccurredAt, ev.Key, "_rerun") + "-" + strconv.Itoa(len(p.ledger.Reruns)),
			Entity: store.Contact, RecordID: contact.rec.ID, Field: "_rerun", Decision: "rerun", Rule: "forced_rerun",
			Reason: rr.why, PolicyVersion: w.cfg.Policy.Version(), Source: ev.Source, Actor: rr.by, EventKey: ev.Key,
			OccurredAt: store.FormatTime(ev.OccurredAt), RecordedAt: store.FormatTime(now), RerunBy: rr.by, RerunWhy: rr.why,
		})
	}

	changed := len(p.records) > 0 || len(p.claims) > 0 || len(p.activities) > 0
	p.ledger.Outcome = store.Noop
	if changed {
		p.ledger.Outcome = store.Applied
	}
	p.ledger.Reason = p.summary(notes)
	return p, nil
}

// audit adds an audit entry for every decision that is not a noop.
func (p *plan) audit(w *Worker, ev *canonical.Event, now time.Time, rr *rerun, rec *store.Record, ds []decide.Decision) {
	for _, d := range ds {
		if d.Outcome == decide.Noop {
			continue
		}
		a := store.AuditItem{
			PK: rec.PK, SK: store.AuditSK(ev.OccurredAt, ev.Key, d.Field), Entity: rec.Entity, RecordID: rec.ID,
			Field: d.Field, Before: store.FieldFrom(d.Before), After: store.FieldFrom(d.After),
			Decision: string(d.Outcome), Rule: d.Rule, Reason: d.Reason, PolicyVersion: w.cfg.Policy.Version(),
			Source: ev.Source, Actor: actorName(ev), EventKey: ev.Key, Proposed: d.Proposed,
			OccurredAt: store.FormatTime(ev.OccurredAt), RecordedAt: store.FormatTime(now),
		}
		if rr != nil {
			a.SK += "#rerun-" + strconv.Itoa(len(p.ledger.Reruns))
			a.RerunBy, a.RerunWhy = rr.by, rr.why
		}
		p.audits = append(p.audits, a)
	}
}

// summary explains the outcome in the ledger's reason.
func (p *plan) summary(notes []string) string {
	counts := map[string]int{}
	for _, a := range p.audits {
		if a.Field != "_rerun" {
			counts[a.Decision]++
		}
	}
	var parts []string
	for _, k := range []string{"applied", "rejected", "blocked_by_lock"} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	if len(p.claims) > 0 {
		parts = append(parts, fmt.Sprintf("%d claims", len(p.claims)))
	}
	if len(p.activities) > 0 {
		parts = append(parts, fmt.Sprintf("%d activity writes", len(p.activities)))
	}
	parts = append(parts, notes...)
	if len(parts) == 0 {
		return "nothing changed"
	}
	return strings.Join(parts, "; ")
}

// planActivity merges the event's activity into its stored form. It returns the activity write
// (nil when nothing changed), the write that retires the UNASSOC item when the activity was
// waiting unassociated, and the items the writes rely on staying absent. Events of different
// FIFO groups run concurrently, and one interaction can reach crmsync through several (a Graph
// email to Grace and Mailgun's delivery event for it), so:
//   - a new activity under a contact, when no UNASSOC item for it exists, relies on none being
//     created meanwhile (else an event parking the same activity concurrently would split it);
//   - an activity parked as UNASSOC relies on the subject's unclaimed identities staying
//     unclaimed (else a contact created concurrently would never adopt it).
func (w *Worker) planActivity(ctx context.Context, r reader, ev *canonical.Event, now time.Time, contact *store.Record,
	assoc association.Result, emails, phones []string) (aw, retire *activityWrite, absent []itemKey, err error) {
	id := ev.Activity.ID
	pk := store.PKUnassociated
	if contact != nil {
		pk = contact.PK
	}
	cur, err := r.activity(ctx, pk, id)
	if err != nil {
		return nil, nil, nil, err
	}
	if cur != nil && cur.MovedTo != "" { // an UNASSOC tombstone: the activity lives under its contact now
		pk = store.PK(store.Contact, cur.MovedTo)
		if cur, err = r.activity(ctx, pk, id); err != nil {
			return nil, nil, nil, err
		}
	}
	if cur == nil && contact != nil {
		un, err := r.activity(ctx, store.PKUnassociated, id)
		if err != nil {
			return nil, nil, nil, err
		}
		switch {
		case un == nil:
			absent = append(absent, itemKey{store.PKUnassociated, store.ActivitySK(id)})
		case un.MovedTo == "":
			cur = &store.ActivityItem{Doc: un.Doc, Identities: un.Identities, Assoc: un.Assoc}
			retire = tombstone(un, contact.ID, now)
		}
	}
	if pk == store.PKUnassociated {
		for _, e := range emails {
			absent = append(absent, itemKey{store.IdentEmailPK(e), store.SKIdent})
		}
		for _, ph := range phones {
			absent = append(absent, itemKey{store.IdentPhonePK(ph), store.SKIdent})
		}
		if len(absent) > maxClaims {
			absent = absent[:maxClaims]
		}
	}
	var stored *timeline.Activity
	var prev int64
	isNew := true
	if cur != nil {
		if stored, err = doc(cur); err != nil {
			return nil, nil, nil, err
		}
		if cur.PK != "" {
			prev, isNew = cur.Version, false
		}
	}
	merged := timeline.Merge(stored, ev)
	item := store.ActivityItem{PK: pk, SK: store.ActivitySK(id), ActivityID: id}
	if cur != nil {
		item.Assoc, item.Identities = cur.Assoc, cur.Identities
	}
	// Links once made are kept; missing ones are filled from this event's association.
	if item.Assoc.Contact == nil && pk != store.PKUnassociated {
		item.Assoc.Contact = assoc.Contact
	}
	if item.Assoc.Account == nil {
		item.Assoc.Account = assoc.Account
	}
	if item.Assoc.Deal == nil {
		item.Assoc.Deal = assoc.Deal
	}
	for _, e := range emails {
		item.Identities = addSorted(item.Identities, "email:"+e)
	}
	for _, ph := range phones {
		item.Identities = addSorted(item.Identities, "phone:"+ph)
	}
	fill(&item, &merged, pk)
	if cur != nil && cur.PK != "" && retire == nil {
		before := *cur
		before.Version, before.UpdatedAt = 0, ""
		after := item
		after.Version, after.UpdatedAt = 0, ""
		if sameActivityItem(before, after) {
			return nil, nil, nil, nil
		}
	}
	item.Version = prev + 1
	item.UpdatedAt = store.FormatTime(now)
	return &activityWrite{item: item, prev: prev, isNew: isNew}, retire, absent, nil
}

// fill sets an activity item's summary and index attributes from its merged activity.
func fill(item *store.ActivityItem, a *timeline.Activity, pk string) {
	b, _ := json.Marshal(a)
	item.Doc = string(b)
	item.Type, item.Status = a.Type, a.Status
	item.OccurredAt = store.FormatTime(a.FirstAt)
	item.Unassoc, item.ContactID, item.AccountID, item.DealID = "", "", "", ""
	if pk == store.PKUnassociated {
		item.Unassoc = "1"
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

func sameActivityItem(a, b store.ActivityItem) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// tombstone retires an UNASSOC item whose activity moved under a contact: it leaves the sparse
// index (unassoc removed) and says where the activity went.
func tombstone(un *store.ActivityItem, contactID string, now time.Time) *activityWrite {
	t := store.ActivityItem{PK: un.PK, SK: un.SK, ActivityID: un.ActivityID, Type: un.Type, Status: un.Status,
		OccurredAt: un.OccurredAt, MovedTo: contactID, Version: un.Version + 1, UpdatedAt: store.FormatTime(now), Doc: "{}"}
	return &activityWrite{item: t, prev: un.Version}
}

// adopt moves unassociated activities carrying one of the contact's new identities under it.
func (w *Worker) adopt(ctx context.Context, r reader, contact *store.Record, idents []string, now time.Time, planned []*activityWrite) ([]*activityWrite, error) {
	var cond expression.ConditionBuilder
	for i, id := range idents {
		c := expression.Contains(expression.Name("identities"), id)
		if i == 0 {
			cond = c
		} else {
			cond = cond.Or(c)
		}
	}
	expr, err := expression.NewBuilder().
		WithKeyCondition(expression.Key("unassoc").Equal(expression.Value("1"))).
		WithFilter(cond).Build()
	if err != nil {
		return nil, err
	}
	var found []*store.ActivityItem
	err = r.query(ctx, &dynamodb.QueryInput{
		TableName: aws.String(w.cfg.CRMTable), IndexName: aws.String(store.IndexUnassociated),
		KeyConditionExpression: expr.KeyCondition(), FilterExpression: expr.Filter(),
		ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(),
	}, 5, func(item map[string]types.AttributeValue) error {
		if len(found) >= maxMoves {
			return nil
		}
		var it store.ActivityItem
		if err := attributevalue.UnmarshalMap(item, &it); err != nil {
			return err
		}
		found = append(found, &it)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []*activityWrite
	for _, q := range found {
		if slices.ContainsFunc(planned, func(a *activityWrite) bool { return a.item.ActivityID == q.ActivityID }) {
			continue
		}
		// The index is eventually consistent: read the item itself before moving it.
		un, err := r.activity(ctx, store.PKUnassociated, q.ActivityID)
		if err != nil {
			return nil, err
		}
		if un == nil || un.MovedTo != "" {
			continue
		}
		if existing, err := r.activity(ctx, contact.PK, q.ActivityID); err != nil {
			return nil, err
		} else if existing != nil {
			continue
		}
		moved := *un
		moved.PK = contact.PK
		moved.Assoc.Contact = adoptLink(contact.ID, idents, un.Identities)
		a, err := doc(un)
		if err != nil {
			return nil, err
		}
		if a == nil {
			continue
		}
		fill(&moved, a, contact.PK)
		moved.Version, moved.UpdatedAt = 1, store.FormatTime(now)
		out = append(out, &activityWrite{item: moved, isNew: true}, tombstone(un, contact.ID, now))
	}
	return out, nil
}

// adoptLink says how an adopted activity was linked: the first new identity it carries.
func adoptLink(contactID string, newIdents, carried []string) *association.Link {
	for _, id := range newIdents {
		if !slices.Contains(carried, id) {
			continue
		}
		if v, ok := strings.CutPrefix(id, "phone:"); ok {
			return &association.Link{ID: contactID, Method: association.Phone, Via: v}
		}
		return &association.Link{ID: contactID, Method: association.ExactEmail, Via: strings.TrimPrefix(id, "email:")}
	}
	return &association.Link{ID: contactID, Method: association.ExactEmail}
}

func addSorted(list []string, v string) []string {
	i, found := slices.BinarySearch(list, v)
	if found {
		return list
	}
	return slices.Insert(list, i, v)
}

// transaction builds the TransactWriteItems of a plan: the ledger Put first (its cancellation
// reason is index 0), then records, claims, activities and audits.
func (p *plan) transaction(w *Worker) ([]types.TransactWriteItem, error) {
	var items []types.TransactWriteItem
	put := func(table string, v any, cond string, names map[string]string, vals map[string]types.AttributeValue) error {
		av, err := attributevalue.MarshalMap(v)
		if err != nil {
			return err
		}
		tp := &types.Put{TableName: aws.String(table), Item: av}
		if cond != "" {
			tp.ConditionExpression = aws.String(cond)
		}
		if len(names) > 0 {
			tp.ExpressionAttributeNames = names
		}
		if len(vals) > 0 {
			tp.ExpressionAttributeValues = vals
		}
		items = append(items, types.TransactWriteItem{Put: tp})
		return nil
	}
	num := func(n int64) types.AttributeValue {
		return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
	}

	var err error
	if p.ledgerPrev != "" {
		err = put(w.cfg.LedgerTable, p.ledger, "recorded_at = :prev", nil,
			map[string]types.AttributeValue{":prev": &types.AttributeValueMemberS{Value: p.ledgerPrev}})
	} else {
		cond, vals := ledgerCondition(w.now())
		err = put(w.cfg.LedgerTable, p.ledger, cond, nil, vals)
	}
	if err != nil {
		return nil, err
	}
	versioned := func(v any, isNew bool, prev int64) error {
		if isNew {
			return put(w.cfg.CRMTable, v, "attribute_not_exists(pk)", nil, nil)
		}
		return put(w.cfg.CRMTable, v, "#v = :v", map[string]string{"#v": "version"}, map[string]types.AttributeValue{":v": num(prev)})
	}
	for _, r := range p.records {
		if err := versioned(r.rec, r.isNew, r.prev); err != nil {
			return nil, err
		}
	}
	for _, c := range p.claims {
		if err := put(w.cfg.CRMTable, c, "attribute_not_exists(pk)", nil, nil); err != nil {
			return nil, err
		}
	}
	for _, a := range p.activities {
		if err := versioned(a.item, a.isNew, a.prev); err != nil {
			return nil, err
		}
	}
	for _, a := range p.audits {
		if err := put(w.cfg.CRMTable, a, "", nil, nil); err != nil {
			return nil, err
		}
	}
	for _, k := range p.absent {
		items = append(items, types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{
			TableName: aws.String(w.cfg.CRMTable), Key: key(k.pk, k.sk), ConditionExpression: aws.String("attribute_not_exists(pk)")}})
	}
	if len(items) > MaxTransactItems {
		return nil, permanent("event needs %d writes, more than one transaction holds (%d)", len(items), MaxTransactItems)
	}
	return items, nil
}
