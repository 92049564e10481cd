package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/crmsync/crmsync/shared/canonical"
)

// replay re-applies an event already in the ledger as a forced re-run (see Worker.Replay).
func (o *operator) replay(ctx context.Context, key, by, why string) (Result, error) {
	if strings.TrimSpace(by) == "" || strings.TrimSpace(why) == "" {
		return Result{Key: key}, errors.New("replay: who and why are required")
	}
	ledger, err := o.getLedger(ctx, key)
	if err != nil {
		return Result{Key: key}, err
	}
	if ledger == nil {
		return Result{Key: key}, fmt.Errorf("replay %s: %w", key, ErrNotFound)
	}
	doc, err := ledger.EventJSON()
	if err != nil {
		return Result{Key: key}, fmt.Errorf("replay %s: stored event: %w", key, err)
	}
	if doc == "" {
		return Result{Key: key}, fmt.Errorf("replay %s: the ledger holds no event (outcome %s)", key, ledger.Outcome)
	}
	ev, err := canonical.Unmarshal([]byte(doc))
	if err != nil {
		return Result{Key: key}, fmt.Errorf("replay %s: stored event: %w", key, err)
	}
	res, err := o.applier.apply(ctx, ev, &rerunRequest{by: by, why: why})
	if err == nil {
		o.log.InfoContext(ctx, "forced re-run", "key", key, "by", by, "outcome", res.Outcome)
	}
	return res, err
}
