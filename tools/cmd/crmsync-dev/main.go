// Command crmsync-dev is crmsync's developer tool: `crmsync-dev dev` runs the whole pipeline on
// one machine (make dev), `bench` measures it (make bench), `reliability` proves it under faults
// (make reliability) and `events` writes and re-signs the sample events. It links the development
// tooling under tools/; the operations tool (cmd/crmsync) and the deployed functions never do.
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
		fmt.Fprintln(os.Stderr, "crmsync-dev:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "crmsync-dev",
		Short:         "Develop crmsync: the local stack, sample events, benchmarks and the reliability suite",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDevCmd(), newEventsCmd(), newBenchCmd(), newReliabilityCmd())
	return root
}

// envOr returns the environment variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
