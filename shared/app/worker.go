package app

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/metaleads"
	"github.com/crmsync/crmsync/shared/connector/msgraph"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/secrets"
	"github.com/crmsync/crmsync/shared/worker"
)

// LoadPolicy returns the policy at path, or the one embedded at build when path is empty.
func LoadPolicy(path string) (*policy.Policy, error) {
	if strings.TrimSpace(path) != "" {
		return policy.Load(path)
	}
	return policy.Parse("config/policy.yaml (embedded)", config.PolicyYAML)
}

// Worker builds the worker function: LEDGER_TABLE, CRM_TABLE, POLICY_PATH (empty = embedded),
// LEDGER_RETENTION_DAYS, META_LEADS_SECRET_ID, MSGRAPH_SECRET_ID, META_GRAPH_BASE_URL,
// MSGRAPH_BASE_URL, INTERNAL_EMAIL_DOMAINS (comma-separated; tells sent from received mail).
func Worker(_ context.Context, env Env) (lambda.Handler, error) {
	w, err := NewWorker(env)
	if err != nil {
		return nil, err
	}
	return lambda.NewHandler(w.Handle), nil
}

// NewWorker builds the worker itself (the CLI uses it for replay, rebuild and contact reads).
func NewWorker(env Env) (*worker.Worker, error) {
	vars, err := required(env.Getenv, "LEDGER_TABLE", "CRM_TABLE")
	if err != nil {
		return nil, err
	}
	pol, err := LoadPolicy(env.Getenv("POLICY_PATH"))
	if err != nil {
		return nil, &ConfigError{Var: "POLICY_PATH", Problem: err.Error()}
	}
	days, err := intVar(env.Getenv, "LEDGER_RETENTION_DAYS", 400)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 8 * time.Second}
	hyd := map[string]worker.Hydration{}
	if id := env.Getenv("META_LEADS_SECRET_ID"); id != "" {
		hyd[metaleads.Name] = worker.Hydration{Hydrator: metaleads.New(), SecretID: id,
			API: connector.API{BaseURL: env.Getenv("META_GRAPH_BASE_URL"), Client: client}}
	}
	if id := env.Getenv("MSGRAPH_SECRET_ID"); id != "" {
		var domains []string
		for _, d := range strings.Split(env.Getenv("INTERNAL_EMAIL_DOMAINS"), ",") {
			if d = strings.TrimSpace(d); d != "" {
				domains = append(domains, d)
			}
		}
		hyd[msgraph.Name] = worker.Hydration{Hydrator: msgraph.New(msgraph.WithInternalDomains(domains...)), SecretID: id,
			API: connector.API{BaseURL: env.Getenv("MSGRAPH_BASE_URL"), Client: client}}
	}
	return worker.New(worker.Config{
		LedgerTable: vars["LEDGER_TABLE"], CRMTable: vars["CRM_TABLE"], Policy: pol, Clock: env.now(),
		Hydrators: hyd, Secrets: secrets.New(secretsmanager.NewFromConfig(env.AWS), 5*time.Minute, env.now()),
		RetentionDays: int(days), Log: env.Log, Metrics: env.Stdout,
	}, dynamodb.NewFromConfig(env.AWS))
}
