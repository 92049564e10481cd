package app

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/crmchange"
	"github.com/crmsync/crmsync/shared/emf"
)

// CrmChanges builds the CRM changes function (POST /crm/changes): INGEST_QUEUE_URL, POLICY_PATH
// (empty = the policy embedded at build).
func CrmChanges(_ context.Context, env Env) (lambda.Handler, error) {
	vars, err := required(env.Getenv, "INGEST_QUEUE_URL")
	if err != nil {
		return nil, err
	}
	pol, err := LoadPolicy(env.Getenv("POLICY_PATH"))
	if err != nil {
		return nil, &ConfigError{Var: "POLICY_PATH", Problem: err.Error()}
	}
	h := crmchange.New(crmchange.Config{QueueURL: vars["INGEST_QUEUE_URL"], Policy: pol}, crmchange.Deps{
		SQS: sqs.NewFromConfig(env.AWS), Now: env.now(), Log: env.Log, Metrics: emf.New(env.Stdout, env.now()),
	})
	return lambda.NewHandler(h.Handle), nil
}
