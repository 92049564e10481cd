// Package graphsub owns crmsync's Microsoft Graph subscription manager: one change-notification
// subscription per configured mailbox and resource (messages, events), kept alive by a scheduled
// run, and the lifecycle route Graph calls when a subscription needs attention.
//
// Each (mailbox, resource) has a state item in the subscriptions table (State). A run (Run):
//
//   - creates the subscription when there is none, or it expired (a gap), or the lifecycle route
//     recorded subscriptionRemoved (the old one is deleted first when it still exists);
//   - reauthorizes it (POST /subscriptions/{id}/reauthorize) when reauthorizationRequired was
//     recorded, and renews it (PATCH expirationDateTime) when less than RenewBefore remains;
//   - after a recorded `missed`, a removal or any gap it detects, resyncs the window with the
//     delta query and enqueues, through the ingest queue as the webhook would, a thin
//     notification event for each message or event the ledger lacks — by key, or as an
//     equivalent delivered event (same activity, same status: reconcile/check.Equivalent);
//   - records what it did on the state item, and reports the subscriptions at risk (missing,
//     failing, or within AlarmMargin of expiry) as the GraphSubscriptionsAtRisk metric.
//
// The lifecycle route (Lifecycle) answers Graph's validationToken handshake, authenticates each
// notification by clientState, records the requested action on the subscription's state item and
// answers 202 at once; the next run carries the action out. Lifecycle notifications Graph sends
// to the notification route instead (a lifecycleNotificationUrl equal to the notificationUrl)
// reach the manager through the ledger: the msgraph webhook queues them, the worker records them,
// and each run first records the new ones of every subscription it keeps, as the route would
// have (collectLedgerLifecycle). Graph calls go through the app token
// of shared/graphauth (refreshed on 401). The package's AWS calls are the small interfaces below.
package graphsub

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/emf"
)

// Resources Graph subscriptions can be kept for.
const (
	ResourceMessages = "messages"
	ResourceEvents   = "events"
)

// Metric names the manager emits (CrmSync namespace, no dimension).
const (
	// MetricAtRisk counts the subscriptions missing, failing (the last create, renew or
	// reauthorize failed) or within AlarmMargin of expiry after a run; GraphSubscriptionsAlarm
	// watches it.
	MetricAtRisk = "GraphSubscriptionsAtRisk"
	// MetricResynced counts the events a run's resyncs enqueued.
	MetricResynced = "GraphResyncEnqueued"
	// MetricLifecycle counts lifecycle notifications recorded by the route.
	MetricLifecycle = "GraphLifecycleNotifications"
)

// DynamoDBAPI is what the manager calls on DynamoDB: its state items (Scan, GetItem, PutItem,
// UpdateItem) and the ledger (GetItem, Query on ByGroup).
type DynamoDBAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, optFns ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
}

// SQSAPI sends resync events to the ingest queue.
type SQSAPI interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// Secrets reads the msgraph connector secret (client_state).
type Secrets interface {
	Get(ctx context.Context, id string) (connector.Secret, error)
}

// TokenSource is the app's Graph token (shared/graphauth.Source).
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate()
}

// Config is what the manager keeps and where.
type Config struct {
	// Mailboxes are the user ids or addresses whose mail and calendar are synced.
	Mailboxes []string
	// Resources are kept per mailbox (default messages and events).
	Resources []string
	// StateTable holds the state items; LedgerTable is read for the resync's check.
	StateTable, LedgerTable string
	// QueueURL is the ingest queue resync events are sent to.
	QueueURL string
	// SecretID is the msgraph connector secret (client_state; the token source reads the rest).
	SecretID string
	// NotificationURL and LifecycleURL are given to Graph on creation.
	NotificationURL, LifecycleURL string
	// GraphBaseURL is the Graph API root (default https://graph.microsoft.com/v1.0).
	GraphBaseURL string
	// Lifetime is the expiry asked for on create and renew (default 72 h; Graph allows at most
	// 10080 minutes for Outlook resources).
	Lifetime time.Duration
	// RenewBefore: a subscription with less left is renewed (default 24 h).
	RenewBefore time.Duration
	// AlarmMargin: a subscription with less left is at risk (default 12 h).
	AlarmMargin time.Duration
	// ResyncLookback is the window resynced after `missed` or an unexplained loss (default 24 h).
	ResyncLookback time.Duration
	// ResyncMax bounds the events one run enqueues (default 500); the rest waits for the next run.
	ResyncMax int
	// MailFolders are the folders the message delta reads (default inbox, sentitems).
	MailFolders []string
	// CalendarHorizon is how far ahead the calendarView delta reaches (default 180 days).
	CalendarHorizon time.Duration
}

// Deps are the manager's clients.
type Deps struct {
	DynamoDB DynamoDBAPI
	SQS      SQSAPI
	Secrets  Secrets
	Token    TokenSource
	// HTTP sends Graph requests; it authorizes them with Token and retries a 401 once
	// (graphauth.Source.Client).
	HTTP connector.Doer
	// Hydrator maps a thin notification as the worker would (the msgraph connector, with the
	// same internal domains): the resync's equivalence check.
	Hydrator connector.Hydrator
	Now      func() time.Time
	Log      *slog.Logger
	Metrics  io.Writer
}

// Manager keeps the subscriptions.
type Manager struct {
	cfg     Config
	d       Deps
	log     *slog.Logger
	metrics *emf.Writer
}

// DefaultGraphBaseURL is Graph's v1.0 root.
const DefaultGraphBaseURL = "https://graph.microsoft.com/v1.0"

// New returns a manager, filling in the configuration's defaults.
func New(cfg Config, d Deps) (*Manager, error) {
	if d.DynamoDB == nil || cfg.StateTable == "" {
		return nil, errors.New("graphsub: no state table")
	}
	if len(cfg.Resources) == 0 {
		cfg.Resources = []string{ResourceMessages, ResourceEvents}
	}
	for _, r := range cfg.Resources {
		if r != ResourceMessages && r != ResourceEvents {
			return nil, errors.New("graphsub: resource " + r + " is neither messages nor events")
		}
	}
	cfg.GraphBaseURL = strings.TrimRight(cfg.GraphBaseURL, "/")
	if cfg.GraphBaseURL == "" {
		cfg.GraphBaseURL = DefaultGraphBaseURL
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.Lifetime, 72*time.Hour)
	def(&cfg.RenewBefore, 24*time.Hour)
	def(&cfg.AlarmMargin, 12*time.Hour)
	def(&cfg.ResyncLookback, 24*time.Hour)
	def(&cfg.CalendarHorizon, 180*24*time.Hour)
	if cfg.ResyncMax <= 0 {
		cfg.ResyncMax = 500
	}
	if len(cfg.MailFolders) == 0 {
		cfg.MailFolders = []string{"inbox", "sentitems"}
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, d: d, log: log, metrics: emf.New(d.Metrics, d.Now)}, nil
}

// Config returns the manager's configuration with its defaults.
func (m *Manager) Config() Config { return m.cfg }
