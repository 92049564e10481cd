// Command crmsync is crmsync's operations tool: its commands inspect and repair a deployed or local
// stack. It links no development tooling (the local stack, benchmarks, the reliability suite):
// those are the developer tool's, tools/cmd/crmsync-dev.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "crmsync:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "crmsync",
		Short:         "Operate crmsync: inspect and repair the sync pipeline, deployed or local",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addStackFlags(root.PersistentFlags())
	root.AddCommand(newPolicyCmd(), newEventsCmd(), newContactCmd(), newCrmCmd())
	// Operations against a running stack (local or AWS).
	root.AddCommand(newReplayCmd(), newRebuildCmd(), newExplainCmd(), newQuarantineCmd())
	root.AddCommand(newStatusCmd(), newDLQCmd(), newReconcileCmd(), newBackfillCmd())
	root.AddCommand(newGraphCmd(), newMigrateCmd())
	// Connecting vendors: URLs, steps, secrets, and why a delivery was refused.
	root.AddCommand(newConnectCmd(), newSecretsCmd(), newVerifyCmd())
	return root
}

// envOr returns the environment variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
