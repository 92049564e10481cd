// Command crmchanges is crmsync's CRM changes Lambda function (POST /crm/changes): it loads its
// configuration once, builds its clients once, wires the handler and starts the Lambda runtime
// loop.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/crmsync/crmsync/shared/app"
	"github.com/crmsync/crmsync/shared/awsclient"
)

func main() {
	ctx := context.Background()
	log := lambdacontext.NewLogger()
	cfg, err := awsclient.FromEnv(ctx, os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crmchanges: "+err.Error())
		os.Exit(1)
	}
	h, err := app.CrmChanges(ctx, app.Env{Getenv: os.Getenv, AWS: cfg, Log: log, Stdout: os.Stdout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crmchanges: "+err.Error())
		os.Exit(1)
	}
	lambda.Start(h)
}
