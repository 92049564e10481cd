// Package crmchanges owns how the CRM changes function (POST /crm/changes) is wired from its
// environment: the policy and the ingest queue's SQS client. Nothing here calls AWS.
package crmchanges

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/crmchange"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/wiring"
)

// Build builds the CRM changes function: INGEST_QUEUE_URL, POLICY_PATH (empty = the policy
// embedded at build).
func Build(_ context.Context, env wiring.Env) (lambda.Handler, error) {
	vars, err := wiring.Required(env.Getenv, "INGEST_QUEUE_URL")
	if err != nil {
		return nil, err
	}
	pol, err := wiring.PolicyFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	now := env.Clock()
	h := crmchange.New(crmchange.Config{QueueURL: vars["INGEST_QUEUE_URL"], Policy: pol}, crmchange.Deps{
		SQS: sqs.NewFromConfig(env.AWS), Now: now, Log: env.Log, Metrics: emf.New(env.Stdout, now),
	})
	return lambda.NewHandler(h.Handle), nil
}
