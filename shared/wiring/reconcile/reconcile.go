// Package reconcile owns how the reconcile functions (parity, consistency, mapping-review) are
// wired from their environment: the job settings, the policy, the worker they recompute with, the
// vendor listers with their secrets, and their DynamoDB, SQS and S3 clients. The ops tool builds
// its runner here too, for `crmsync reconcile` and `crmsync backfill`. Nothing here calls AWS.
package reconcile

import (
	"context"
	"net/http"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/calendly"
	"github.com/crmsync/crmsync/shared/connector/mailgun"
	"github.com/crmsync/crmsync/shared/connector/twilio"
	"github.com/crmsync/crmsync/shared/connector/typeform"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/shared/secrets"
	"github.com/crmsync/crmsync/shared/wiring"
	wiredworker "github.com/crmsync/crmsync/shared/wiring/worker"
)

// Sources maps each listable source to the environment variables holding its secret id and its
// vendor API base URL.
var Sources = []struct {
	Name, SecretVar, BaseURLVar string
	Lister                      connector.Lister
}{
	{twilio.Name, "TWILIO_SECRET_ID", "TWILIO_API_BASE_URL", twilio.New()},
	{calendly.Name, "CALENDLY_SECRET_ID", "CALENDLY_API_BASE_URL", calendly.New()},
	{mailgun.Name, "MAILGUN_SECRET_ID", "MAILGUN_API_BASE_URL", mailgun.New()},
	{typeform.Name, "TYPEFORM_SECRET_ID", "TYPEFORM_API_BASE_URL", typeform.New()},
}

// LoadSettings returns the reconcile settings at path, or those embedded at build
// (config/reconcile.yaml) when path is empty.
func LoadSettings(path string) (*reconcile.Settings, error) {
	if path == "" {
		return reconcile.ParseConfig("config/reconcile.yaml (embedded)", config.ReconcileYAML)
	}
	return reconcile.LoadConfig(path)
}

// Build builds a reconcile function: JOB (the job its schedule runs) and the environment New
// reads.
func Build(_ context.Context, env wiring.Env) (lambda.Handler, error) {
	if _, err := wiring.Required(env.Getenv, "JOB"); err != nil {
		return nil, err
	}
	r, err := New(env)
	if err != nil {
		return nil, err
	}
	return lambda.NewHandler(r.Handle), nil
}

// New builds the reconcile job runner from a reconcile function's environment: JOB,
// LEDGER_TABLE, CRM_TABLE, INGEST_QUEUE_URL, DLQ_URL, QUARANTINE_BUCKET, POLICY_PATH and
// RECONCILE_CONFIG_PATH (empty = embedded), RECONCILE_DEADLINE_MARGIN_MS (how long before the
// invocation's deadline a run checkpoints and stores its report; default 30 000), and per
// listable source <SOURCE>_SECRET_ID and
// <SOURCE>_API_BASE_URL (a source without a secret id is not listed).
func New(env wiring.Env) (*reconcile.Runner, error) {
	vars, err := wiring.Required(env.Getenv, "LEDGER_TABLE", "CRM_TABLE", "INGEST_QUEUE_URL", "DLQ_URL", "QUARANTINE_BUCKET")
	if err != nil {
		return nil, err
	}
	settings, err := LoadSettings(env.Getenv("RECONCILE_CONFIG_PATH"))
	if err != nil {
		return nil, &wiring.ConfigError{Var: "RECONCILE_CONFIG_PATH", Problem: err.Error()}
	}
	pol, err := wiring.PolicyFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	w, err := wiredworker.New(env)
	if err != nil {
		return nil, err
	}
	stale, err := wiring.StaleSecrets(env, nil)
	if err != nil {
		return nil, err
	}
	margin, err := wiring.PositiveInt(env.Getenv, "RECONCILE_DEADLINE_MARGIN_MS", reconcile.DefaultDeadlineMargin.Milliseconds())
	if err != nil {
		return nil, err
	}
	now := env.Clock()
	cfg := reconcile.Config{Job: env.Getenv("JOB"), LedgerTable: vars["LEDGER_TABLE"], CRMTable: vars["CRM_TABLE"],
		QueueURL: vars["INGEST_QUEUE_URL"], DLQURL: vars["DLQ_URL"], Bucket: vars["QUARANTINE_BUCKET"]}
	return reconcile.New(cfg, reconcile.Deps{
		DynamoDB: dynamodb.NewFromConfig(env.AWS), SQS: sqs.NewFromConfig(env.AWS),
		S3: s3.NewFromConfig(env.AWS, func(o *s3.Options) { o.UsePathStyle = true }), Worker: w,
		Secrets: secrets.New(secretsmanager.NewFromConfig(env.AWS), 5*time.Minute, now, stale), Sources: listers(env),
		Settings: settings, Policy: pol, Now: now, Log: env.Log, Metrics: env.Stdout,
		DeadlineMargin: time.Duration(margin) * time.Millisecond,
	})
}

// listers returns the listable sources whose secret ids are configured.
func listers(env wiring.Env) []reconcile.Source {
	client := &http.Client{Timeout: 20 * time.Second}
	var out []reconcile.Source
	for _, s := range Sources {
		id := env.Getenv(s.SecretVar)
		if id == "" {
			continue
		}
		out = append(out, reconcile.Source{Name: s.Name, Lister: s.Lister, SecretID: id,
			API: connector.API{BaseURL: env.Getenv(s.BaseURLVar), Client: client}})
	}
	return out
}
