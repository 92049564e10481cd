package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/wiring"
	wiredworker "github.com/crmsync/crmsync/shared/wiring/worker"
	"github.com/crmsync/crmsync/shared/worker"
)

// workerFor builds the worker against a resolved stack, exactly as the worker function is built,
// for the commands that read or re-apply ledger events (replay, rebuild, explain).
func workerFor(ref *stackRef) (*worker.Worker, error) {
	if err := ref.require("LedgerTable", "CrmTable"); err != nil {
		return nil, err
	}
	env := map[string]string{"LEDGER_TABLE": ref.LedgerTable, "CRM_TABLE": ref.CrmTable, "POLICY_PATH": os.Getenv("CRMSYNC_POLICY_PATH")}
	return wiredworker.New(wiring.Env{Getenv: func(k string) string { return env[k] }, AWS: ref.AWS,
		Log: slog.New(slog.DiscardHandler), Stdout: io.Discard})
}

// operator names who runs a forced operation: --by, else $CRMSYNC_OPERATOR, else the OS user.
func operator(by string) string {
	if by != "" {
		return by
	}
	if v := os.Getenv("CRMSYNC_OPERATOR"); v != "" {
		return v
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ledgerEntry is the JSON shape of `events get` and `events list`.
type ledgerEntry struct {
	Key            string        `json:"key"`
	Source         string        `json:"source"`
	Outcome        string        `json:"outcome"`
	Reason         string        `json:"reason,omitempty"`
	Attempts       int           `json:"attempts"`
	OccurredAt     string        `json:"occurred_at,omitempty"`
	RecordedAt     string        `json:"recorded_at"`
	PolicyVersion  string        `json:"policy_version,omitempty"`
	MappingVersion string        `json:"mapping_version,omitempty"`
	ContactID      string        `json:"contact_id,omitempty"`
	ActivityID     string        `json:"activity_id,omitempty"`
	Flagged        bool          `json:"flagged,omitempty"`
	Reruns         []store.Rerun `json:"reruns,omitempty"`
	// Redeliveries are deliveries after the dedup window, re-decided beside the kept outcome.
	Redeliveries []store.Redelivery `json:"redeliveries,omitempty"`
	Unmapped     []string           `json:"unmapped,omitempty"`
}

func entryOf(it store.LedgerItem) ledgerEntry {
	return ledgerEntry{Key: it.Key, Source: it.Source, Outcome: it.Outcome, Reason: it.Reason, Attempts: it.Attempts,
		OccurredAt: it.OccurredAt, RecordedAt: it.RecordedAt, PolicyVersion: it.PolicyVersion, MappingVersion: it.MappingVersion,
		ContactID: it.ContactID, ActivityID: it.ActivityID, Flagged: it.Flagged, Reruns: it.Reruns, Redeliveries: it.Redeliveries,
		Unmapped: it.Unmapped}
}

func printEntries(w io.Writer, es []ledgerEntry) {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSOURCE\tOUTCOME\tATTEMPTS\tRECORDED\tREASON")
	for _, e := range es {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.Key, e.Source, e.Outcome, e.Attempts, e.RecordedAt, e.Reason)
	}
	_ = tw.Flush()
}

func newEventsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "events", Short: "Ledger events: one by key, or listed by source, outcome and time"}
	cmd.AddCommand(newEventsGetCmd(), newEventsListCmd())
	return cmd
}

func newEventsGetCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get <key>",
		Short: "Show one ledger entry: outcome, reason, attempts, versions, forced re-runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			it, err := getLedger(cmd, ref, args[0])
			if err != nil {
				return err
			}
			e := entryOf(*it)
			if asJSON {
				return printJSON(cmd.OutOrStdout(), e)
			}
			printEntries(cmd.OutOrStdout(), []ledgerEntry{e})
			for _, r := range e.Reruns {
				fmt.Fprintf(cmd.OutOrStdout(), "forced re-run by %s at %s: %s\n", r.By, r.At, r.Why)
			}
			for _, r := range e.Redeliveries {
				fmt.Fprintf(cmd.OutOrStdout(), "redelivered after its dedup window at %s: re-decided %s (outcome above kept)\n", r.At, r.Outcome)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: {key, source, outcome, reason, attempts, occurred_at, recorded_at, policy_version, mapping_version, contact_id, activity_id, flagged, reruns, redeliveries, unmapped}")
	return cmd
}

func getLedger(cmd *cobra.Command, ref *stackRef, key string) (*store.LedgerItem, error) {
	if err := ref.require("LedgerTable"); err != nil {
		return nil, err
	}
	out, err := dynamodb.NewFromConfig(ref.AWS).GetItem(cmd.Context(), &dynamodb.GetItemInput{TableName: aws.String(ref.LedgerTable),
		Key: map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: key}}, ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if out.Item == nil {
		return nil, fmt.Errorf("no ledger entry for %q", key)
	}
	var it store.LedgerItem
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return &it, nil
}

func newEventsListCmd() *cobra.Command {
	var source, outcome, since string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List ledger entries by source, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			from := time.Now().Add(-24 * time.Hour)
			if since != "" {
				if from, err = parseSince(since, time.Now()); err != nil {
					return err
				}
			}
			sources := registry.Names()
			if source != "" {
				sources = []string{source}
			} else {
				sources = append(sources, "crm", "reconcile")
			}
			var all []ledgerEntry
			for _, src := range sources {
				items, err := ledgerBySource(cmd, ref, src, from, strings.ToUpper(outcome))
				if err != nil {
					return err
				}
				for _, it := range items {
					all = append(all, entryOf(it))
				}
			}
			sort.Slice(all, func(i, j int) bool { return all[i].RecordedAt > all[j].RecordedAt })
			if limit > 0 && len(all) > limit {
				all = all[:limit]
			}
			if asJSON {
				if all == nil {
					all = []ledgerEntry{}
				}
				return printJSON(cmd.OutOrStdout(), all)
			}
			printEntries(cmd.OutOrStdout(), all)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&source, "source", "", "only this source (twilio, calendly, ..., crm, reconcile)")
	f.StringVar(&outcome, "outcome", "", "only this outcome (APPLIED, NOOP, REJECTED, QUARANTINED)")
	f.StringVar(&since, "since", "24h", "recorded since: a duration ago (90m, 24h, 7d) or an RFC 3339 time")
	f.IntVar(&limit, "limit", 100, "at most this many entries (0 = all)")
	f.BoolVar(&asJSON, "json", false, "print a JSON array of entries (the shape of `events get --json`)")
	return cmd
}

// ledgerBySource queries the ledger's BySource index for entries recorded since from.
func ledgerBySource(cmd *cobra.Command, ref *stackRef, source string, from time.Time, outcome string) ([]store.LedgerItem, error) {
	if err := ref.require("LedgerTable"); err != nil {
		return nil, err
	}
	kc := expression.Key("source").Equal(expression.Value(source)).And(expression.Key("recorded_at").GreaterThanEqual(expression.Value(store.FormatTime(from))))
	b := expression.NewBuilder().WithKeyCondition(kc)
	if outcome != "" {
		b = b.WithFilter(expression.Name("outcome").Equal(expression.Value(outcome)))
	}
	expr, err := b.Build()
	if err != nil {
		return nil, err
	}
	p := dynamodb.NewQueryPaginator(dynamodb.NewFromConfig(ref.AWS), &dynamodb.QueryInput{TableName: aws.String(ref.LedgerTable),
		IndexName: aws.String(store.IndexBySource), KeyConditionExpression: expr.KeyCondition(), FilterExpression: expr.Filter(),
		ExpressionAttributeNames: expr.Names(), ExpressionAttributeValues: expr.Values(), ScanIndexForward: aws.Bool(false)})
	var out []store.LedgerItem
	for p.HasMorePages() {
		page, err := p.NextPage(cmd.Context())
		if err != nil {
			return nil, fmt.Errorf("query ledger for %s: %w", source, err)
		}
		var items []store.LedgerItem
		if err := attributevalue.UnmarshalListOfMaps(page.Items, &items); err != nil {
			return nil, err
		}
		out = append(out, items...)
	}
	return out, nil
}

// parseSince reads "90m", "24h", "7d" (ago) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if strings.HasSuffix(s, "d") {
		var n int
		if _, err := fmt.Sscanf(s, "%dd", &n); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration ago (90m, 24h, 7d) or an RFC 3339 time", s)
}

func newReplayCmd() *cobra.Command {
	var reason, by string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "replay <key>...",
		Short: "Force a re-run of applied events, recorded in the ledger and audit with who and why",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return fmt.Errorf("--reason is required: say why these events are re-run")
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			w, err := workerFor(ref)
			if err != nil {
				return err
			}
			who := operator(by)
			var results []worker.Result
			bar := newProgress(cmd, "replay", len(args), asJSON || len(args) < 2)
			for _, key := range args {
				res, err := w.Replay(cmd.Context(), key, who, reason)
				if err != nil {
					bar.Finish()
					return fmt.Errorf("replay %s: %w", key, err)
				}
				results = append(results, res)
				bar.Add(1)
			}
			bar.Finish()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), results)
			}
			for _, r := range results {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s %s (by %s: %s)\n", r.Key, r.Outcome, r.Reason, who, reason)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required; stored in the ledger and audit)")
	cmd.Flags().StringVar(&by, "by", "", "who runs it (default $CRMSYNC_OPERATOR or the OS user)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	return cmd
}
