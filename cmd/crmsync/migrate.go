package main

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/migrate"
)

func newMigrateCmd() *cobra.Command {
	var apply, asJSON bool
	var from string
	var maxPages int
	cmd := &cobra.Command{
		Use:   "migrate [--apply] [--from TOKEN] [--max-pages N]",
		Short: "Bring ledger items an earlier crmsync wrote up to today's data model (a dry run unless --apply)",
		Long: "Runs the one-shot migrations of shared/migrate against the stack's tables. Today it has one step,\n" +
			migrate.StepForeverTTL + ": ledger items of sources whose dedup window is forever lose the 400-day TTL\n" +
			"(expires_at) that crmsync gave every ledger item before data model v2, so those sources keep\n" +
			"deduplicating after 400 days. Without --apply it only counts. It is idempotent: run it again and it finds\n" +
			"nothing. With --max-pages it stops early and prints the token to continue with --from.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if maxPages < 0 {
				return fmt.Errorf("--max-pages %d: must be 0 (to the end) or more", maxPages)
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			if err := ref.require("LedgerTable"); err != nil {
				return err
			}
			rep, runErr := migrate.ForeverTTL(cmd.Context(), dynamodb.NewFromConfig(ref.AWS),
				migrate.Options{LedgerTable: ref.LedgerTable, Apply: apply, From: from, MaxPages: maxPages})
			if asJSON && rep != nil {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else if rep != nil {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "%s: scanned %d ledger items, %d to change", rep.Step, rep.Scanned, rep.Matched)
				if rep.DryRun {
					fmt.Fprintln(out, " (dry run: nothing written; run again with --apply)")
				} else {
					fmt.Fprintf(out, "; changed %d, skipped %d (changed by another writer meanwhile)\n", rep.Changed, rep.Skipped)
				}
				for _, key := range rep.Examples {
					fmt.Fprintf(out, "  e.g. %s\n", key)
				}
				if rep.Next != "" {
					fmt.Fprintf(out, "not finished: continue with --from %q\n", rep.Next)
				}
			}
			if runErr != nil {
				return fmt.Errorf("migrate: %w", runErr)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&apply, "apply", false, "write the changes (default: a dry run that only counts)")
	cmd.Flags().StringVar(&from, "from", "", "continue a run that stopped early, from the token it printed")
	cmd.Flags().IntVar(&maxPages, "max-pages", 0, "stop after this many scan pages (0: to the end)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: {step, dry_run, scanned, matched, changed, skipped, examples, next}")
	return cmd
}
