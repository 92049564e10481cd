package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
)

// devOptions are the local stack's settings, each with its environment variable.
type devOptions struct {
	template, endpoint, addr, publicBase, secrets, fixtures, stack string
}

func (o *devOptions) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.template, "template", "template.yaml", "SAM template to provision and serve")
	f.StringVar(&o.endpoint, "endpoint", envOr(awsclient.EndpointEnv, awsclient.DefaultLocalEndpoint), "AWS endpoint (moto); started there if nothing answers ($"+awsclient.EndpointEnv+")")
	f.StringVar(&o.addr, "addr", envOr("CRMSYNC_HTTP_ADDR", "127.0.0.1:3000"), "address of the local HTTP API ($CRMSYNC_HTTP_ADDR)")
	f.StringVar(&o.publicBase, "public-base-url", os.Getenv("CRMSYNC_PUBLIC_BASE_URL"), "public base URL vendors sign against (default http://<addr>) ($CRMSYNC_PUBLIC_BASE_URL)")
	f.StringVar(&o.secrets, "secrets", "config/dev-secrets.json", "dev-only connector secrets to seed")
	f.StringVar(&o.fixtures, "fixtures", envOr("CRMSYNC_VENDOR_FIXTURES", "events/vendor"), "fixtures the vendor API fakes serve ($CRMSYNC_VENDOR_FIXTURES)")
	f.StringVar(&o.stack, "stack", "crmsync-local", "local stack name (prefixes resource names)")
}

func startDev(ctx context.Context, o devOptions, out io.Writer) (*localcloud.Dev, error) {
	return localcloud.Start(ctx, localcloud.Config{
		TemplatePath: o.template, Endpoint: o.endpoint, HTTPAddr: o.addr, PublicBaseURL: o.publicBase,
		DevSecretsPath: o.secrets, FixturesDir: o.fixtures, StackName: o.stack, Factory: fnbuild.Factory, Out: out,
		SerializeDynamoDB: true,
	})
}

func newDevCmd() *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole pipeline locally from template.yaml, in the foreground until Ctrl-C",
		Long: `Run crmsync on this machine: AWS APIs from moto (started if nothing answers at the endpoint),
every table, queue, secret and bucket in template.yaml provisioned, the HTTP API served as API
Gateway HTTP API payload 2.0 events, the worker's SQS event source mapping and the schedules run,
and the vendor APIs faked from fixtures. Ctrl-C stops everything it started.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := startDev(cmd.Context(), o, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			defer d.Close()
			fmt.Fprintf(cmd.ErrOrStderr(), "crmsync local stack up: HTTP API on http://%s, AWS endpoint %s. Ctrl-C to stop.\n", d.Addr, d.Endpoint)
			<-cmd.Context().Done()
			fmt.Fprintln(cmd.ErrOrStderr(), "crmsync: shutting down")
			return nil
		},
	}
	o.flags(cmd)
	return cmd
}
