// Package worker owns how the worker function is wired from its environment: the policy, the
// ledger and CRM tables' DynamoDB client, and the hydrators of thin connectors (Meta Lead Ads,
// Microsoft Graph) with their secrets and, for Graph, the app token source (shared/graphauth).
// The ops tool builds its worker here too, for replay, rebuild and contact reads. Nothing here
// calls AWS.
package worker

import (
	"context"
	"net/http"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/metaleads"
	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/graphauth"
	"github.com/crmsync/crmsync/shared/secrets"
	"github.com/crmsync/crmsync/shared/wiring"
	"github.com/crmsync/crmsync/shared/worker"
)

// Build builds the worker function: LEDGER_TABLE, CRM_TABLE, POLICY_PATH (empty = embedded),
// LEDGER_RETENTION_DAYS, META_LEADS_SECRET_ID, MSGRAPH_SECRET_ID, META_GRAPH_BASE_URL,
// MSGRAPH_BASE_URL, MSGRAPH_LOGIN_BASE_URL (the identity platform's authority for app tokens;
// empty = https://login.microsoftonline.com), INTERNAL_EMAIL_DOMAINS (comma-separated; tells
// sent from received mail).
func Build(_ context.Context, env wiring.Env) (lambda.Handler, error) {
	w, err := New(env)
	if err != nil {
		return nil, err
	}
	return lambda.NewHandler(w.Handle), nil
}

// New builds the worker itself from the environment Build reads.
func New(env wiring.Env) (*worker.Worker, error) {
	vars, err := wiring.Required(env.Getenv, "LEDGER_TABLE", "CRM_TABLE")
	if err != nil {
		return nil, err
	}
	pol, err := wiring.PolicyFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	days, err := wiring.PositiveInt(env.Getenv, "LEDGER_RETENTION_DAYS", 400)
	if err != nil {
		return nil, err
	}
	stale, err := wiring.StaleSecrets(env, nil)
	if err != nil {
		return nil, err
	}
	now := env.Clock()
	cache := secrets.New(secretsmanager.NewFromConfig(env.AWS), 5*time.Minute, now, stale)
	return worker.New(worker.Config{
		LedgerTable: vars["LEDGER_TABLE"], CRMTable: vars["CRM_TABLE"], Policy: pol, Clock: now,
		Hydrators: hydrators(env, cache, now), Secrets: cache,
		RetentionDays: int(days), Log: env.Log, Metrics: env.Stdout,
	}, dynamodb.NewFromConfig(env.AWS))
}

// hydrators returns the thin connectors' hydrators whose secret ids are configured. The Graph
// hydrator takes its app tokens, per notification tenant, from a graphauth source reading the
// msgraph secret through cache (the worker's own secrets cache).
func hydrators(env wiring.Env, cache *secrets.Cache, now func() time.Time) map[string]worker.Hydration {
	client := &http.Client{Timeout: 8 * time.Second}
	hyd := map[string]worker.Hydration{}
	if id := env.Getenv("META_LEADS_SECRET_ID"); id != "" {
		hyd[metaleads.Name] = worker.Hydration{Hydrator: metaleads.New(), SecretID: id,
			API: connector.API{BaseURL: env.Getenv("META_GRAPH_BASE_URL"), Client: client}}
	}
	if id := env.Getenv("MSGRAPH_SECRET_ID"); id != "" {
		domains := wiring.List(env.Getenv, "INTERNAL_EMAIL_DOMAINS")
		tokens := graphauth.NewTenants(cache, id, graphauth.Options{LoginBaseURL: env.Getenv("MSGRAPH_LOGIN_BASE_URL"), HTTP: client, Now: now})
		hyd[msgraph.Name] = worker.Hydration{Hydrator: msgraph.New(msgraph.WithInternalDomains(domains...), msgraph.WithTokenSource(tokens)),
			SecretID: id, API: connector.API{BaseURL: env.Getenv("MSGRAPH_BASE_URL"), Client: client}}
	}
	return hyd
}
