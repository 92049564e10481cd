package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/tools/costmodel"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// fnStat is one function's measured invocations, compute and log output.
type fnStat struct {
	id          string
	memoryMB    int
	invocations int
	billedMs    float64
	durations   []time.Duration
	logBytes    int64
	logLines    int
}

// fnStats measures every function of a bench stack: each handler is timed as Lambda bills it,
// and everything the function writes to its logs (application logs and EMF) is counted.
type fnStats struct {
	mu     sync.Mutex
	fns    map[string]*fnStat
	series map[string]bool // EMF metric series (name + dimensions)
}

func newFnStats() *fnStats { return &fnStats{fns: map[string]*fnStat{}, series: map[string]bool{}} }

func (s *fnStats) stat(id string, mem int) *fnStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.fns[id]
	if st == nil {
		st = &fnStat{id: id, memoryMB: mem}
		s.fns[id] = st
	}
	return st
}

// snapshot copies the stats (durations omitted).
func (s *fnStats) snapshot() map[string]fnStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]fnStat{}
	for id, st := range s.fns {
		c := *st
		c.durations = nil
		out[id] = c
	}
	return out
}

// since returns the Lambda usage after an earlier snapshot, and the log bytes written.
func (s *fnStats) since(prev map[string]fnStat) ([]costmodel.LambdaUse, int64) {
	var out []costmodel.LambdaUse
	var logs int64
	for id, st := range s.snapshot() {
		p := prev[id]
		logs += st.logBytes - p.logBytes
		if n := st.invocations - p.invocations; n > 0 {
			out = append(out, costmodel.LambdaUse{Function: id, MemoryMB: st.memoryMB, Invocations: n, BilledMs: st.billedMs - p.billedMs})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Function < out[j].Function })
	return out, logs
}

type timedHandler struct {
	h  lambda.Handler
	st *fnStat
	s  *fnStats
}

func (t timedHandler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	start := time.Now()
	out, err := t.h.Invoke(ctx, payload)
	d := time.Since(start)
	t.s.mu.Lock()
	t.st.invocations++
	t.st.billedMs += costmodel.BilledMs(float64(d) / float64(time.Millisecond))
	t.st.durations = append(t.st.durations, d)
	t.s.mu.Unlock()
	return out, err
}

// logCounter counts a function's log output before passing it on.
type logCounter struct {
	w  io.Writer
	st *fnStat
	s  *fnStats
}

func (l logCounter) Write(p []byte) (int, error) {
	var series []string
	if bytes.Contains(p, []byte(`"_aws"`)) {
		for _, d := range emf.Parse(p) {
			keys := make([]string, 0, len(d.Dimensions))
			for k, v := range d.Dimensions {
				keys = append(keys, k+"="+v)
			}
			sort.Strings(keys)
			series = append(series, d.Name+"{"+strings.Join(keys, ",")+"}")
		}
	}
	l.s.mu.Lock()
	l.st.logBytes += int64(len(p))
	l.st.logLines += bytes.Count(p, []byte("\n"))
	for _, k := range series {
		l.s.series[k] = true
	}
	l.s.mu.Unlock()
	return l.w.Write(p)
}

// factory builds each function as `crmsync-dev dev` does, timed and with its logs counted.
func (s *fnStats) factory(ctx context.Context, fn samtemplate.Function, env localcloud.FunctionEnv) (lambda.Handler, error) {
	st := s.stat(fn.LogicalID, fn.MemorySize)
	w := logCounter{w: env.Stdout, st: st, s: s}
	env.Stdout = w
	env.Log = slog.New(localcloud.NewLogHandler(w, fn.LogicalID, slog.LevelInfo))
	h, err := fnbuild.Factory(ctx, fn, env)
	if err != nil {
		return nil, err
	}
	return timedHandler{h: h, st: st, s: s}, nil
}

// motoGuard works around the emulator, not crmsync: moto's TransactWriteItems deep-copies every
// table it touches for its rollback and is not thread-safe ("dictionary changed size during
// iteration" under concurrent writes, answered as HTTP 500). The bench therefore lets one
// DynamoDB write reach moto at a time (reads share the lock). AWS has no such limit, so the load
// run's throughput is a floor set by the emulator.
type motoGuard struct{ mu sync.RWMutex }

var dynamoWrites = map[string]bool{"PutItem": true, "UpdateItem": true, "DeleteItem": true, "TransactWriteItems": true, "BatchWriteItem": true}

func (g *motoGuard) option(stack *middleware.Stack) error {
	return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("crmsync.bench.motoguard",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			if middleware.GetServiceID(ctx) != "DynamoDB" {
				return next.HandleFinalize(ctx, in)
			}
			if dynamoWrites[middleware.GetOperationName(ctx)] {
				g.mu.Lock()
				defer g.mu.Unlock()
			} else {
				g.mu.RLock()
				defer g.mu.RUnlock()
			}
			return next.HandleFinalize(ctx, in)
		}), middleware.After)
}

// benchStack is a local stack whose AWS requests are counted.
type benchStack struct {
	*localcloud.Dev
	counter *costmodel.Counter
	fns     *fnStats
	plain   aws.Config // not counted: for inspecting what the pipeline wrote
	base    string
	client  *http.Client
}

func startBenchStack(ctx context.Context, repo, endpoint, name string, eventSources bool, out io.Writer) (*benchStack, error) {
	counter := costmodel.NewCounter()
	fns := newFnStats()
	d, err := localcloud.Start(ctx, localcloud.Config{
		TemplatePath: filepath.Join(repo, "template.yaml"), Endpoint: endpoint, HTTPAddr: "127.0.0.1:0",
		DevSecretsPath: filepath.Join(repo, "config", "dev-secrets.json"), FixturesDir: filepath.Join(repo, "events", "vendor"),
		StackName: name, Factory: fns.factory, Out: out, NoSchedules: true, NoEventSources: !eventSources,
		AWSOptions: []func(*middleware.Stack) error{counter.Option, (&motoGuard{}).option},
	})
	if err != nil {
		return nil, err
	}
	plain, err := awsclient.Load(ctx, endpoint)
	if err != nil {
		d.Close()
		return nil, err
	}
	counter.Reset() // provisioning is not part of any event
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	return &benchStack{Dev: d, counter: counter, fns: fns, plain: plain, base: "http://" + d.Addr,
		client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// workerMapping returns an event source mapping of the worker's queue that the caller polls
// itself (the cost phase settles one batch at a time).
func (s *benchStack) workerMapping() (*localcloud.EventSourceMapping, error) {
	for id, fn := range s.Stack.Functions {
		for _, src := range fn.SQS {
			q := s.Stack.Physical["IngestQueue"]
			if q.Attrs["Arn"] != src.Queue {
				continue
			}
			return &localcloud.EventSourceMapping{SQS: sqs.NewFromConfig(s.AWS), Invoker: s.Runtime, Function: id,
				QueueURL: q.Ref, QueueARN: src.Queue, Region: s.AWS.Region, BatchSize: src.BatchSize,
				ReportFail: src.ReportBatchItemFailed, WaitSeconds: 0, Log: s.Log}, nil
		}
	}
	return nil, fmt.Errorf("no function reads the ingest queue")
}

// queueDepth returns the ingest queue's visible and in-flight messages (not counted).
func (s *benchStack) queueDepth(ctx context.Context) (int, int, error) {
	out, err := sqs.NewFromConfig(s.plain).GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(s.Stack.Physical["IngestQueue"].Ref),
		AttributeNames: []sqstypes.QueueAttributeName{"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"},
	})
	if err != nil {
		return 0, 0, err
	}
	var vis, inflight int
	fmt.Sscan(out.Attributes["ApproximateNumberOfMessages"], &vis)
	fmt.Sscan(out.Attributes["ApproximateNumberOfMessagesNotVisible"], &inflight)
	return vis, inflight, nil
}

// percentile returns the p-th percentile (0-100) of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
