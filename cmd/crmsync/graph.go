package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/graphsub"
)

// graphFunction is the Graph subscription manager's logical id (template.yaml).
const graphFunction = "GraphSubscriptionsFunction"

// newGraphCmd is `crmsync graph`: the Microsoft Graph subscriptions the manager keeps.
func newGraphCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "graph", Short: "Microsoft Graph: the mail and calendar subscriptions crmsync keeps"}
	var asJSON bool
	subs := &cobra.Command{
		Use:   "subscriptions",
		Short: "List the Graph subscriptions (mailbox, resource, id, expiry, status, pending lifecycle requests)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			table, err := graphTable(ref)
			if err != nil {
				return err
			}
			states, err := graphsub.ListStates(cmd.Context(), dynamodb.NewFromConfig(ref.AWS), table)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), states)
			}
			printGraphStates(cmd.OutOrStdout(), states, time.Now())
			return nil
		},
	}
	subs.Flags().BoolVar(&asJSON, "json", false, "print [{pk, mailbox, resource, subscription_id, expires_at, status, last_error, ...}]")
	subs.AddCommand(newGraphEnsureCmd())
	cmd.AddCommand(subs)
	return cmd
}

func newGraphEnsureCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ensure",
		Short: "Run the Graph subscription manager now, as its schedule would (create, renew, reauthorize, recreate, resync)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			out, err := invokeGraphManager(cmd.Context(), ref)
			if err != nil {
				return err
			}
			var rep graphsub.Report
			if err := json.Unmarshal(out, &rep); err != nil {
				return fmt.Errorf("%s answered %s: not a run report", graphFunction, bytes.TrimSpace(out))
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			printGraphReport(cmd.OutOrStdout(), rep)
			if rep.Errors > 0 {
				return fmt.Errorf("%d subscription(s) failed: see `crmsync graph subscriptions`", rep.Errors)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the run's report {run_at, subscriptions: [{key, actions, subscription_id, expires_at, status, at_risk, error}], ...}")
	return cmd
}

// graphTable is the subscriptions table of the stack.
func graphTable(ref *stackRef) (string, error) {
	if v := ref.Outputs["GraphSubscriptionTableName"]; v != "" {
		return v, nil
	}
	if r := ref.Resources["GraphSubscriptionTable"]; r.Ref != "" {
		return r.Ref, nil
	}
	return "", fmt.Errorf("stack %s has no GraphSubscriptionTable (deploy a template with the Graph subscriptions function)", ref.Name)
}

// invokeGraphManager runs the manager function once with its schedule's input: locally through
// the local stack's schedule endpoint, in AWS with a synchronous Lambda invoke (its own role).
func invokeGraphManager(ctx context.Context, ref *stackRef) ([]byte, error) {
	if ref.Local {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, ref.APIBase+"/_local/schedules/"+graphFunction, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("local stack: run %s: %w", graphFunction, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("local stack: run %s: %s: %s", graphFunction, resp.Status, bytes.TrimSpace(body))
		}
		return body, nil
	}
	name, err := ref.Function(graphFunction)
	if err != nil {
		return nil, err
	}
	out, err := lambda.NewFromConfig(ref.AWS).Invoke(ctx, &lambda.InvokeInput{FunctionName: aws.String(name), Payload: []byte(`{"action":"ensure"}`)})
	if err != nil {
		return nil, fmt.Errorf("invoke %s: %w", name, err)
	}
	if out.FunctionError != nil {
		return nil, fmt.Errorf("%s failed (%s): %s", name, aws.ToString(out.FunctionError), bytes.TrimSpace(out.Payload))
	}
	return out.Payload, nil
}

func printGraphStates(w io.Writer, states []graphsub.State, now time.Time) {
	if len(states) == 0 {
		fmt.Fprintln(w, "no Graph subscriptions (set the GraphMailboxes parameter, then `crmsync graph subscriptions ensure`)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "MAILBOX/RESOURCE\tSUBSCRIPTION\tEXPIRES\tLEFT\tSTATUS\tPENDING\tLAST ERROR")
	for _, s := range states {
		left := "-"
		if exp := s.Expiry(); !exp.IsZero() {
			left = exp.Sub(now).Round(time.Minute).String()
		}
		pending := ""
		for _, p := range []struct{ name, v string }{{"reauthorize", s.ReauthorizeRequested}, {"recreate", s.RecreateRequested}, {"resync since " + s.ResyncSince, s.ResyncSince}} {
			if p.v != "" {
				pending += p.name + " "
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.PK, graphDash(s.SubscriptionID), graphDash(s.ExpiresAt), left, s.Status, graphDash(pending), graphDash(s.LastError))
	}
	_ = tw.Flush()
}

func printGraphReport(w io.Writer, rep graphsub.Report) {
	fmt.Fprintf(w, "graph subscriptions run %s: %d kept, %d at risk, %d resync events enqueued, %d errors\n",
		rep.RunAt.Format(time.RFC3339), len(rep.Subscriptions), rep.AtRisk, rep.Resynced, rep.Errors)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	for _, o := range rep.Subscriptions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", o.Key, o.Actions, graphDash(o.SubscriptionID), graphDash(o.ExpiresAt), o.Status, graphDash(o.Error))
	}
	_ = tw.Flush()
}

func graphDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
