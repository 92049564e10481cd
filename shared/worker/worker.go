// Package worker owns crmsync's exactly-once application of canonical events (design sections
// 2, 4, 5 and 6): the SQS batch handler of the ingest FIFO queue and, per event, the ledger
// check, hydration of thin events, identity resolution, policy decisions, timeline merge,
// association, and the single DynamoDB transaction that records the outcome together with every
// effect. It also offers the operations the CLI builds on: Replay (a forced re-run with who and
// why), Rebuild (recompute a contact from the ledger) and GetContact (record, timeline, audit).
//
// Exactly once: an event's ledger item and all of its effects are written by one
// TransactWriteItems whose ledger Put is conditioned on attribute_not_exists(pk) OR
// dedup_until < :now, so an event is either wholly applied and recorded or not at all. A
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
// Activities without a contact are stored under UNASSOC (sparse Unassociated index) and move
// under the contact that later claims one of their identities.
//
// Locks: a crm.change event asks to lock or unlock fields through the pseudo-entity
// entity+LockSuffix in Event.Fields, e.g. Fields["contact#lock"] = {"phone": "lock"}; the
// actor's role (Event.Actor.Role) must be one of the policy's override roles.
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

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
	// LedgerTable and CRMTable are the table names.
	LedgerTable string
	// CRMTable is the CRM table's name.
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
	// Concurrency is how many message groups of one batch are processed at once; 4 when zero.
	Concurrency int
}

// Worker applies canonical events exactly once. It is safe for concurrent use.
type Worker struct {
	cfg     Config
	ddb     DynamoAPI
	log     *slog.Logger
	metrics *emf.Writer
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error
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
	w := &Worker{cfg: cfg, ddb: ddb, log: cfg.Log, now: cfg.Clock, sleep: cfg.Sleep}
	if w.log == nil {
		w.log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	if w.sleep == nil {
		w.sleep = sleepCtx
	}
	w.metrics = emf.New(cfg.Metrics, cfg.Clock)
	return w, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// backoff returns the jittered wait before attempt n (1-based): up to 25ms·2^(n-1).
func backoff(n int) time.Duration {
	ceiling := 25 * time.Millisecond << min(n-1, 6)
	return ceiling/2 + rand.N(ceiling/2+1)
}

// ErrPermanent marks a failure that retrying cannot fix: the event is recorded REJECTED and
// its message acknowledged.
var ErrPermanent = errors.New("permanent failure")

// permanent wraps err as permanent with a reason.
func permanent(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPermanent, fmt.Sprintf(format, args...))
}

// IsPermanent reports whether err is a permanent failure.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// groupAttr is the SQS system attribute naming a FIFO message's group.
const groupAttr = "MessageGroupId"

// Handle processes one SQS batch from the ingest FIFO queue. Messages of one group are applied
// in order; a transient failure puts that message and every later message of its group into
// BatchItemFailures while other groups carry on. Permanent failures are recorded REJECTED and
// acknowledged. Handle never fails the whole batch: its error is always nil.
func (w *Worker) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	type group struct{ idx []int }
	var order []string
	groups := map[string]*group{}
	for i, m := range ev.Records {
		g := m.Attributes[groupAttr]
		if g == "" {
			g = "\x00" + m.MessageId // no group: the message orders nothing else
		}
		if groups[g] == nil {
			groups[g] = &group{}
			order = append(order, g)
		}
		groups[g].idx = append(groups[g].idx, i)
	}
	failed := make([]bool, len(ev.Records))
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, name := range order {
		g := groups[name]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			broken := false
			for _, i := range g.idx {
				if broken {
					failed[i] = true
					continue
				}
				if err := w.HandleMessage(ctx, ev.Records[i]); err != nil {
					failed[i], broken = true, true
				}
			}
		}()
	}
	wg.Wait()
	var resp events.SQSEventResponse
	for i, f := range failed {
		if f {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: ev.Records[i].MessageId})
		}
	}
	return resp, nil
}

// HandleMessage applies one SQS message. It returns an error only for a transient failure (the
// message must be retried); permanent failures are recorded and return nil.
func (w *Worker) HandleMessage(ctx context.Context, m events.SQSMessage) error {
	res, err := w.ApplyBody(ctx, []byte(m.Body))
	if err != nil {
		w.log.WarnContext(ctx, "transient failure; message will be retried", "message_id", m.MessageId,
			"key", res.Key, "error", err.Error())
		w.metrics.Emit(map[string]string{"Connector": res.Source, "Outcome": "RETRY"}, emf.Metric{Name: "Processed", Value: 1, Unit: emf.Count})
		return err
	}
	return nil
}
