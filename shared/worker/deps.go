package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/crmsync/crmsync/shared/emf"
)

// deps are what every part of the worker shares: the configuration (defaults filled in), the
// DynamoDB client, the logger, the metrics writer, the clock and the sleep between attempts.
type deps struct {
	cfg Config
	ddb DynamoAPI
	// batch reads many items in one request, with ddb's in-process backoff; nil when the client
	// has no BatchGetItem (each item is then read on its own).
	batch   batchGetter
	log     *slog.Logger
	metrics *emf.Writer
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
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

// permanentError is a permanent failure caused by an AWS error: its message is the short reason
// recorded in the ledger, and it unwraps to both ErrPermanent and the error itself.
type permanentError struct {
	reason string
	err    error
}

// Error implements error.
func (e *permanentError) Error() string { return ErrPermanent.Error() + ": " + e.reason }

// Unwrap returns ErrPermanent and the underlying error.
func (e *permanentError) Unwrap() []error { return []error{ErrPermanent, e.err} }

// IsPermanent reports whether err is a permanent failure.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// backoffClient is the DynamoDB client every part of the worker uses: it retries a call
// in-process while its error is of class back off (classify: throttling, server faults, network
// errors) after a jittered wait, Config.MaxAttempts calls in all, and returns any other error —
// and the last one once the attempts are spent — to its caller unchanged.
type backoffClient struct {
	api DynamoAPI
	d   *deps
}

// GetItem implements DynamoAPI.
func (c backoffClient) GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return withBackoff(ctx, c.d, "GetItem", func() (*dynamodb.GetItemOutput, error) { return c.api.GetItem(ctx, in, optFns...) })
}

// PutItem implements DynamoAPI.
func (c backoffClient) PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	return withBackoff(ctx, c.d, "PutItem", func() (*dynamodb.PutItemOutput, error) { return c.api.PutItem(ctx, in, optFns...) })
}

// UpdateItem implements DynamoAPI.
func (c backoffClient) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	return withBackoff(ctx, c.d, "UpdateItem", func() (*dynamodb.UpdateItemOutput, error) { return c.api.UpdateItem(ctx, in, optFns...) })
}

// Query implements DynamoAPI.
func (c backoffClient) Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	return withBackoff(ctx, c.d, "Query", func() (*dynamodb.QueryOutput, error) { return c.api.Query(ctx, in, optFns...) })
}

// TransactWriteItems implements DynamoAPI. The same items are sent again: their conditions still
// guard them, so a retry after a commit whose response was lost fails on the ledger condition.
func (c backoffClient) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, optFns ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	return withBackoff(ctx, c.d, "TransactWriteItems", func() (*dynamodb.TransactWriteItemsOutput, error) {
		return c.api.TransactWriteItems(ctx, in, optFns...)
	})
}

// backoffBatch is backoffClient's BatchGetItem, for a client that has one.
type backoffBatch struct {
	api batchGetter
	d   *deps
}

// BatchGetItem implements batchGetter.
func (c backoffBatch) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	return withBackoff(ctx, c.d, "BatchGetItem", func() (*dynamodb.BatchGetItemOutput, error) { return c.api.BatchGetItem(ctx, in, optFns...) })
}

// withBackoff runs call until it succeeds, fails with an error that is not of class back off, or
// has been made Config.MaxAttempts times; it waits backoff(n) between calls and emits one
// Backoffs{Operation} metric per wait.
func withBackoff[T any](ctx context.Context, d *deps, op string, call func() (T, error)) (T, error) {
	for n := 1; ; n++ {
		out, err := call()
		if err == nil {
			return out, nil
		}
		v := classify(err)
		if v.Class != classBackoff || n >= d.cfg.MaxAttempts {
			return out, err
		}
		d.log.WarnContext(ctx, "dynamodb call failed; backing off", "op", op, "code", v.Code, "attempt", n)
		d.metrics.Emit(map[string]string{"Operation": op}, emf.Metric{Name: "Backoffs", Value: 1, Unit: emf.Count})
		if werr := d.sleep(ctx, backoff(n)); werr != nil {
			return out, err
		}
	}
}

// DeadlineMarginEnv is the environment variable that sets Config.DeadlineMargin in milliseconds
// when the field is zero.
const DeadlineMarginEnv = "WORKER_DEADLINE_MARGIN_MS"

// DefaultDeadlineMargin is Config.DeadlineMargin when neither the field nor DeadlineMarginEnv
// sets it.
const DefaultDeadlineMargin = 5 * time.Second

// deadlineMargin resolves Config.DeadlineMargin: the field, else DeadlineMarginEnv, else
// DefaultDeadlineMargin. A negative value turns the check off.
func deadlineMargin(configured time.Duration) (time.Duration, error) {
	if configured != 0 {
		return configured, nil
	}
	raw := os.Getenv(DeadlineMarginEnv)
	if raw == "" {
		return DefaultDeadlineMargin, nil
	}
	ms, err := strconv.Atoi(raw)
	if err != nil {
		return 0, fmt.Errorf("worker: %s=%q is not a number of milliseconds", DeadlineMarginEnv, raw)
	}
	if ms == 0 {
		return DefaultDeadlineMargin, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}
