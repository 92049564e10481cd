package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/crmsync/crmsync/tools/moto"
)

// benchOptions are `crmsync-dev bench`'s settings.
type benchOptions struct {
	repo, out, goBench, dist, rie, logFile string
	endpoint                               string
	persons, e2ePersons, concurrency       int
	coldRuns                               int
	skipLoad, skipCold                     bool
}

func newBenchCmd() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure crmsync on the local stack and write docs/benchmarks.md (what `make bench` runs)",
		Long: `Measure what an event costs and how fast the pipeline is, on this machine:

  - exact per-event AWS usage (requests by service and API, DynamoDB read and write units, SQS
    requests as billed) for applied, no-op and duplicate events, counted by an SDK middleware on
    every client of the local stack;
  - throughput and webhook latency of a typical mix of connectors posted over HTTP at a fixed
    concurrency, and what that mix costs per million events at published us-east-1 prices;
  - each function's bootstrap size (--dist, as deployed: arm64) and init time under
    aws-lambda-rie, with a count of AWS requests made before the first invocation;
  - the Go benchmarks' results (--go-bench: the output of go test -bench -benchmem).

The report is written to --out with the machine, the Go version and the command.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBench(cmd.Context(), o, cmd.ErrOrStderr()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.repo, "repo", ".", "repository root (template.yaml, config/, events/)")
	f.StringVar(&o.out, "out", "docs/benchmarks.md", "report to write")
	f.StringVar(&o.goBench, "go-bench", "", "output of `go test -run '^$' -bench . -benchmem` to include")
	f.StringVar(&o.dist, "dist", "dist", "directory of the deployed bootstraps (make dist: dist/<LogicalId>/bootstrap)")
	f.StringVar(&o.rie, "rie", envOr("CRMSYNC_RIE_BIN", "bin/aws-lambda-rie"), "aws-lambda-rie binary ($CRMSYNC_RIE_BIN)")
	f.StringVar(&o.logFile, "log", ".tmp/bench/stack.log", "where the local stacks' logs go")
	f.StringVar(&o.endpoint, "endpoint", "", "use the AWS endpoint (moto) answering here instead of starting one")
	f.IntVar(&o.persons, "persons", 160, "synthetic people in the webhook load run (about 7 deliveries each)")
	f.IntVar(&o.e2ePersons, "e2e-persons", 40, "synthetic people in the end-to-end run (moto's transactions slow down as its tables grow)")
	f.IntVar(&o.concurrency, "concurrency", 4, "concurrent webhook senders in the load runs")
	f.IntVar(&o.coldRuns, "cold-runs", 3, "aws-lambda-rie starts per function (the median is reported)")
	f.BoolVar(&o.skipLoad, "skip-load", false, "skip the load run")
	f.BoolVar(&o.skipCold, "skip-cold", false, "skip bootstrap sizes and init times")
	return cmd
}

// benchResults is everything the report shows.
type benchResults struct {
	Command    string
	Machine    machineInfo
	Started    time.Time
	Took       time.Duration
	Cost       []costScenario
	Webhooks   *loadResult
	Load       *loadResult
	Cold       []coldStart
	GoBench    []goBenchResult
	GoBenchRaw string
}

type machineInfo struct {
	CPUs      int
	CPUModel  string
	GoVersion string
	OS, Arch  string
	Moto      string
}

func machine(ctx context.Context) machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if out, err := exec.CommandContext(ctx, "nproc").Output(); err == nil {
		fmt.Sscan(string(out), &m.CPUs)
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, "python3", "-c", "import moto; print(moto.__version__)").Output(); err == nil {
		m.Moto = "moto " + strings.TrimSpace(string(out))
	}
	return m
}

func runBench(ctx context.Context, o benchOptions, log io.Writer) error {
	res := &benchResults{Command: "make bench", Started: time.Now(), Machine: machine(ctx)}
	if err := os.MkdirAll(filepath.Dir(o.logFile), 0o755); err != nil {
		return err
	}
	stackLog, err := os.Create(o.logFile)
	if err != nil {
		return err
	}
	defer stackLog.Close()

	if o.goBench != "" {
		raw, err := os.ReadFile(o.goBench)
		if err != nil {
			return err
		}
		res.GoBenchRaw = string(raw)
		res.GoBench = parseGoBench(string(raw))
	}

	endpoint := o.endpoint
	if endpoint == "" {
		if endpoint, err = moto.FreeEndpoint(); err != nil {
			return err
		}
	}
	srv, err := moto.Ensure(ctx, endpoint)
	if err != nil {
		return err
	}
	defer srv.Stop()
	traffic, err := newBenchTraffic(o.repo)
	if err != nil {
		return err
	}

	fmt.Fprintln(log, "bench: per-event AWS usage (exact)")
	// Fresh resource names each run: the counter must see every table created.
	suffix := fmt.Sprint(time.Now().Unix() % 1e6)
	costStack, err := startBenchStack(ctx, o.repo, endpoint, "bcost"+suffix, false, stackLog)
	if err != nil {
		return err
	}
	res.Cost, err = runCostScenarios(ctx, costStack, traffic)
	costStack.Close()
	if err != nil {
		return fmt.Errorf("cost scenarios: %w (logs in %s)", err, o.logFile)
	}

	if !o.skipLoad {
		fmt.Fprintf(log, "bench: webhook load (%d people, concurrency %d)\n", o.persons, o.concurrency)
		hookStack, err := startBenchStack(ctx, o.repo, endpoint, "bhook"+suffix, false, stackLog)
		if err != nil {
			return err
		}
		res.Webhooks, err = runLoad(ctx, hookStack, traffic, 10000, o.persons, o.concurrency, false)
		hookStack.Close()
		if err != nil {
			return fmt.Errorf("webhook load: %w (logs in %s)", err, o.logFile)
		}
		fmt.Fprintf(log, "bench: end to end (%d people, concurrency %d)\n", o.e2ePersons, o.concurrency)
		loadStack, err := startBenchStack(ctx, o.repo, endpoint, "bload"+suffix, true, stackLog)
		if err != nil {
			return err
		}
		res.Load, err = runLoad(ctx, loadStack, traffic, 100, o.e2ePersons, o.concurrency, true)
		loadStack.Close()
		if err != nil {
			return fmt.Errorf("end-to-end run: %w (logs in %s)", err, o.logFile)
		}
	}

	if !o.skipCold {
		fmt.Fprintln(log, "bench: bootstraps and cold starts")
		if res.Cold, err = runColdStarts(ctx, o); err != nil {
			return fmt.Errorf("cold starts: %w", err)
		}
	}
	res.Took = time.Since(res.Started)
	md := renderReport(res)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(log, "bench: wrote %s in %s\n", o.out, res.Took.Round(time.Second))
	return nil
}
