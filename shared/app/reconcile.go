package app

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/reconcile"
)

// Reconcile builds a reconcile function: JOB, INGEST_QUEUE_URL, DLQ_URL, QUARANTINE_BUCKET.
func Reconcile(_ context.Context, env Env) (lambda.Handler, error) {
	vars, err := required(env.Getenv, "JOB", "DLQ_URL", "QUARANTINE_BUCKET")
	if err != nil {
		return nil, err
	}
	cfg := reconcile.Config{Job: vars["JOB"], QueueURL: env.Getenv("INGEST_QUEUE_URL"), DLQURL: vars["DLQ_URL"], Bucket: vars["QUARANTINE_BUCKET"]}
	r := reconcile.New(cfg, sqs.NewFromConfig(env.AWS), s3.NewFromConfig(env.AWS, func(o *s3.Options) { o.UsePathStyle = true }),
		env.now(), env.Log, emf.New(env.Stdout, env.now()))
	return lambda.NewHandler(r.Handle), nil
}
