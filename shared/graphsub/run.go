package graphsub

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/crmsync/crmsync/shared/emf"
)

// gapSlack widens a detected gap backwards: notifications in flight when a subscription lapsed
// may not have been delivered either.
const gapSlack = 15 * time.Minute

// Actions a run reports per subscription.
const (
	ActionNone         = "none"
	ActionCreated      = "created"
	ActionRecreated    = "recreated"
	ActionRenewed      = "renewed"
	ActionReauthorized = "reauthorized"
)

// Outcome is what a run did for one (mailbox, resource).
type Outcome struct {
	Key            string `json:"key"`
	Actions        string `json:"actions"`
	SubscriptionID string `json:"subscription_id,omitempty"`
	ExpiresAt      string `json:"expires_at,omitempty"`
	Status         string `json:"status"`
	AtRisk         bool   `json:"at_risk"`
	ResyncEnqueued int    `json:"resync_enqueued,omitempty"`
	ResyncPending  string `json:"resync_pending_since,omitempty"`
	Error          string `json:"error,omitempty"`
}

// Report is a run's result (the scheduled function's answer).
type Report struct {
	RunAt         time.Time `json:"run_at"`
	Subscriptions []Outcome `json:"subscriptions"`
	AtRisk        int       `json:"at_risk"`
	Resynced      int       `json:"resync_enqueued"`
	Errors        int       `json:"errors"`
}

// Run ensures every configured subscription once (see the package comment) and reports what
// it did. A subscription's failure is recorded on its state item and in the report, not
// returned: the others still run. An error is returned only when nothing could run.
func (m *Manager) Run(ctx context.Context) (Report, error) {
	rep := Report{RunAt: m.d.Now().UTC(), Subscriptions: []Outcome{}}
	if len(m.cfg.Mailboxes) > 0 && (m.cfg.NotificationURL == "" || m.cfg.LifecycleURL == "") {
		return rep, errors.New("graphsub: no public notification and lifecycle URLs (set PUBLIC_BASE_URL)")
	}
	states, err := m.List(ctx)
	if err != nil {
		return rep, err
	}
	// Lifecycle notifications that came to the notification route wait in the ledger.
	recorded, ledgerErrs := m.collectLedgerLifecycle(ctx, states, rep.RunAt)
	if recorded > 0 {
		if states, err = m.List(ctx); err != nil {
			return rep, err
		}
	}
	byKey := map[string]State{}
	for _, s := range states {
		byKey[s.PK] = s
	}
	budget := m.cfg.ResyncMax
	for _, mb := range m.cfg.Mailboxes {
		for _, res := range m.cfg.Resources {
			st, ok := byKey[StateKey(mb, res)]
			if !ok {
				st = State{PK: StateKey(mb, res), Mailbox: mb, Resource: res, Status: StatusMissing}
			}
			out := m.ensure(ctx, &st, &budget)
			if e, ok := ledgerErrs[st.PK]; ok && out.Error == "" {
				out.Error = "lifecycle notifications unread: " + e
			}
			rep.Subscriptions = append(rep.Subscriptions, out)
			rep.Resynced += out.ResyncEnqueued
			if out.AtRisk {
				rep.AtRisk++
			}
			if out.Error != "" {
				rep.Errors++
			}
		}
	}
	m.metrics.Emit(nil, emf.Metric{Name: MetricAtRisk, Value: float64(rep.AtRisk), Unit: emf.Count},
		emf.Metric{Name: MetricResynced, Value: float64(rep.Resynced), Unit: emf.Count})
	m.log.InfoContext(ctx, "graph subscriptions ensured", "subscriptions", len(rep.Subscriptions), "at_risk", rep.AtRisk,
		"resync_enqueued", rep.Resynced, "errors", rep.Errors)
	return rep, nil
}

// ensure carries out one subscription's due actions and its pending resync, and saves its state.
func (m *Manager) ensure(ctx context.Context, st *State, budget *int) Outcome {
	before := *st
	now := m.d.Now()
	var actions []string
	err := m.act(ctx, st, now, &actions)
	resynced := 0
	if err == nil && st.ResyncSince != "" && st.SubscriptionID != "" {
		resynced, err = m.resyncState(ctx, st, now, budget)
	}
	out := Outcome{Key: st.PK, Actions: strings.Join(actions, ",")}
	if out.Actions == "" {
		out.Actions = ActionNone
	}
	if err != nil {
		st.Status, st.LastError, st.LastErrorAt = StatusFailing, err.Error(), formatTime(now)
		st.Failures++
		out.Error = err.Error()
		m.log.WarnContext(ctx, "graph subscription failed", "subscription", st.PK, "error", err.Error(), "failures", st.Failures)
	} else if st.SubscriptionID != "" {
		st.Status, st.LastError, st.LastErrorAt, st.Failures = StatusActive, "", "", 0
	}
	if serr := m.save(ctx, st, before); serr != nil {
		out.Error = strings.TrimPrefix(out.Error+"; "+serr.Error(), "; ")
	}
	out.SubscriptionID, out.ExpiresAt, out.Status, out.ResyncPending = st.SubscriptionID, st.ExpiresAt, st.Status, st.ResyncSince
	if len(actions) > 0 && actions[len(actions)-1] != ActionNone {
		m.log.InfoContext(ctx, "graph subscription updated", "subscription", st.PK, "actions", out.Actions,
			"subscription_id", st.SubscriptionID, "expires_at", st.ExpiresAt)
	}
	out.ResyncEnqueued = resynced
	out.AtRisk = m.atRisk(st, now)
	return out
}

// atRisk: no subscription, its last attempt failed, or it expires within AlarmMargin.
func (m *Manager) atRisk(st *State, now time.Time) bool {
	return st.SubscriptionID == "" || st.Status == StatusFailing || st.Expiry().Sub(now) < m.cfg.AlarmMargin
}

// act creates, recreates, reauthorizes or renews the subscription as its state asks.
func (m *Manager) act(ctx context.Context, st *State, now time.Time, actions *[]string) error {
	if st.UserID == "" {
		id, err := m.userID(ctx, st.Mailbox)
		if err != nil {
			return err
		}
		st.UserID = id
	}
	switch {
	case st.SubscriptionID == "":
		return m.subscribe(ctx, st, now, ActionCreated, actions)
	case st.RecreateRequested != "":
		m.gap(st, parseTime(st.RecreateRequested).Add(-gapSlack))
		return m.subscribe(ctx, st, now, ActionRecreated, actions)
	case !st.Expiry().After(now):
		m.gap(st, st.Expiry().Add(-gapSlack)) // it lapsed: nothing was delivered since
		return m.subscribe(ctx, st, now, ActionRecreated, actions)
	}
	if st.ReauthorizeRequested != "" {
		err := m.reauthorize(ctx, st.SubscriptionID)
		if isStatus(err, http.StatusNotFound) {
			m.gap(st, now.Add(-m.cfg.ResyncLookback))
			return m.subscribe(ctx, st, now, ActionRecreated, actions)
		}
		if err != nil {
			return err
		}
		st.ReauthorizedAt, st.ReauthorizeRequested = formatTime(now), ""
		*actions = append(*actions, ActionReauthorized)
	}
	if st.Expiry().Sub(now) >= m.cfg.RenewBefore {
		return nil
	}
	sub, err := m.renew(ctx, st.SubscriptionID, now.Add(m.cfg.Lifetime))
	if isStatus(err, http.StatusNotFound) {
		m.gap(st, now.Add(-m.cfg.ResyncLookback)) // gone without a subscriptionRemoved: when is unknown
		return m.subscribe(ctx, st, now, ActionRecreated, actions)
	}
	if err != nil {
		return err
	}
	st.ExpiresAt = expiryOf(sub, now.Add(m.cfg.Lifetime))
	st.RenewedAt = formatTime(now)
	*actions = append(*actions, ActionRenewed)
	return nil
}

// gap records a window to resync from since (keeping an earlier pending start), and the
// subscription live in it.
func (m *Manager) gap(st *State, since time.Time) {
	if cur := parseTime(st.ResyncSince); st.ResyncSince == "" || since.Before(cur) {
		st.ResyncSince = formatTime(since)
	}
	if st.ResyncSubscriptionID == "" {
		st.ResyncSubscriptionID = st.SubscriptionID
	}
}

// subscribe creates a subscription for the state (its clientState from the secret).
func (m *Manager) subscribe(ctx context.Context, st *State, now time.Time, action string, actions *[]string) error {
	if m.d.Secrets == nil {
		return errors.New("graphsub: no secret source")
	}
	sec, err := m.d.Secrets.Get(ctx, m.cfg.SecretID)
	if err != nil {
		return fmt.Errorf("read msgraph secret: %w", err)
	}
	clientState := sec.Get("client_state")
	if clientState == "" {
		return errors.New("the msgraph secret has no client_state")
	}
	if st.SubscriptionID != "" {
		// The old subscription may still exist (expired ones are gone): never leave two.
		if err := m.remove(ctx, st.SubscriptionID); err != nil && st.Expiry().After(now) {
			return err
		}
	}
	sub, err := m.create(ctx, st, clientState, now.Add(m.cfg.Lifetime))
	if err != nil {
		return err
	}
	st.SubscriptionID, st.GraphResource = sub.ID, sub.Resource
	st.ExpiresAt = expiryOf(sub, now.Add(m.cfg.Lifetime))
	st.CreatedAt, st.RenewedAt, st.ReauthorizedAt = formatTime(now), "", ""
	st.RecreateRequested, st.ReauthorizeRequested = "", ""
	*actions = append(*actions, action)
	return nil
}

// expiryOf is Graph's expirationDateTime, else the one asked for.
func expiryOf(sub subscription, asked time.Time) string {
	if t, err := time.Parse(time.RFC3339Nano, sub.ExpirationDateTime); err == nil {
		return formatTime(t)
	}
	return formatTime(asked)
}
