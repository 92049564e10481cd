package wiring

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/crmsync/crmsync/shared/awsclient"
)

// Builder builds one kind of function's handler from its environment (webhook.Build, ...).
type Builder func(context.Context, Env) (lambda.Handler, error)

// Main is the whole body of a function's main: it loads the configuration once (the process
// environment and the AWS configuration Lambda provides, without calling AWS), builds the handler and its
// clients once, and starts the Lambda runtime loop. A configuration error is printed with the
// variable it concerns and the process exits 1, which Lambda reports as an init error.
func Main(name string, build Builder) {
	ctx := context.Background()
	cfg, err := awsclient.ForLambda()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+": "+err.Error())
		os.Exit(1)
	}
	h, err := build(ctx, Env{Getenv: os.Getenv, AWS: cfg, Log: lambdacontext.NewLogger(), Stdout: os.Stdout})
	if err != nil {
		fmt.Fprintln(os.Stderr, name+": "+err.Error())
		os.Exit(1)
	}
	lambda.Start(h)
}
