// Package fnbuild owns, for the development tooling, which crmsync binary serves each template
// function (its kind) and building that function's handler in process exactly as its main does
// (through shared/wiring/<kind>): the local stack, the reliability suite and the benchmarks run
// the real functions this way.
package fnbuild

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/crmsync/crmsync/shared/wiring"
	"github.com/crmsync/crmsync/shared/wiring/crmchanges"
	"github.com/crmsync/crmsync/shared/wiring/graphsubs"
	"github.com/crmsync/crmsync/shared/wiring/reconcile"
	"github.com/crmsync/crmsync/shared/wiring/webhook"
	"github.com/crmsync/crmsync/shared/wiring/worker"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// Kind says which of crmsync's function binaries a template function runs.
type Kind string

// The function kinds, one binary each under functions/.
const (
	KindWebhook    Kind = "webhook"
	KindWorker     Kind = "worker"
	KindReconcile  Kind = "reconcile"
	KindCrmChanges Kind = "crmchanges"
	KindGraphSubs  Kind = "graphsubs"
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
	case logicalID == "GraphSubscriptionsFunction":
		return KindGraphSubs, true
	case strings.HasPrefix(logicalID, "Reconcile") && strings.HasSuffix(logicalID, "Function"):
		return KindReconcile, true
	}
	return "", false
}

// Build returns the handler for a template function, built by its kind's wiring exactly
// as the function's main builds it in Lambda.
func Build(ctx context.Context, logicalID string, env wiring.Env) (lambda.Handler, error) {
	k, ok := KindOf(logicalID)
	if !ok {
		return nil, fmt.Errorf("function %s: no crmsync binary serves it", logicalID)
	}
	switch k {
	case KindWebhook:
		return webhook.Build(ctx, env)
	case KindWorker:
		return worker.Build(ctx, env)
	case KindCrmChanges:
		return crmchanges.Build(ctx, env)
	case KindGraphSubs:
		return graphsubs.Build(ctx, env)
	default:
		return reconcile.Build(ctx, env)
	}
}

// Factory is the local stack's factory for every template function: Build with the environment
// the local stack gives it.
func Factory(ctx context.Context, fn samtemplate.Function, env localcloud.FunctionEnv) (lambda.Handler, error) {
	return Build(ctx, fn.LogicalID, wiring.Env{Getenv: env.Getenv, AWS: env.AWS, Log: env.Log, Stdout: env.Stdout})
}
