package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/tools/reliability"
)

// newReliabilityCmd is `crmsync-dev reliability`: the reliability suite (tools/reliability) in full.
func newReliabilityCmd() *cobra.Command {
	o := reliability.Options{}
	var doc, fnLog string
	var short bool
	seeds := 1
	cmd := &cobra.Command{
		Use:   "reliability",
		Short: "Run the reliability suite: load, duplicates, reordering, AWS faults and crashes, judged by an oracle",
		Long: `Run the whole pipeline on a fresh local stack with the functions' AWS traffic going through a
fault-injecting proxy (throttles, 500s, timeouts, transaction conflicts, before and after the
request reaches moto), the worker crashing after its transaction but before its batch response,
and SQS refusing some of the webhooks' sends (the vendor retries). A load generator posts N events
about P people from every connector, signed as each vendor signs them, with duplicates (some
re-sent after the SQS deduplication window, straight to the queue) and deliveries out of order.
Once the queue drains, the ledger and CRM are compared with an independent oracle.

Overlapping DynamoDB writes conflict as in DynamoDB (--no-contention to let them pass) and
Queries of indexes see them --index-lag behind their table.

The verdict counts what was lost, what was applied twice and what differs from the oracle, and
judges each webhook's answers apart from the harness's own late re-sends; the command fails unless
the verdict passes (docs/reliability.md, "The counts"). --doc writes the table into
docs/reliability.md: a full run's verdict, or with --short (the shortened run's profile) and
--seeds N one row per seed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			o.Log = out
			if o.IndexLag == 0 {
				o.IndexLag = -1 // --index-lag 0: none (Options take 0 for the default)
			}
			if fnLog != "" {
				f, err := os.Create(fnLog)
				if err != nil {
					return err
				}
				defer f.Close()
				o.FunctionLog = f
			} else {
				o.FunctionLog = io.Discard
			}
			if short {
				base := reliability.ShortOptions(o.Root, o.Seed)
				base.Log, base.FunctionLog, base.Endpoint, base.HistoryPath = o.Log, o.FunctionLog, o.Endpoint, o.HistoryPath
				o = base
			}
			if seeds < 1 {
				return errors.New("--seeds must be at least 1")
			}
			var verdicts []*reliability.Verdict
			failed := 0
			first := o.Seed
			for i := range seeds {
				o.Seed = first + uint64(i)
				if seeds > 1 {
					fmt.Fprintf(out, "\n== seed %d (%d of %d)\n", o.Seed, i+1, seeds)
				}
				v, err := reliability.Run(cmd.Context(), o)
				if err != nil {
					return fmt.Errorf("seed %d: %w", o.Seed, err)
				}
				fmt.Fprintln(out)
				fmt.Fprint(out, v.Report())
				verdicts = append(verdicts, v)
				if !v.Pass() {
					failed++
				}
			}
			if doc != "" {
				write := func() error { return reliability.UpdateDoc(doc, verdicts[0], time.Now()) }
				if short || seeds > 1 {
					write = func() error { return reliability.UpdateSeedsDoc(doc, verdicts, time.Now()) }
				}
				if err := write(); err != nil {
					return err
				}
				fmt.Fprintf(out, "\nwrote the verdict to %s\n", doc)
			}
			if failed > 0 {
				return fmt.Errorf("reliability: %d of %d runs failed (last: %s)", failed, len(verdicts), verdicts[len(verdicts)-1].Summary())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Root, "root", ".", "repository root (template.yaml, config/, events/vendor)")
	f.IntVar(&o.Events, "events", 10000, "unique vendor events to send")
	f.IntVar(&o.People, "people", 1000, "people the events are about")
	f.IntVar(&o.Concurrency, "concurrency", 16, "deliveries in flight at once")
	f.Float64Var(&o.DupRate, "dup-rate", 0.3, "duplicate deliveries, as a share of unique events")
	f.Float64Var(&o.LateShare, "late-share", 1.0/3, "share of duplicates re-sent after the SQS deduplication window")
	f.Float64Var(&o.ReorderRate, "reorder-rate", 0.2, "share of events delivered before an earlier event of the same person")
	f.StringVar(&o.Faults, "faults", reliability.DefaultFaults, "AWS faults: kind[/phase]=rate[@api|api],... (kinds throttle, server-error, timeout, conflict, partial, all; phases before, after; 'none')")
	f.DurationVar(&o.IndexLag, "index-lag", 300*time.Millisecond, "how far behind its table a Query of an index sees it (the patched moto's index lag; 0 for none)")
	f.IntVar(&o.Poison, "poison", 10, "poison events: thin events whose vendor object answers 503 until the run fixes it, enqueued in live FIFO groups; dead-lettered, then redriven")
	f.Float64Var(&o.VendorFaults, "vendor-faults", 0.03, "share of hydration reads (Graph, Meta) the vendor fakes fail: server errors, rate limits with Retry-After, no answer")
	f.BoolVar(&o.NoContention, "no-contention", false, "let overlapping DynamoDB writes pass (by default they conflict as in DynamoDB, and the run fails without any)")
	f.BoolVar(&o.SQSRefusal, "sqs-refusal", true, "also make SQS refuse the webhooks' sends often enough that some answer 5xx and the vendor retries")
	f.Float64Var(&o.CrashRate, "crash-rate", 0.02, "share of worker invocations killed after their transactions, before their batch response")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of the load, the faults and the crashes")
	f.IntVar(&o.Pollers, "pollers", 6, "event source mapping pollers")
	f.DurationVar(&o.Visibility, "visibility", 30*time.Second, "ingest queue visibility timeout for the run (a crashed batch reappears after it)")
	f.DurationVar(&o.Hold, "hold", 2*time.Second, "how long a timeout fault holds a request before dropping the connection")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", 10*time.Minute, "how long to wait for the queue to drain after sending")
	f.StringVar(&o.Endpoint, "aws-endpoint", "", "AWS endpoint to use (default: start the suite's patched moto on a free port)")
	f.StringVar(&doc, "doc", "", "Markdown file whose generated section receives the verdict (e.g. docs/reliability.md)")
	f.StringVar(&o.HistoryPath, "history", "", "write the history of profile reads and writes here (JSON lines; default: a file in the temporary directory)")
	f.BoolVar(&short, "short", false, "the shortened run's profile (TestReliabilityShort's: 1,000 events, higher fault rates, 3 poison events); only --seed, --seeds, --root, --aws-endpoint, --doc and --function-log apply")
	f.IntVar(&seeds, "seeds", 1, "runs, with seeds --seed, --seed+1, ...; with --short or more than one, --doc writes the seeds table")
	f.StringVar(&fnLog, "function-log", "", "write the functions' JSON logs to this file")
	return cmd
}
