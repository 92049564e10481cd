// Package crmchanges owns how the CRM changes function (POST /crm/changes) is wired from its
// environment: the policy and the ingest queue's SQS client. Nothing here calls AWS.
package crmchanges

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/config"
	"github.com/crmsync/crmsync/shared/crmchange"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/wiring"
)

// Build builds the CRM changes function: INGEST_QUEUE_URL, POLICY_PATH (empty = the policy
// embedded at build), CRM_ROLES_PATH (empty = config/crm-roles.yaml embedded at build), CRM_TABLE
// (whose identity items group every CRM edit of a contact in that contact's FIFO group).
func Build(_ context.Context, env wiring.Env) (lambda.Handler, error) {
	vars, err := wiring.Required(env.Getenv, "INGEST_QUEUE_URL")
	if err != nil {
		return nil, err
	}
	pol, err := wiring.PolicyFromEnv(env.Getenv)
	if err != nil {
		return nil, err
	}
	principals, err := loadPrincipals(env.Getenv("CRM_ROLES_PATH"))
	if err != nil {
		return nil, &wiring.ConfigError{Var: "CRM_ROLES_PATH", Problem: err.Error()}
	}
	now := env.Clock()
	cfg := crmchange.Config{QueueURL: vars["INGEST_QUEUE_URL"], Policy: pol, Principals: principals, CRMTable: env.Getenv("CRM_TABLE")}
	d := crmchange.Deps{SQS: sqs.NewFromConfig(env.AWS), Now: now, Log: env.Log, Metrics: emf.New(env.Stdout, now)}
	if cfg.CRMTable != "" {
		d.Identities = dynamodb.NewFromConfig(env.AWS)
	}
	h := crmchange.New(cfg, d)
	return lambda.NewHandler(h.Handle), nil
}

// loadPrincipals returns the roles file at path, or the one embedded at build when path is empty.
func loadPrincipals(path string) (*crmchange.Principals, error) {
	if path == "" {
		return crmchange.ParsePrincipals("config/crm-roles.yaml (embedded)", config.CrmRolesYAML)
	}
	return crmchange.LoadPrincipals(path)
}
