package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/emf"
)

// HydrationFailuresMetric counts thin events whose hydration failed permanently (recorded
// REJECTED); HydrationFailuresAlarm watches its rollup.
const HydrationFailuresMetric = "HydrationFailures"

// skippedError is a hydration that found nothing to apply on purpose (a draft, a deleted
// message): the event is recorded NOOP with the reason, not REJECTED.
type skippedError struct{ reason string }

func (e *skippedError) Error() string { return e.reason }

// hydrate fills in a thin notification through its source's hydrator.
func (a *applier) hydrate(ctx context.Context, ev *canonical.Event) error {
	hydration, ok := a.cfg.Hydrators[ev.Source]
	if !ok || hydration.Hydrator == nil {
		return permanent("no hydrator for source %q", ev.Source)
	}
	var secret connector.Secret
	if hydration.SecretID != "" {
		if a.cfg.Secrets == nil {
			return permanent("no secret source configured for %q", ev.Source)
		}
		read, err := a.cfg.Secrets.Get(ctx, hydration.SecretID)
		if err != nil {
			return fmt.Errorf("read %s secret: %w", ev.Source, err)
		}
		secret = read
	}
	err := hydration.Hydrator.Hydrate(ctx, ev, secret, hydration.API)
	switch {
	case err == nil:
	case errors.Is(err, connector.ErrSkipped):
		return &skippedError{reason: err.Error()}
	case errors.Is(err, connector.ErrPermanent), errors.Is(err, connector.ErrNotFound), errors.Is(err, connector.ErrUnusable):
		// Retrying cannot fix it (an expired token, a missing permission, a deleted lead): the
		// event is recorded REJECTED with the vendor's reason and counted, so the alarm sends an
		// operator to fix the cause and re-run it with `crmsync replay`.
		a.metrics.Emit(map[string]string{"Connector": ev.Source}, emf.Metric{Name: HydrationFailuresMetric, Value: 1, Unit: emf.Count})
		return permanent("hydrate: %v", err)
	default:
		return fmt.Errorf("hydrate: %w", err) // ErrTransient and anything unexpected: retry
	}
	if ev.Kind == canonical.KindNotification {
		return permanent("hydrate left %s a notification", ev.Key)
	}
	if err := ev.Validate(); err != nil {
		return permanent("hydrated event: %v", err)
	}
	return nil
}
