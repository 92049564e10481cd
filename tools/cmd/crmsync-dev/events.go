package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/tools/samples"
)

func newEventsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Sample events: generate events/ and re-sign one file now"}
	cmd.AddCommand(newEventsGenerateCmd(), newEventsSignCmd())
	return cmd
}

func newEventsGenerateCmd() *cobra.Command {
	var dir, secrets, publicBase string
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Write the signed sample events under events/ from events/payloads",
		Long: `Generate writes, under --dir, one signed API Gateway (payload 2.0) webhook event per
connector (webhook-<connector>.json) built from <dir>/payloads, the Meta and Graph subscription
handshakes, the ingest queue's sample SQS batch (sqs-ingest-batch.json) and each reconcile job's
scheduled input (schedule-<job>.json). Deliveries are signed now with the dev-only secrets, for
the public base URL the local stack serves (sam local start-api or crmsync-dev dev). Calendly, Mailgun
and generic signatures expire within minutes: refresh one with "crmsync-dev events sign".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			secs, err := samples.DevSecrets(secrets)
			if err != nil {
				return err
			}
			if err := samples.Generate(dir, secs, publicBase, time.Now()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "sample events written to %s\n", dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "events", "events directory (raw vendor bodies are read from <dir>/payloads)")
	f.StringVar(&secrets, "secrets", "config/dev-secrets.json", "dev-only connector secrets to sign with")
	f.StringVar(&publicBase, "public-base-url", "http://127.0.0.1:3000", "public base URL the deliveries are signed for")
	return cmd
}

func newEventsSignCmd() *cobra.Command {
	var secrets string
	cmd := &cobra.Command{
		Use:   "sign <file>",
		Short: "Re-sign one webhook event file now and print it",
		Long: `Sign re-signs a webhook event file (events/webhook-<connector>.json) at the current time
with the dev-only secrets and prints it to stdout, so timestamped signatures verify again:

  sam local invoke CalendlyWebhookFunction -e <(crmsync-dev events sign events/webhook-calendly.json)

The file itself is not changed. Handshake events only get the new request time.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			secs, err := samples.DevSecrets(secrets)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var ev events.APIGatewayV2HTTPRequest
			if err := json.Unmarshal(data, &ev); err != nil {
				return fmt.Errorf("%s: not an API Gateway HTTP API event: %w", args[0], err)
			}
			if _, err := samples.Refresh(&ev, secs, time.Now()); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			out, err := samples.MarshalEvent(ev)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
			return err
		},
	}
	cmd.Flags().StringVar(&secrets, "secrets", "config/dev-secrets.json", "dev-only connector secrets to sign with")
	return cmd
}
