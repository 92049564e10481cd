package app

import (
	"context"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/crmsync/crmsync/shared/canonical"
)

// Worker builds the worker function. (Transitional: validates each message until the worker
// package's exactly-once application is wired in.)
func Worker(_ context.Context, env Env) (lambda.Handler, error) {
	if _, err := required(env.Getenv, "LEDGER_TABLE", "CRM_TABLE"); err != nil {
		return nil, err
	}
	return lambda.NewHandler(func(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
		for _, r := range ev.Records {
			if _, err := canonical.Unmarshal([]byte(r.Body)); err != nil {
				env.Log.WarnContext(ctx, "invalid message", "message_id", r.MessageId, "error", err.Error())
			}
		}
		return events.SQSEventResponse{}, nil
	}), nil
}
