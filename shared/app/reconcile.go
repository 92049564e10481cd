package app

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
	"github.com/crmsync/crmsync/shared/connector/twilio"
	"github.com/crmsync/crmsync/shared/connector/typeform"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/shared/secrets"
)

// ReconcileSources maps each listable source to the environment variables holding its secret id
// and its vendor API base URL.
var ReconcileSources = []struct {
	Name, SecretVar, BaseURLVar string
	Lister                      connector.Lister
}{
	{twilio.Name, "TWILIO_SECRET_ID", "TWILIO_API_BASE_URL", twilio.New()},
	{calendly.Name, "CALENDLY_SECRET_ID", "CALENDLY_API_BASE_URL", calendly.New()},
	{typeform.Name, "TYPEFORM_SECRET_ID", "TYPEFORM_API_BASE_URL", typeform.New()},
}

// LoadReconcileSettings returns the reconcile settings at path, or those embedded at build
// (config/reconcile.yaml) when path is empty.
func LoadReconcileSettings(path string) (*reconcile.Settings, error) {
	if path == "" {
		return reconcile.ParseConfig("config/reconcile.yaml (embedded)", config.ReconcileYAML)
	}
	return reconcile.LoadConfig(path)
}

// Reconcile builds a reconcile function: JOB (the job its schedule runs) and the environment
// NewReconciler reads.
func Reconcile(_ context.Context, env Env) (lambda.Handler, error) {
	if _, err := required(env.Getenv, "JOB"); err != nil {
		return nil, err
	}
	r, err := NewReconciler(env)
	if err != nil {
		return nil, err
	}
	return lambda.NewHandler(r.Handle), nil
}

// NewReconciler builds the reconcile job runner from a reconcile function's environment: JOB,
// LEDGER_TABLE, CRM_TABLE, INGEST_QUEUE_URL, DLQ_URL, QUARANTINE_BUCKET, POLICY_PATH and
// RECONCILE_CONFIG_PATH (empty = embedded), and per listable source <SOURCE>_SECRET_ID and
// <SOURCE>_API_BASE_URL (a source without a secret id is not listed). The CLI uses it for
// `crmsync reconcile` and `crmsync backfill`.
func NewReconciler(env Env) (*reconcile.Runner, error) {
	vars, err := required(env.Getenv, "LEDGER_TABLE", "CRM_TABLE", "INGEST_QUEUE_URL", "DLQ_URL", "QUARANTINE_BUCKET")
	if err != nil {
		return nil, err
	}
	settings, err := LoadReconcileSettings(env.Getenv("RECONCILE_CONFIG_PATH"))
	if err != nil {
		return nil, &ConfigError{Var: "RECONCILE_CONFIG_PATH", Problem: err.Error()}
	}
	pol, err := LoadPolicy(env.Getenv("POLICY_PATH"))
	if err != nil {
		return nil, &ConfigError{Var: "POLICY_PATH", Problem: err.Error()}
	}
	w, err := NewWorker(env)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: 20 * time.Second}
	var sources []reconcile.Source
	for _, s := range ReconcileSources {
		id := env.Getenv(s.SecretVar)
		if id == "" {
			continue
		}
		sources = append(sources, reconcile.Source{Name: s.Name, Lister: s.Lister, SecretID: id,
			API: connector.API{BaseURL: env.Getenv(s.BaseURLVar), Client: client}})
	}
	cfg := reconcile.Config{Job: env.Getenv("JOB"), LedgerTable: vars["LEDGER_TABLE"], CRMTable: vars["CRM_TABLE"],
		QueueURL: vars["INGEST_QUEUE_URL"], DLQURL: vars["DLQ_URL"], Bucket: vars["QUARANTINE_BUCKET"]}
	return reconcile.New(cfg, reconcile.Deps{
		DynamoDB: dynamodb.NewFromConfig(env.AWS), SQS: sqs.NewFromConfig(env.AWS),
		S3: s3.NewFromConfig(env.AWS, func(o *s3.Options) { o.UsePathStyle = true }), Worker: w,
		Secrets: secrets.New(secretsmanager.NewFromConfig(env.AWS), 5*time.Minute, env.now()), Sources: sources,
		Settings: settings, Policy: pol, Now: env.now(), Log: env.Log, Metrics: env.Stdout,
	})
}
