package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/crmsync/crmsync/shared/emf"
)

// deps are what every part of the worker shares: the configuration (defaults filled in), the
// DynamoDB client, the logger, the metrics writer, the clock and the sleep between attempts.
type deps struct {
	cfg     Config
	ddb     DynamoAPI
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

// IsPermanent reports whether err is a permanent failure.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }
