// Package worker owns crmsync's exactly-once application of canonical events to DynamoDB (design
// sections 2, 4, 5 and 6): the SQS batch handler of the ingest FIFO queue and, per event, the
// ledger check, hydration of thin events, identity resolution, policy decisions, timeline merge,
// association, and the single DynamoDB transaction that records the outcome together with every
// effect. It also owns the operator actions the CLI and the reconciliation jobs build on — Replay
// (a forced re-run with who and why), Rebuild, DiffRebuild and WriteRebuild (recompute a contact
// from the ledger and restore it), Reassociate (retry an unassociated activity) — and reading a
// contact back (GetContact: record, timeline, audit).
//
// Layout: Worker (worker.go) is the composition root New returns; its exported methods delegate
// to the part that owns the work:
//   - applier (apply.go, hydrate.go, ledger.go): the SQS batch handler and the per-event pipeline
//     (ledger check, hydrate, plan, transact, retry after a conflict, reject, flag);
//   - planner (plan.go, activity.go, transaction.go): what one event writes, in named steps
//     (resolve the contact, plan the account, the deal, the activity, adoption of unassociated
//     activities) and the TransactWriteItems that writes it;
//   - operator (replay.go, rebuild.go, restore.go, reassociate.go): the operator actions;
//   - reader (read.go, lookups.go): CRM table reads, including reading a contact.
//
// Exactly once: an event's ledger item and all of its effects are written by one
// TransactWriteItems whose ledger Put is conditioned on attribute_not_exists(pk) OR
// dedup_until < :now, so an event is either wholly applied and recorded or not at all. When the
// ledger item is the only write (a no-op), it is one PutItem with the same condition: half the
// write units of a one-item transaction, and as atomic. A
// strongly consistent ledger read comes first, so a duplicate inside its source's dedup window
// costs one read and no write. Record writes are conditioned on the record's version and
// identity claims on their absence; when another worker wins a race the transaction is canceled
// and the event is re-read and re-decided (bounded attempts, with jitter). If the ledger
// condition is what failed, the event was applied meanwhile and is acknowledged as a duplicate.
//
// A delivery with a known key but a different payload hash is never applied: the worker flags
// the ledger item with one UpdateItem (flagged = true, conflicting_payload = the new hash,
// conflicts += 1), logs a warning and emits a Conflicts metric with Kind=payload, then
// acknowledges the message.
//
// Audit: every field decision that is not a noop (applied, rejected, blocked_by_lock) is written
// as an audit item in the same transaction. An event whose decisions change nothing has outcome
// NOOP and writes only its ledger item — plus the audit items of refused proposals, if any, so
// "why was this not applied" always has an answer.
//
// Contacts: an event's subject identities are looked up as IDENT claims; the first claimed one
// names the contact. If none is claimed and the event proposes contact fields, a contact is
// created with the id ContactIDFor(event key) and its identities are claimed in the same
// transaction (attribute_not_exists), so two events racing to create one person yield one
// contact: the loser's transaction is canceled and it re-decides against the winner's contact.
// Activities without a contact are stored under UNASSOC (sparse Unassociated index, read only
// by the consistency job) and recorded as pending on their identities' unclaimed IDENT items,
// conditioned on those staying unclaimed; the contact that later claims one adopts them in the
// claim's own transaction (the claim is conditioned on the parkings it read). Whichever of the
// two commits second fails its condition and re-decides, so adoption never waits for an index.
//
// Locks: a crm.change event asks to lock or unlock fields through the pseudo-entity
// entity+LockSuffix in Event.Fields, e.g. Fields["contact#lock"] = {"phone": "lock"}; the
// actor's role (Event.Actor.Role) must be one of the policy's override roles.
package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/store"
)

// DynamoAPI is the part of the DynamoDB client the worker uses (*dynamodb.Client satisfies it).
type DynamoAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, optFns ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
}

// SecretSource returns a connector's secret by its Secrets Manager id. *secrets.Cache
// satisfies it.
type SecretSource interface {
	Get(ctx context.Context, id string) (connector.Secret, error)
}

// SecretFunc adapts a function to SecretSource.
type SecretFunc func(ctx context.Context, id string) (connector.Secret, error)

// Get implements SecretSource.
func (f SecretFunc) Get(ctx context.Context, id string) (connector.Secret, error) { return f(ctx, id) }

// Hydration is how the worker hydrates one source's thin notifications.
type Hydration struct {
	// Hydrator is the connector's hydrate implementation.
	Hydrator connector.Hydrator
	// SecretID is the connector's secret, read through Config.Secrets.
	SecretID string
	// API is the vendor API the hydrator calls.
	API connector.API
}

// Config configures a Worker.
type Config struct {
	// LedgerTable is the ledger table's name; required.
	LedgerTable string
	// CRMTable is the CRM table's name; required.
	CRMTable string
	// Policy is the ownership and conflict policy; required.
	Policy *policy.Policy
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
	// Hydrators maps a source name to its hydration; sources without one cannot send thin
	// notifications (such events are rejected).
	Hydrators map[string]Hydration
	// Secrets reads connector secrets for hydration.
	Secrets SecretSource
	// RetentionDays is how long ledger items live (TTL); 400 when zero.
	RetentionDays int
	// Log receives JSON-able structured logs (no personal data in clear); discarded when nil.
	Log *slog.Logger
	// Metrics receives EMF lines (os.Stdout in Lambda); discarded when nil.
	Metrics io.Writer
	// MaxAttempts bounds re-read/re-decide rounds after a conflict; 5 when zero.
	MaxAttempts int
	// Sleep waits between attempts; a context-aware real sleep when nil. Tests inject it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Concurrency is how many lanes of one batch are processed at once (a lane is the message
	// groups about one person, run one after the other); 4 when zero.
	Concurrency int
	// DeadlineMargin is how much of the invocation's time Handle keeps in reserve: it starts no
	// message once less than this remains before its context's deadline (the Lambda timeout)
	// and reports the messages it did not start as batch item failures ("deferred": logged and
	// counted as Deferred, not as failures), so the batch never times out and the messages it
	// finished stay acknowledged. It must exceed the time one message can take (ledger read,
	// hydration, plan, transaction and its retries). SQS still counts a receive for each
	// deferred message against maxReceiveCount; a function whose timeout is too short for its
	// batch size therefore still drifts messages toward the DLQ, only more slowly. When zero,
	// DeadlineMarginEnv (WORKER_DEADLINE_MARGIN_MS, milliseconds) sets it, else
	// DefaultDeadlineMargin (5 s); a negative value turns the check off.
	DeadlineMargin time.Duration
}

// ErrNotFound reports that a contact or ledger item does not exist.
var ErrNotFound = errors.New("not found")

// Worker applies canonical events exactly once, runs the operator actions and reads contacts.
// It is the composition root of the package: it holds the dependencies its parts share and
// delegates each exported method to the part that owns the work. It is safe for concurrent use.
type Worker struct {
	*deps
	applier  *applier
	operator *operator
	reader   reader
}

// New returns a Worker over the given DynamoDB client.
func New(cfg Config, ddb DynamoAPI) (*Worker, error) {
	if cfg.Policy == nil {
		return nil, errors.New("worker: Config.Policy is required")
	}
	if cfg.LedgerTable == "" || cfg.CRMTable == "" {
		return nil, errors.New("worker: Config.LedgerTable and Config.CRMTable are required")
	}
	if ddb == nil {
		return nil, errors.New("worker: a DynamoDB client is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.RetentionDays <= 0 {
		cfg.RetentionDays = int(store.DefaultRetention / (24 * time.Hour))
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	margin, err := deadlineMargin(cfg.DeadlineMargin)
	if err != nil {
		return nil, err
	}
	cfg.DeadlineMargin = margin
	shared := &deps{cfg: cfg, log: cfg.Log, now: cfg.Clock, sleep: cfg.Sleep}
	shared.ddb = backoffClient{api: ddb, d: shared}
	if batch, ok := ddb.(batchGetter); ok {
		shared.batch = backoffBatch{api: batch, d: shared}
	}
	if shared.log == nil {
		shared.log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	if shared.sleep == nil {
		shared.sleep = sleepCtx
	}
	shared.metrics = emf.New(cfg.Metrics, cfg.Clock)

	reads := reader{deps: shared}
	apply := &applier{deps: shared, reader: reads}
	return &Worker{
		deps:     shared,
		applier:  apply,
		operator: &operator{deps: shared, reader: reads, applier: apply},
		reader:   reads,
	}, nil
}

// Handle processes one SQS batch from the ingest FIFO queue. Messages of one group are applied
// in order, and groups about one person (sharing an identity, or identities one contact claims)
// one after the other, so they do not cancel each other's transactions; a transient failure puts that message and every later message of its group into
// BatchItemFailures while other groups carry on. Permanent failures are recorded REJECTED and
// acknowledged. When less than Config.DeadlineMargin remains before ctx's deadline, no further
// message is started: the rest are deferred (batch item failures, with every later message of
// their group). Handle never fails the whole batch: its error is always nil.
// The batch's metrics are written as one EMF record per dimension set when it ends.
func (w *Worker) Handle(ctx context.Context, batch events.SQSEvent) (events.SQSEventResponse, error) {
	w.applier.metrics.Hold()
	defer w.applier.metrics.Release()
	return w.applier.handleBatch(ctx, batch), nil
}

// HandleMessage applies one SQS message. It returns an error only for a transient failure (the
// message must be retried); permanent failures are recorded and return nil.
func (w *Worker) HandleMessage(ctx context.Context, message events.SQSMessage) error {
	return w.applier.handleMessage(ctx, message)
}

// ApplyBody decodes an SQS message body and applies it. An error means a transient failure
// (retry); an invalid body is recorded REJECTED when its key can be read, and acknowledged.
func (w *Worker) ApplyBody(ctx context.Context, body []byte) (Result, error) {
	return w.applier.applyBody(ctx, body)
}

// Apply applies one canonical event exactly once. A thin notification is hydrated in place (ev is
// modified). An error means a transient failure; the caller retries. Permanent failures are
// recorded REJECTED and return a nil error.
func (w *Worker) Apply(ctx context.Context, ev *canonical.Event) (Result, error) {
	return w.applier.applyEvent(ctx, ev)
}

// Replay re-applies an event already in the ledger — a forced re-run — recording who asked and
// why in the ledger item's reruns and in the audit trail. The decisions are those the current
// policy makes for the stored (hydrated) event against the current records; an event whose
// effects are all present changes nothing but the ledger and the rerun audit entry.
func (w *Worker) Replay(ctx context.Context, key, by, why string) (Result, error) {
	return w.operator.replay(ctx, key, by, why)
}

// Rebuild recomputes a contact's fields and timeline from the ledger: the contact's fields by
// every decision recorded against it (store.Application), folded through the current policy in
// the order the worker made them, and each of its activities from every event its log lists
// (parked, adopted or re-associated alike) through the timeline merge. It writes nothing; the
// caller compares or writes the result.
func (w *Worker) Rebuild(ctx context.Context, contactID string) (*Rebuilt, error) {
	return w.operator.rebuild(ctx, contactID)
}

// DiffRebuild compares a rebuilt contact with what is stored.
func (w *Worker) DiffRebuild(ctx context.Context, rebuilt *Rebuilt) (*RebuildDiff, error) {
	return w.operator.diffRebuild(ctx, rebuilt)
}

// WriteRebuild restores a contact to its rebuilt state in one transaction: the record (conditioned
// on its version), every differing timeline entry, and an audit entry per restored field with
// decision "rebuild", who ran it and why.
func (w *Worker) WriteRebuild(ctx context.Context, rebuilt *Rebuilt, by, why string) (*RebuildDiff, error) {
	return w.operator.writeRebuild(ctx, rebuilt, by, why)
}

// Reassociate retries the association of one unassociated activity (the consistency job's
// repair): when a contact now owns one of the identities the activity carries — emails first,
// then phones, as the worker resolves a subject — the activity moves under that contact exactly
// as the worker adopts activities when a contact gains an identity: the contact link (how it
// matched), the contact's account when the activity has none, and a tombstone on the UNASSOC
// item, all in one TransactWriteItems conditioned on the items' versions, together with an audit
// entry on the contact (field "_activity", decision "reassociated", source ReassociateSource,
// event key key, reason why). Nothing is written when no contact owns an identity yet, when the
// activity was moved meanwhile, or when the contact already holds an activity with that id; a
// lost race (a condition failed) is reported as an error and a later run retries.
func (w *Worker) Reassociate(ctx context.Context, activityID, key, why string) (Reassociation, error) {
	return w.operator.reassociate(ctx, activityID, key, why)
}

// ResolveContact returns the id of the contact a query names.
func (w *Worker) ResolveContact(ctx context.Context, query ContactQuery) (string, error) {
	return w.reader.resolveContact(ctx, query)
}

// GetContact returns a contact's record with per-field provenance, its timeline with
// associations, and its audit trail (strongly consistent reads of the contact's partition).
func (w *Worker) GetContact(ctx context.Context, query ContactQuery) (*ContactView, error) {
	return w.reader.contactView(ctx, query)
}
