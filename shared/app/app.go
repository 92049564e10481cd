// Package app owns how each crmsync Lambda function is wired from its environment: the one place
// that reads a function's environment variables, builds its AWS clients and returns its handler.
// The functions' mains (in Lambda and under aws-lambda-rie) and the local stack both build their
// handlers here, so a function behaves the same everywhere. Nothing here calls AWS.
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/connectors"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/shared/secrets"
)

// Env is what a function is built from.
type Env struct {
	Getenv func(string) string
	AWS    aws.Config
	Log    *slog.Logger
	Stdout io.Writer // where EMF metric lines go
	Now    func() time.Time
}

func (e Env) now() func() time.Time {
	if e.Now != nil {
		return e.Now
	}
	return time.Now
}

// ConfigError names the environment variable that is missing or malformed.
type ConfigError struct {
	Var, Problem string
}

func (e *ConfigError) Error() string { return "environment " + e.Var + ": " + e.Problem }

func required(getenv func(string) string, names ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		v := strings.TrimSpace(getenv(n))
		if v == "" {
			return nil, &ConfigError{Var: n, Problem: "required, not set"}
		}
		out[n] = v
	}
	return out, nil
}

func intVar(getenv func(string) string, name string, def int64) (int64, error) {
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, &ConfigError{Var: name, Problem: fmt.Sprintf("want a positive integer, got %q", v)}
	}
	return n, nil
}

// Webhook builds a webhook function: CONNECTOR, SECRET_ID, INGEST_QUEUE_URL, QUARANTINE_BUCKET,
// PUBLIC_BASE_URL, MAX_BODY_BYTES, SECRET_TTL_SECONDS, REPLAY_TABLE (when the connector needs it).
func Webhook(_ context.Context, env Env) (lambda.Handler, error) {
	vars, err := required(env.Getenv, "CONNECTOR", "SECRET_ID", "INGEST_QUEUE_URL", "QUARANTINE_BUCKET")
	if err != nil {
		return nil, err
	}
	conn, err := connectors.New(vars["CONNECTOR"])
	if err != nil {
		return nil, &ConfigError{Var: "CONNECTOR", Problem: err.Error()}
	}
	maxBody, err := intVar(env.Getenv, "MAX_BODY_BYTES", ingest.DefaultMaxBody)
	if err != nil {
		return nil, err
	}
	ttl, err := intVar(env.Getenv, "SECRET_TTL_SECONDS", 300)
	if err != nil {
		return nil, err
	}
	cfg := ingest.Config{SecretID: vars["SECRET_ID"], QueueURL: vars["INGEST_QUEUE_URL"], Bucket: vars["QUARANTINE_BUCKET"],
		ReplayTable: env.Getenv("REPLAY_TABLE"), PublicBaseURL: env.Getenv("PUBLIC_BASE_URL"), MaxBodyBytes: maxBody}
	d := ingest.Deps{
		Secrets: secrets.New(secretsmanager.NewFromConfig(env.AWS), time.Duration(ttl)*time.Second, env.now()),
		SQS:     sqs.NewFromConfig(env.AWS),
		S3:      s3.NewFromConfig(env.AWS, func(o *s3.Options) { o.UsePathStyle = true }),
		Now:     env.now(), Log: env.Log, Metrics: emf.New(env.Stdout, env.now()),
	}
	if cfg.ReplayTable != "" {
		d.Replay = dynamodb.NewFromConfig(env.AWS)
	}
	h := ingest.New(cfg, conn, d)
	return lambda.NewHandler(h.Handle), nil
}

// Kind says which of crmsync's function binaries a template function runs.
type Kind string

// The function kinds, one binary each under functions/.
const (
	KindWebhook   Kind = "webhook"
	KindWorker    Kind = "worker"
	KindReconcile Kind = "reconcile"
	// KindCrmChanges serves POST /crm/changes (./functions/crmchanges).
	KindCrmChanges Kind = "crmchanges"
)

// KindOf maps a template function's logical id to its kind (the Makefile's build-<LogicalId>
// targets use the same mapping).
func KindOf(logicalID string) (Kind, bool) {
	switch {
	case strings.HasPrefix(logicalID, "Webhook") && strings.HasSuffix(logicalID, "Function"):
		return KindWebhook, true
	case logicalID == "WorkerFunction":
		return KindWorker, true
	case logicalID == "CrmChangesFunction":
		return KindCrmChanges, true
	case strings.HasPrefix(logicalID, "Reconcile") && strings.HasSuffix(logicalID, "Function"):
		return KindReconcile, true
	}
	return "", false
}

// Build returns the handler for a template function.
func Build(ctx context.Context, logicalID string, env Env) (lambda.Handler, error) {
	k, ok := KindOf(logicalID)
	if !ok {
		return nil, fmt.Errorf("function %s: no crmsync binary serves it", logicalID)
	}
	switch k {
	case KindWebhook:
		return Webhook(ctx, env)
	case KindWorker:
		return Worker(ctx, env)
	case KindCrmChanges:
		return CrmChanges(ctx, env)
	default:
		return Reconcile(ctx, env)
	}
}
