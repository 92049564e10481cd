// Package webhook owns how the webhook function is wired from its environment: the connector
// named by CONNECTOR, the ingest handler, its secret cache and its SQS, S3 and (Mailgun's replay
// table) DynamoDB clients. Nothing here calls AWS.
package webhook

import (
	"context"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/connector/typeform"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/ingest"
	"github.com/crmsync/crmsync/shared/policy"
	"github.com/crmsync/crmsync/shared/secrets"
	"github.com/crmsync/crmsync/shared/wiring"
)

// Build builds a webhook function: CONNECTOR, SECRET_ID, INGEST_QUEUE_URL, QUARANTINE_BUCKET,
// PUBLIC_BASE_URL, MAX_BODY_BYTES, SECRET_TTL_SECONDS, SECRET_GRACE_SECONDS, DEADLINE_MARGIN_MS,
// REPLAY_TABLE (when the connector needs it), TYPEFORM_MAPPING_FILE (typeform only: a mapping file
// to use instead of the embedded config/typeform.yaml).
func Build(_ context.Context, env wiring.Env) (lambda.Handler, error) {
	vars, err := wiring.Required(env.Getenv, "CONNECTOR", "SECRET_ID", "INGEST_QUEUE_URL", "QUARANTINE_BUCKET")
	if err != nil {
		return nil, err
	}
	conn, err := registry.New(vars["CONNECTOR"])
	if err != nil {
		return nil, &wiring.ConfigError{Var: "CONNECTOR", Problem: err.Error()}
	}
	if vars["CONNECTOR"] == typeform.Name {
		if conn, err = typeformConnector(env.Getenv("TYPEFORM_MAPPING_FILE")); err != nil {
			return nil, err
		}
	}
	maxBody, err := wiring.PositiveInt(env.Getenv, "MAX_BODY_BYTES", ingest.DefaultMaxBody)
	if err != nil {
		return nil, err
	}
	ttl, err := wiring.PositiveInt(env.Getenv, "SECRET_TTL_SECONDS", 300)
	if err != nil {
		return nil, err
	}
	margin, err := wiring.PositiveInt(env.Getenv, "DEADLINE_MARGIN_MS", ingest.DefaultDeadlineMargin.Milliseconds())
	if err != nil {
		return nil, err
	}
	stale, err := wiring.StaleSecrets(env, map[string]string{"Connector": vars["CONNECTOR"]})
	if err != nil {
		return nil, err
	}
	now := env.Clock()
	cfg := ingest.Config{SecretID: vars["SECRET_ID"], QueueURL: vars["INGEST_QUEUE_URL"], Bucket: vars["QUARANTINE_BUCKET"],
		ReplayTable: env.Getenv("REPLAY_TABLE"), PublicBaseURL: env.Getenv("PUBLIC_BASE_URL"), MaxBodyBytes: maxBody,
		DeadlineMargin: time.Duration(margin) * time.Millisecond}
	d := ingest.Deps{
		Secrets: secrets.New(secretsmanager.NewFromConfig(env.AWS), time.Duration(ttl)*time.Second, now, stale),
		SQS:     sqs.NewFromConfig(env.AWS),
		S3:      s3.NewFromConfig(env.AWS, func(o *s3.Options) { o.UsePathStyle = true }),
		Now:     now, Log: env.Log, Metrics: emf.New(env.Stdout, now),
	}
	if cfg.ReplayTable != "" {
		d.Replay = dynamodb.NewFromConfig(env.AWS)
	}
	h := ingest.New(cfg, conn, d)
	return lambda.NewHandler(h.Handle), nil
}

// typeformConnector returns the Typeform connector with its mapping: the file at path when
// given, else the embedded config/typeform.yaml, validated against the embedded policy. An invalid
// mapping stops the function from starting (every problem with file:line), rather than mapping
// by the defaults alone.
func typeformConnector(path string) (connector.Connector, error) {
	pol, err := policy.Parse("config/policy.yaml", config.PolicyYAML)
	if err != nil {
		return nil, &wiring.ConfigError{Var: "CONNECTOR", Problem: "embedded policy: " + err.Error()}
	}
	var m *typeform.Mapping
	if path != "" {
		m, err = typeform.LoadMapping(path, pol)
	} else {
		m, err = typeform.ParseMapping(typeform.MappingFile, config.TypeformYAML, pol)
	}
	if err != nil {
		return nil, &wiring.ConfigError{Var: "TYPEFORM_MAPPING_FILE", Problem: err.Error()}
	}
	return typeform.NewWithMapping(m), nil
}
