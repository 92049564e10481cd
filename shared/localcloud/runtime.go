// Package localcloud owns crmsync's local stack: it provisions what template.yaml declares into
// moto, runs each function's real handler in process with the environment the template gives
// it, serves the HTTP API as API Gateway HTTP API payload 2.0 events, emulates the SQS event
// source mapping (batches, partial batch failures, visibility timeout, redrive), runs the
// EventBridge schedules, and serves fakes of the vendor APIs. `crmsync dev` (and `make dev`)
// drive it.
package localcloud

import (
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

	"github.com/crmsync/crmsync/shared/samtemplate"
)

// Invoker invokes a function by logical id with a JSON payload, as Lambda would.
type Invoker interface {
	Invoke(ctx context.Context, fn string, payload []byte) ([]byte, error)
}

// Runtime holds each function's handler and invokes it with a Lambda context: a fresh request
// id, the function's ARN and a deadline from its timeout.
type Runtime struct {
	mu       sync.RWMutex
	handlers map[string]lambda.Handler
	fns      map[string]samtemplate.Function
	arns     map[string]string
	log      *slog.Logger
}

// NewRuntime returns an empty runtime that logs invocations to log.
func NewRuntime(log *slog.Logger) *Runtime {
	return &Runtime{handlers: map[string]lambda.Handler{}, fns: map[string]samtemplate.Function{}, arns: map[string]string{}, log: log}
}

// Register adds a function's handler.
func (r *Runtime) Register(fn samtemplate.Function, arn string, h lambda.Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handlers[fn.LogicalID] = h
	r.fns[fn.LogicalID] = fn
	r.arns[fn.LogicalID] = arn
}

// Invoke runs one invocation. A panic in the handler becomes an error, as the Lambda runtime
// reports it.
func (r *Runtime) Invoke(ctx context.Context, fn string, payload []byte) (out []byte, err error) {
	r.mu.RLock()
	h, ok := r.handlers[fn]
	f := r.fns[fn]
	arn := r.arns[fn]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("invoke %s: no such function", fn)
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
		}
		lvl := slog.LevelInfo
		attrs := []any{"function", fn, "requestId", reqID, "durationMs", time.Since(start).Milliseconds()}
		if err != nil {
			lvl = slog.LevelError
			attrs = append(attrs, "error", err.Error())
		}
		r.log.Log(context.Background(), lvl, "invocation", attrs...)
	}()
	return h.Invoke(ctx, payload)
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
