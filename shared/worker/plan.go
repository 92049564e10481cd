package worker

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

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

// maxPending bounds how many parked activities one unclaimed identity lists.
const maxPending = 50

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
	// evicted are the history entries this merge dropped from the stored activity (the
	// timeline keeps the newest timeline.MaxEntries): the only events written to its log.
	evicted []timeline.Entry
}

// plan is everything one event will write.
type plan struct {
	ledger     *store.LedgerItem
	ledgerPrev string // forced re-run: the recorded_at the ledger item must still have
	records    []*recordWrite
	claims     []claimWrite
	// marks record this event's parked activity on its subject's unclaimed identities.
	marks      []pendingMark
	activities []*activityWrite
	// audits are the event's non-no-op decisions, one per record field; the transaction
	// writes them as one store.AuditEventItem per record (auditEvents).
	audits []store.AuditItem
	// auditSuffix ends the audit items' sort keys of a forced re-run ("#rerun-N") or of a
	// redelivery after the dedup window ("#redelivery-N"), so neither replaces the original's.
	auditSuffix string
	// logs are the activity log items of the entries this event's merge evicted from its
	// activity: with the entries the activity keeps, they name every event merged into it.
	logs []store.ActivityLogItem
	// absent are CRM items the plan read as absent and relies on staying absent; each becomes a
	// ConditionCheck, so an event of another group that creates one concurrently cancels this
	// transaction and this event is re-read and re-decided (see planner.locateActivity).
	absent []itemKey
	// decided is this delivery's outcome when the ledger keeps another (a redelivery after the
	// dedup window keeps the original's); "" otherwise.
	decided string
}

// claimWrite is one identity or domain claim to Put: conditioned on the item's absence, or,
// when an unclaimed identity item holding parked activities exists, on its staying unclaimed
// with the parkings read (pver).
type claimWrite struct {
	item    store.IdentityClaim
	existed bool
	pver    int64
}

// pendingMark adds a parked activity to an unclaimed identity's pending list (the item is
// created when absent), conditioned on the identity staying unclaimed.
type pendingMark struct {
	pk         string
	activityID string
	// checkOnly: the identity lists maxPending activities already; only check it is unclaimed.
	checkOnly bool
}

// outcome is what deciding this delivery did.
func (p *plan) outcome() string {
	if p.decided != "" {
		return p.decided
	}
	return p.ledger.Outcome
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

// storedEntity is a record read from the table, to be written over its version.
func storedEntity(rec *store.Record) *entityState {
	return &entityState{rec: rec, prev: rec.Version}
}

// newEntity is a record the event creates.
func newEntity(entity, id string) *entityState {
	return &entityState{rec: store.NewRecord(entity, id), isNew: true, changed: true}
}

// write is the record's Put.
func (s *entityState) write() *recordWrite {
	return &recordWrite{rec: s.rec, prev: s.prev, isNew: s.isNew}
}

// subjectIdentity is one normalised identity of the event's subject and who claims it.
type subjectIdentity struct {
	pk, kind, value string
	owner           string // the contact that claims it; "" when unclaimed
	// claim is the identity's item as read (nil when absent): while unclaimed it may hold
	// parked activities waiting for it.
	claim *store.IdentityClaim
}

// linkMethod says how a contact matched through an identity of this kind.
func linkMethod(kind string) association.Method {
	if kind == "phone" {
		return association.Phone
	}
	return association.ExactEmail
}

// planner decides what one event writes. Each step reads what it needs and leaves its
// decisions in the planner for the steps after it; the plan is the result.
type planner struct {
	*deps
	reader reader
	ev     *canonical.Event
	now    time.Time
	rerun  *rerunRequest // set for a forced re-run
	plan   *plan
	notes  []string // why parts of the event were ignored, for the ledger's reason

	emails, phones []string          // the subject's normalised identities
	subject        []subjectIdentity // emails then phones, with their owners
	contactLink    *association.Link // how the contact was found (or created)

	contactProposal, accountProposal, dealProposal decide.Proposal

	contact, account, deal *entityState
	newIdentities          []string // "kind:value" identities the contact claims with this event
	assoc                  association.Result
}

// plan reads what the event touches and decides every write. ledger is the current ledger item
// (nil when absent); rerun is set for a forced re-run.
func (a *applier) plan(ctx context.Context, ev *canonical.Event, now time.Time, ledger *store.LedgerItem, rerun *rerunRequest) (*plan, error) {
	pl := newPlanner(a, ev, now, ledger, rerun)
	if err := pl.resolveContact(ctx); err != nil {
		return nil, err
	}
	if err := pl.planContact(); err != nil {
		return nil, err
	}
	if err := pl.associate(ctx); err != nil {
		return nil, err
	}
	if err := pl.planAccount(ctx); err != nil {
		return nil, err
	}
	if err := pl.planDeal(ctx); err != nil {
		return nil, err
	}
	pl.noteIgnoredFields()
	if err := pl.planActivity(ctx); err != nil {
		return nil, err
	}
	if err := pl.planAdoption(ctx); err != nil {
		return nil, err
	}
	pl.collectRecords()
	pl.auditRerun()
	pl.settleOutcome()
	pl.keepOriginalOutcome(ledger)
	return pl.plan, nil
}

// newPlanner starts the plan with the event's ledger item, carrying over what the current
// ledger item recorded (reruns, flags) and, for a forced re-run, this rerun.
func newPlanner(a *applier, ev *canonical.Event, now time.Time, ledger *store.LedgerItem, rerun *rerunRequest) *planner {
	planned := &plan{ledger: a.ledgerItem(ev, now)}
	if ledger != nil {
		planned.ledger.Reruns = ledger.Reruns
		planned.ledger.Flagged, planned.ledger.Conflicts, planned.ledger.ConflictingHash = ledger.Flagged, ledger.Conflicts, ledger.ConflictingHash
		planned.ledger.Applications = slices.Clone(ledger.Applications)
	}
	if rerun == nil && ledger != nil && ledger.PayloadHash == ev.PayloadHash {
		// A redelivery after the dedup window: its decisions are audited beside the original's.
		planned.auditSuffix = "#redelivery-" + strconv.Itoa(len(ledger.Redeliveries)+1)
	}
	if rerun != nil {
		planned.ledgerPrev = ledger.RecordedAt
		planned.ledger.Reruns = append(slices.Clone(ledger.Reruns), store.Rerun{By: rerun.by, Why: rerun.why, At: store.FormatTime(now)})
		planned.auditSuffix = "#rerun-" + strconv.Itoa(len(planned.ledger.Reruns))
	}
	emails, phones := identities(ev.Subject)
	return &planner{
		deps: a.deps, reader: a.reader.planning(), ev: ev, now: now, rerun: rerun, plan: planned,
		emails: emails, phones: phones,
		contactProposal: proposal(ev, store.Contact),
		accountProposal: proposal(ev, store.Account),
		dealProposal:    proposal(ev, store.Deal),
	}
}

// contactRecord is the contact's record, nil when the event has no contact.
func (pl *planner) contactRecord() *store.Record {
	if pl.contact == nil {
		return nil
	}
	return pl.contact.rec
}

// contactItems are the CRM items a plan reads once it knows its contact: the profile and the
// event's activity under it.
func (pl *planner) contactItems(contactID string) []itemKey {
	pk := store.PK(store.Contact, contactID)
	keys := []itemKey{{pk, store.SKProfile}}
	if pl.ev.Activity != nil && pl.ev.Activity.ID != "" {
		keys = append(keys, itemKey{pk, store.ActivitySK(pl.ev.Activity.ID)})
	}
	return keys
}

// lookupSubject reads who claims each of the subject's identities; the first claimed one links
// the contact.
func (pl *planner) lookupSubject(ctx context.Context) error {
	for _, email := range pl.emails {
		pl.subject = append(pl.subject, subjectIdentity{pk: store.IdentEmailPK(email), kind: "email", value: email})
	}
	for _, phone := range pl.phones {
		pl.subject = append(pl.subject, subjectIdentity{pk: store.IdentPhonePK(phone), kind: "phone", value: phone})
	}
	claims := make([]itemKey, 0, len(pl.subject))
	for _, identity := range pl.subject {
		claims = append(claims, itemKey{identity.pk, store.SKIdent})
	}
	if err := pl.reader.prefetch(ctx, claims...); err != nil {
		return err
	}
	for i := range pl.subject {
		claim, err := pl.reader.claim(ctx, pl.subject[i].pk, store.SKIdent)
		if err != nil {
			return err
		}
		owner := ""
		if claim != nil {
			owner = claim.ContactID
		}
		pl.subject[i].owner, pl.subject[i].claim = owner, claim
		if owner != "" && pl.contactLink == nil {
			pl.contactLink = &association.Link{ID: owner, Method: linkMethod(pl.subject[i].kind), Via: pl.subject[i].value}
		}
	}
	return nil
}

// resolveContact finds the event's contact: the one named explicitly (ContactIDKey), else the
// owner of the first claimed identity, else a new contact when the event proposes contact
// fields. It leaves pl.contact nil when the event has no contact.
func (pl *planner) resolveContact(ctx context.Context) error {
	if err := pl.lookupSubject(ctx); err != nil {
		return err
	}
	explicitContact := strings.TrimSpace(pl.ev.ExternalIDs[ContactIDKey])
	if explicitContact != "" {
		pl.contactLink = &association.Link{ID: explicitContact, Method: association.ExplicitID, Via: explicitContact}
	}
	switch {
	case explicitContact != "":
		rec, err := pl.reader.record(ctx, store.Contact, explicitContact)
		if err != nil {
			return err
		}
		if rec == nil {
			return permanent("contact %s does not exist", explicitContact)
		}
		pl.contact = storedEntity(rec)
	case pl.contactLink != nil:
		if err := pl.reader.prefetch(ctx, pl.contactItems(pl.contactLink.ID)...); err != nil {
			return err
		}
		rec, err := pl.reader.record(ctx, store.Contact, pl.contactLink.ID)
		if err != nil {
			return err
		}
		if rec == nil { // a claim without its profile: rebuild the profile under that id
			pl.contact = newEntity(store.Contact, pl.contactLink.ID)
		} else {
			pl.contact = storedEntity(rec)
		}
	case len(pl.subject) > 0 && !empty(pl.contactProposal):
		id := ContactIDFor(pl.ev.Key)
		first := pl.subject[0]
		pl.contactLink = &association.Link{ID: id, Method: linkMethod(first.kind), Via: first.value}
		pl.contact = newEntity(store.Contact, id)
	}
	return nil
}

// planContact claims the subject's unclaimed identities for the contact and decides its
// proposed fields.
func (pl *planner) planContact() error {
	if pl.contact == nil {
		return nil
	}
	pl.claimIdentities()
	if !empty(pl.contactProposal) {
		return pl.decideFields(store.Contact, pl.contact, pl.contactProposal)
	}
	return nil
}

// claimIdentities claims the subject's unclaimed identities for the contact (at most
// maxClaims); an identity claimed by another contact is never stolen.
func (pl *planner) claimIdentities() {
	contact := pl.contact
	for _, ident := range pl.subject {
		if ident.owner != "" || len(pl.plan.claims) >= maxClaims {
			continue // claimed by this contact already, or by another one (never stolen)
		}
		claim := claimWrite{item: store.IdentityClaim{PK: ident.pk, SK: store.SKIdent, ContactID: contact.rec.ID,
			EventKey: pl.ev.Key, ClaimedAt: store.FormatTime(pl.now)}}
		if ident.claim != nil { // unclaimed, with parked activities waiting for it
			claim.existed, claim.pver = true, ident.claim.PendingVersion
			claim.item.Pending = ident.claim.Pending
		}
		pl.plan.claims = append(pl.plan.claims, claim)
		tag := ident.kind + ":" + ident.value
		if !slices.Contains(contact.rec.Identities, tag) {
			contact.rec.Identities = append(contact.rec.Identities, tag)
			sort.Strings(contact.rec.Identities)
			contact.changed = true
		}
		pl.newIdentities = append(pl.newIdentities, tag)
	}
}

// decideFields runs the policy over a proposal for one record, applies what it decides and
// audits every decision that is not a noop.
// A stored field whose time does not parse fails the event permanently (REJECTED, naming the
// field) rather than deciding against a zero time.
func (pl *planner) decideFields(entity string, state *entityState, prop decide.Proposal) error {
	current, err := state.rec.Decidable()
	if err != nil {
		return permanent("stored %v", err)
	}
	decisions := decide.Decide(pl.cfg.Policy, entity, current, prop)
	if decide.Changed(decisions) {
		state.rec.SetFields(decide.Apply(current, decisions))
		state.changed = true
	}
	pl.auditDecisions(state.rec, decisions)
	return nil
}

// associate links the event to its account and deal: contact → account → deal.
func (pl *planner) associate(ctx context.Context) error {
	explicitDeal := pl.ev.ExternalIDs["deal_id"]
	if explicitDeal == "" && pl.ev.Activity != nil {
		explicitDeal = pl.ev.Activity.DealID
	}
	tables := lookups{reader: pl.reader, contact: pl.contactRecord()}
	in := association.Input{Emails: pl.emails, Phones: pl.phones, Contact: pl.contactLink,
		AccountID: pl.ev.ExternalIDs["account_id"], DealID: explicitDeal}
	stored, err := pl.storedActivity(ctx)
	if err != nil {
		return err
	}
	switch {
	case stored != nil && stored.Assoc.Account != nil:
		in.DealDecided, in.ActivityDeal = true, stored.Assoc.Deal
	case pl.ev.Activity == nil && empty(pl.dealProposal):
		// Nothing of this event goes to a deal (planDeal): no need to look for one.
		in.DealDecided = true
	}
	assoc, err := association.Associate(ctx, in, tables)
	if err != nil {
		return err
	}
	pl.assoc = assoc
	return nil
}

// storedActivity is the event's activity as stored under its contact (nil when it is not),
// read once for the plan: the read ahead with the contact's profile serves it.
func (pl *planner) storedActivity(ctx context.Context) (*store.ActivityItem, error) {
	if pl.contact == nil || pl.ev.Activity == nil || pl.ev.Activity.ID == "" {
		return nil, nil
	}
	return pl.reader.plannedActivity(ctx, pl.contact.rec.PK, pl.ev.Activity.ID)
}

// planAccount finds the event's account — the associated one, else one found or created for
// the proposed or email domain — decides its proposed fields, and links a contact without an
// account to it.
func (pl *planner) planAccount(ctx context.Context) error {
	// The associated account's record is read only to decide proposed account fields: an event
	// proposing none (a call status, an email event) leaves it unread and unwritten.
	if pl.assoc.Account != nil && !empty(pl.accountProposal) {
		rec, err := pl.reader.record(ctx, store.Account, pl.assoc.Account.ID)
		if err != nil {
			return err
		}
		if rec != nil {
			pl.account = storedEntity(rec)
		} else {
			pl.account = newEntity(store.Account, pl.assoc.Account.ID)
		}
	} else if !empty(pl.accountProposal) {
		if err := pl.accountForDomain(ctx); err != nil {
			return err
		}
	}
	if pl.account != nil && !empty(pl.accountProposal) {
		if err := pl.decideFields(store.Account, pl.account, pl.accountProposal); err != nil {
			return err
		}
	}
	if pl.contact != nil && pl.contact.rec.AccountID == "" && pl.assoc.Account != nil {
		pl.contact.rec.AccountID = pl.assoc.Account.ID
		pl.contact.changed = true
	}
	return nil
}

// accountDomain is the domain an account proposal is about: the proposed domain, else the
// subject's first non-free-mail email domain ("" when neither).
func (pl *planner) accountDomain() string {
	domain := ""
	if proposed := strings.ToLower(strings.TrimSpace(pl.accountProposal.Fields["domain"])); proposed != "" && !identity.FreeMail(proposed) {
		domain = proposed
	}
	for _, email := range pl.emails {
		if emailDomain := identity.Domain(email); domain == "" && !identity.FreeMail(emailDomain) {
			domain = emailDomain
		}
	}
	return domain
}

// accountForDomain finds the account that claims the proposal's domain, or creates one with a
// deterministic id and claims the domain for it; the account is associated by email domain.
func (pl *planner) accountForDomain(ctx context.Context) error {
	domain := pl.accountDomain()
	if domain == "" {
		pl.notes = append(pl.notes, "account fields without a domain or account id ignored")
		return nil
	}
	owner, err := pl.reader.claimOwner(ctx, store.DomainPK(domain), store.SKDomain)
	if err != nil {
		return err
	}
	if owner != "" {
		rec, err := pl.reader.record(ctx, store.Account, owner)
		if err != nil {
			return err
		}
		if rec != nil {
			pl.account = storedEntity(rec)
		} else {
			pl.account = newEntity(store.Account, owner)
		}
	} else {
		id := AccountIDFor(domain)
		pl.account = newEntity(store.Account, id)
		pl.account.rec.Domains = []string{domain}
		pl.plan.claims = append(pl.plan.claims, claimWrite{item: store.IdentityClaim{PK: store.DomainPK(domain), SK: store.SKDomain,
			Account: id, EventKey: pl.ev.Key, ClaimedAt: store.FormatTime(pl.now)}})
	}
	pl.assoc.Account = &association.Link{ID: pl.account.rec.ID, Method: association.EmailDomain, Via: domain}
	return nil
}

// planDeal reads the associated deal when the event proposes deal fields or carries an
// activity (whose time the deal records); a deal is created only from an explicit deal id.
// Deal fields without a deal id are ignored.
func (pl *planner) planDeal(ctx context.Context) error {
	if pl.assoc.Deal != nil && (!empty(pl.dealProposal) || pl.ev.Activity != nil) {
		rec, err := pl.reader.record(ctx, store.Deal, pl.assoc.Deal.ID)
		if err != nil {
			return err
		}
		switch {
		case rec != nil:
			pl.deal = storedEntity(rec)
		case !empty(pl.dealProposal) && pl.assoc.Deal.Method == association.ExplicitID:
			pl.deal = newEntity(store.Deal, pl.assoc.Deal.ID)
			if pl.assoc.Account != nil {
				pl.deal.rec.AccountID = pl.assoc.Account.ID
			}
		}
	} else if !empty(pl.dealProposal) {
		pl.notes = append(pl.notes, "deal fields without a deal id ignored")
	}
	if pl.deal != nil && !empty(pl.dealProposal) {
		return pl.decideFields(store.Deal, pl.deal, pl.dealProposal)
	}
	return nil
}

// noteIgnoredFields notes the proposals no step used: unknown entities, and contact fields of
// an event without a contact.
func (pl *planner) noteIgnoredFields() {
	for entity := range pl.ev.Fields {
		base := strings.TrimSuffix(entity, LockSuffix)
		if base != store.Contact && base != store.Account && base != store.Deal {
			pl.notes = append(pl.notes, fmt.Sprintf("entity %q ignored", entity))
		}
	}
	if pl.contact == nil && !empty(pl.contactProposal) {
		pl.notes = append(pl.notes, "contact fields without an email or phone ignored")
	}
}

// planActivity merges the event's activity under its contact, or unassociated, and records
// the activity's time on the associated deal.
func (pl *planner) planActivity(ctx context.Context) error {
	activity := pl.ev.Activity
	if activity == nil || activity.ID == "" {
		return nil
	}
	write, retire, absent, err := pl.mergeActivity(ctx)
	if err != nil {
		return err
	}
	pl.plan.absent = append(pl.plan.absent, absent...)
	if write != nil && write.item.PK == store.PKUnassociated {
		pl.markPending(activity.ID)
	}
	if write != nil {
		pl.plan.activities = append(pl.plan.activities, write)
		for _, entry := range write.evicted {
			pl.plan.logs = append(pl.plan.logs, store.ActivityLogItem{PK: write.item.Log, SK: entry.Key, ActivityID: activity.ID,
				OccurredAt: store.FormatTime(entry.At)})
		}
	}
	if retire != nil {
		pl.plan.activities = append(pl.plan.activities, retire)
	}
	pl.plan.ledger.ActivityID = activity.ID
	deal := pl.deal
	if deal != nil && pl.assoc.Deal != nil && deal.rec.ID == pl.assoc.Deal.ID {
		last, err := store.ParseTime(deal.rec.LastActivityAt)
		if err != nil {
			return permanent("stored deal %s last_activity_at: %v", deal.rec.ID, err)
		}
		if pl.ev.OccurredAt.After(last) {
			deal.rec.LastActivityAt = store.FormatTime(pl.ev.OccurredAt)
			deal.changed = true
		}
	}
	return nil
}

// markPending records a parked activity on each of the subject's unclaimed identities (at most
// maxClaims): a contact that claims one later adopts it in the claim's own transaction, and a
// contact that claims one first makes this event's transaction fail and re-plan under it.
// An identity that already holds maxPending parked activities (a mailing recipient who never
// becomes a contact) is only checked to be still unclaimed: its item stays small, and what it
// does not list waits for the consistency job.
func (pl *planner) markPending(activityID string) {
	for _, ident := range pl.subject {
		if ident.owner != "" || len(pl.plan.marks) >= maxClaims {
			continue
		}
		full := ident.claim != nil && len(ident.claim.Pending) >= maxPending && !slices.Contains(ident.claim.Pending, activityID)
		pl.plan.marks = append(pl.plan.marks, pendingMark{pk: ident.pk, activityID: activityID, checkOnly: full})
	}
}

// planAdoption lets a contact that gained identities adopt the unassociated activities recorded
// as pending on the identities it claims.
func (pl *planner) planAdoption(ctx context.Context) error {
	if pl.contact == nil || len(pl.newIdentities) == 0 {
		return nil
	}
	moves, err := pl.adopt(ctx, pl.contact.rec, pl.newIdentities, pl.plan.activities)
	if err != nil {
		return err
	}
	pl.plan.activities = append(pl.plan.activities, moves...)
	return nil
}

// collectRecords adds a versioned Put for every record that changed and names the contact in
// the ledger item.
func (pl *planner) collectRecords() {
	for _, state := range []*entityState{pl.contact, pl.account, pl.deal} {
		if state != nil && state.changed {
			state.rec.Version = state.prev + 1
			state.rec.Touch(pl.now)
			pl.plan.records = append(pl.plan.records, state.write())
		}
	}
	if pl.contact != nil {
		pl.plan.ledger.ContactID = pl.contact.rec.ID
		pl.plan.ledger.Applications = append(pl.plan.ledger.Applications, store.Application{ContactID: pl.contact.rec.ID,
			Version: pl.contact.prev, Wrote: pl.contact.changed, At: store.FormatTime(pl.now)})
	}
}

// keepOriginalOutcome makes a redelivery after the dedup window (a ledger item with the same
// payload, not a forced re-run) a note on the original: the item keeps its outcome, reason and
// recording time and lists this delivery's outcome under redeliveries; its window starts anew.
func (pl *planner) keepOriginalOutcome(original *store.LedgerItem) {
	if original == nil || pl.rerun != nil || original.PayloadHash != pl.ev.PayloadHash {
		return
	}
	ledger := pl.plan.ledger
	ledger.Redeliveries = append(slices.Clone(original.Redeliveries), store.Redelivery{At: store.FormatTime(pl.now), Outcome: ledger.Outcome})
	pl.plan.decided = ledger.Outcome
	ledger.Outcome, ledger.Reason, ledger.RecordedAt = original.Outcome, original.Reason, original.RecordedAt
	if ledger.ContactID == "" {
		ledger.ContactID = original.ContactID
	}
	if ledger.ActivityID == "" {
		ledger.ActivityID = original.ActivityID
	}
}

// auditRerun records a forced re-run on the contact's audit trail: who asked and why.
func (pl *planner) auditRerun() {
	if pl.rerun == nil || pl.contact == nil {
		return
	}
	ev, rerun, contact := pl.ev, pl.rerun, pl.contact.rec
	pl.plan.audits = append(pl.plan.audits, store.AuditItem{
		PK: contact.PK, SK: store.AuditSK(ev.OccurredAt, ev.Key, "_rerun") + "-" + strconv.Itoa(len(pl.plan.ledger.Reruns)),
		Entity: store.Contact, RecordID: contact.ID, Field: "_rerun", Decision: "rerun", Rule: "forced_rerun",
		Reason: rerun.why, PolicyVersion: pl.cfg.Policy.Version(), Source: ev.Source, Actor: rerun.by, EventKey: ev.Key,
		OccurredAt: store.FormatTime(ev.OccurredAt), RecordedAt: store.FormatTime(pl.now), RerunBy: rerun.by, RerunWhy: rerun.why,
	})
}

// settleOutcome sets the ledger's outcome (APPLIED when anything is written besides the ledger
// and audits, else NOOP) and its reason.
func (pl *planner) settleOutcome() {
	planned := pl.plan
	changed := len(planned.records) > 0 || len(planned.claims) > 0 || len(planned.activities) > 0
	planned.ledger.Outcome = store.Noop
	if changed {
		planned.ledger.Outcome = store.Applied
	}
	planned.ledger.Reason = planned.summary(pl.notes)
}

// auditDecisions adds an audit entry for every decision on rec that is not a noop.
func (pl *planner) auditDecisions(rec *store.Record, decisions []decide.Decision) {
	ev := pl.ev
	for _, decision := range decisions {
		if decision.Outcome == decide.Noop {
			continue
		}
		entry := store.AuditItem{
			PK: rec.PK, SK: store.AuditSK(ev.OccurredAt, ev.Key, decision.Field), Entity: rec.Entity, RecordID: rec.ID,
			Field: decision.Field, Before: store.FieldFrom(decision.Before), After: store.FieldFrom(decision.After),
			Decision: string(decision.Outcome), Rule: decision.Rule, Reason: decision.Reason, PolicyVersion: pl.cfg.Policy.Version(),
			Source: ev.Source, Actor: actorName(ev), EventKey: ev.Key, Proposed: decision.Proposed,
			OccurredAt: store.FormatTime(ev.OccurredAt), RecordedAt: store.FormatTime(pl.now),
		}
		if pl.rerun != nil {
			entry.SK += "#rerun-" + strconv.Itoa(len(pl.plan.ledger.Reruns))
			entry.RerunBy, entry.RerunWhy = pl.rerun.by, pl.rerun.why
		}
		pl.plan.audits = append(pl.plan.audits, entry)
	}
}

// summary explains the outcome in the ledger's reason.
func (p *plan) summary(notes []string) string {
	counts := map[string]int{}
	for _, entry := range p.audits {
		if entry.Field != "_rerun" {
			counts[entry.Decision]++
		}
	}
	var parts []string
	for _, decision := range []string{"applied", "rejected", "blocked_by_lock"} {
		if counts[decision] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[decision], decision))
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
