// Package localcloud owns crmsync's local stack: it provisions what template.yaml declares into
// moto, runs each function's real handler in process with the environment the template gives
// it, serves the HTTP API as API Gateway HTTP API payload 2.0 events, emulates the SQS event
// source mapping (batches, partial batch failures, visibility timeout, redrive), runs the
// EventBridge schedules, and serves fakes of the vendor APIs. `crmsync-dev dev` (and `make dev`)
// drive it.
package localcloud

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/crmsync/crmsync/tools/samtemplate"
)

// Invoker invokes a function by logical id with a JSON payload, as Lambda would.
type Invoker interface {
	Invoke(ctx context.Context, fn string, payload []byte) ([]byte, error)
}

// Runtime holds each function's handlers and invokes them with a Lambda context: a fresh request
// id, the function's ARN and a deadline from its timeout.
//
// Like Lambda, it gives each concurrent invocation its own execution environment: a handler
// instance serves one invocation at a time, and a function registered with a constructor gets a
// new instance when all of its instances are busy. This is not only fidelity: aws-lambda-go's
// handlers return their answer in a pooled buffer that is handed to the next invocation as soon as
// the handler returns (Lambda's runtime sends it before taking another event), so invoking one
// instance concurrently swaps answers between invocations.
type Runtime struct {
	mu        sync.RWMutex
	instances map[string]*instances
	fns       map[string]samtemplate.Function
	arns      map[string]string
	log       *slog.Logger
}

// instances are one function's execution environments.
type instances struct {
	build func() (lambda.Handler, error) // nil: no more than the registered one
	mu    sync.Mutex
	idle  []lambda.Handler
	free  *sync.Cond
}

func (in *instances) take() (lambda.Handler, error) {
	in.mu.Lock()
	for len(in.idle) == 0 && in.build == nil {
		in.free.Wait()
	}
	if n := len(in.idle); n > 0 {
		h := in.idle[n-1]
		in.idle = in.idle[:n-1]
		in.mu.Unlock()
		return h, nil
	}
	in.mu.Unlock()
	return in.build() // a cold start
}

func (in *instances) release(h lambda.Handler) {
	in.mu.Lock()
	in.idle = append(in.idle, h)
	in.mu.Unlock()
	in.free.Signal()
}

// NewRuntime returns an empty runtime that logs invocations to log.
func NewRuntime(log *slog.Logger) *Runtime {
	return &Runtime{instances: map[string]*instances{}, fns: map[string]samtemplate.Function{}, arns: map[string]string{}, log: log}
}

// Register adds a function with a single handler instance: its invocations run one at a time.
func (r *Runtime) Register(fn samtemplate.Function, arn string, h lambda.Handler) {
	r.RegisterFactory(fn, arn, h, nil)
}

// RegisterFactory adds a function whose first instance is h and whose further instances, built
// when every instance is busy, come from build.
func (r *Runtime) RegisterFactory(fn samtemplate.Function, arn string, h lambda.Handler, build func() (lambda.Handler, error)) {
	in := &instances{build: build, idle: []lambda.Handler{h}}
	in.free = sync.NewCond(&in.mu)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.instances[fn.LogicalID] = in
	r.fns[fn.LogicalID] = fn
	r.arns[fn.LogicalID] = arn
}

// Invoke runs one invocation. A panic in the handler becomes an error, as the Lambda runtime
// reports it.
func (r *Runtime) Invoke(ctx context.Context, fn string, payload []byte) (out []byte, err error) {
	r.mu.RLock()
	in, ok := r.instances[fn]
	f := r.fns[fn]
	arn := r.arns[fn]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("invoke %s: no such function", fn)
	}
	h, err := in.take()
	if err != nil {
		return nil, fmt.Errorf("invoke %s: start an execution environment: %w", fn, err)
	}
	reqID := RequestID()
	timeout := time.Duration(f.Timeout) * time.Second
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx = lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: reqID, InvokedFunctionArn: arn})
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("invoke %s: panic: %v", fn, p)
			r.log.Error("handler panic", "function", fn, "requestId", reqID, "stack", string(debug.Stack()))
			if in.build != nil {
				h = nil // Lambda discards an environment whose runtime crashed
			}
		}
		if h != nil {
			in.release(h)
		} else {
			in.free.Signal()
		}
		lvl := slog.LevelInfo
		attrs := []any{"function", fn, "requestId", reqID, "durationMs", time.Since(start).Milliseconds()}
		if err != nil {
			lvl = slog.LevelError
			attrs = append(attrs, "error", err.Error())
		}
		r.log.Log(context.Background(), lvl, "invocation", attrs...)
	}()
	out, err = h.Invoke(ctx, payload)
	// The answer may live in the instance's reusable buffer: copy it before the instance serves
	// another invocation.
	return bytes.Clone(out), err
}

// RequestID returns a random UUID-shaped request id.
func RequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// NewLogHandler returns the slog handler a function uses locally: the JSON shape Lambda's
// structured logging writes (timestamp, level, message, requestId from the Lambda context),
// plus the function's logical id.
func NewLogHandler(w io.Writer, fn string, level slog.Leveler) slog.Handler {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: lambdacontext.ReplaceAttr})
	return &requestIDHandler{Handler: h.WithAttrs([]slog.Attr{slog.String("function", fn)})}
}

type requestIDHandler struct{ slog.Handler }

func (h *requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		r.AddAttrs(slog.String("requestId", lc.AwsRequestID))
	}
	return h.Handler.Handle(ctx, r)
}

func (h *requestIDHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &requestIDHandler{h.Handler.WithAttrs(a)}
}

func (h *requestIDHandler) WithGroup(n string) slog.Handler {
	return &requestIDHandler{h.Handler.WithGroup(n)}
}
