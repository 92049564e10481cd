// Package graphsubs owns how the Graph subscription manager function is wired from its
// environment: the mailboxes and settings, the app token source (shared/graphauth) over the
// msgraph secret, the msgraph connector that maps resync items as the worker would, and the
// DynamoDB, SQS and Secrets Manager clients. The ops tool builds the same manager here. Nothing
// here calls AWS or Graph.
package graphsubs

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/graphauth"
	"github.com/crmsync/crmsync/shared/graphsub"
	"github.com/crmsync/crmsync/shared/secrets"
	"github.com/crmsync/crmsync/shared/wiring"
)

// Paths of the routes Graph is given, under PUBLIC_BASE_URL.
const (
	NotificationPath = "/webhooks/msgraph"
	LifecyclePath    = "/webhooks/msgraph/lifecycle"
)

// maxLifetimeMinutes is Graph's longest expiry for Outlook messages and events.
const maxLifetimeMinutes = 10080

// Build builds the Graph subscriptions function: the manager New wires, whose Handle serves
// both the schedule and the lifecycle route.
func Build(_ context.Context, env wiring.Env) (lambda.Handler, error) {
	m, err := New(env)
	if err != nil {
		return nil, err
	}
	return lambda.NewHandler(m.Handle), nil
}

// New builds the manager from SUBSCRIPTION_TABLE, LEDGER_TABLE, INGEST_QUEUE_URL,
// MSGRAPH_SECRET_ID, MSGRAPH_BASE_URL, MSGRAPH_LOGIN_BASE_URL, PUBLIC_BASE_URL, GRAPH_MAILBOXES
// (comma-separated user ids or addresses; empty = nothing to keep), GRAPH_RESOURCES (default
// messages,events), GRAPH_MAIL_FOLDERS, INTERNAL_EMAIL_DOMAINS and the minutes settings
// GRAPH_SUBSCRIPTION_LIFETIME_MINUTES (4320), GRAPH_RENEW_BEFORE_MINUTES (1440),
// GRAPH_ALARM_MARGIN_MINUTES (720), GRAPH_RESYNC_LOOKBACK_MINUTES (1440), with GRAPH_RESYNC_MAX
// (500) and SECRET_TTL_SECONDS (300).
func New(env wiring.Env) (*graphsub.Manager, error) {
	vars, err := wiring.Required(env.Getenv, "SUBSCRIPTION_TABLE", "LEDGER_TABLE", "INGEST_QUEUE_URL", "MSGRAPH_SECRET_ID")
	if err != nil {
		return nil, err
	}
	cfg := graphsub.Config{
		Mailboxes: wiring.List(env.Getenv, "GRAPH_MAILBOXES"), Resources: wiring.List(env.Getenv, "GRAPH_RESOURCES"),
		StateTable: vars["SUBSCRIPTION_TABLE"], LedgerTable: vars["LEDGER_TABLE"], QueueURL: vars["INGEST_QUEUE_URL"],
		SecretID: vars["MSGRAPH_SECRET_ID"], GraphBaseURL: env.Getenv("MSGRAPH_BASE_URL"), MailFolders: wiring.List(env.Getenv, "GRAPH_MAIL_FOLDERS"),
	}
	if base := strings.TrimRight(strings.TrimSpace(env.Getenv("PUBLIC_BASE_URL")), "/"); base != "" {
		cfg.NotificationURL, cfg.LifecycleURL = base+NotificationPath, base+LifecyclePath
	}
	if err := minutes(env, &cfg); err != nil {
		return nil, err
	}
	max, err := wiring.PositiveInt(env.Getenv, "GRAPH_RESYNC_MAX", 500)
	if err != nil {
		return nil, err
	}
	cfg.ResyncMax = int(max)
	ttl, err := wiring.PositiveInt(env.Getenv, "SECRET_TTL_SECONDS", 300)
	if err != nil {
		return nil, err
	}
	stale, err := wiring.StaleSecrets(env, nil)
	if err != nil {
		return nil, err
	}
	now := env.Clock()
	cache := secrets.New(secretsmanager.NewFromConfig(env.AWS), time.Duration(ttl)*time.Second, now, stale)
	tokens := graphauth.New(cache, cfg.SecretID, graphauth.Options{LoginBaseURL: env.Getenv("MSGRAPH_LOGIN_BASE_URL"), Now: now})
	m, err := graphsub.New(cfg, graphsub.Deps{
		DynamoDB: dynamodb.NewFromConfig(env.AWS), SQS: sqs.NewFromConfig(env.AWS), Secrets: cache, Token: tokens,
		HTTP:     tokens.Client(&http.Client{Timeout: 20 * time.Second}),
		Hydrator: msgraph.New(msgraph.WithInternalDomains(wiring.List(env.Getenv, "INTERNAL_EMAIL_DOMAINS")...)),
		Now:      now, Log: env.Log, Metrics: env.Stdout,
	})
	if err != nil {
		return nil, &wiring.ConfigError{Var: "GRAPH_RESOURCES", Problem: err.Error()}
	}
	return m, nil
}

// minutes reads the duration settings.
func minutes(env wiring.Env, cfg *graphsub.Config) error {
	for _, s := range []struct {
		name string
		def  int64
		dst  *time.Duration
	}{
		{"GRAPH_SUBSCRIPTION_LIFETIME_MINUTES", 4320, &cfg.Lifetime},
		{"GRAPH_RENEW_BEFORE_MINUTES", 1440, &cfg.RenewBefore},
		{"GRAPH_ALARM_MARGIN_MINUTES", 720, &cfg.AlarmMargin},
		{"GRAPH_RESYNC_LOOKBACK_MINUTES", 1440, &cfg.ResyncLookback},
	} {
		n, err := wiring.PositiveInt(env.Getenv, s.name, s.def)
		if err != nil {
			return err
		}
		*s.dst = time.Duration(n) * time.Minute
	}
	if cfg.Lifetime > maxLifetimeMinutes*time.Minute {
		return &wiring.ConfigError{Var: "GRAPH_SUBSCRIPTION_LIFETIME_MINUTES", Problem: "Graph allows at most 10080 minutes for messages and events"}
	}
	if cfg.RenewBefore >= cfg.Lifetime {
		return &wiring.ConfigError{Var: "GRAPH_RENEW_BEFORE_MINUTES", Problem: "must be shorter than the subscription lifetime"}
	}
	return nil
}
