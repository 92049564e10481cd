package localcloud

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/crmsync/crmsync/tools/samtemplate"
)

// Concurrent invocations of one function each get their own execution environment and their own
// answer: aws-lambda-go hands a handler's answer buffer to its next invocation, so one instance
// invoked concurrently would swap answers between invocations.
func TestRuntimeConcurrentInvocationsKeepTheirAnswers(t *testing.T) {
	type msg struct {
		N   int
		Pad string
	}
	var built atomic.Int64
	build := func() (lambda.Handler, error) {
		built.Add(1)
		return lambda.NewHandler(func(_ context.Context, in msg) (msg, error) {
			time.Sleep(50 * time.Microsecond)
			return in, nil
		}), nil
	}
	first, _ := build()
	for _, withFactory := range []bool{true, false} {
		t.Run(fmt.Sprintf("factory=%v", withFactory), func(t *testing.T) {
			r := NewRuntime(slog.New(slog.NewTextHandler(io.Discard, nil)))
			fn := samtemplate.Function{LogicalID: "Fn", Timeout: 3}
			if withFactory {
				r.RegisterFactory(fn, "arn:fn", first, build)
			} else {
				r.Register(fn, "arn:fn", first)
			}
			var wg sync.WaitGroup
			var bad atomic.Int64
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 300; i++ {
						n := g*1000 + i
						p, _ := json.Marshal(msg{N: n, Pad: "0123456789abcdef0123456789abcdef"})
						out, err := r.Invoke(context.Background(), "Fn", p)
						time.Sleep(20 * time.Microsecond)
						var got msg
						if err != nil || json.Unmarshal(out, &got) != nil || got.N != n {
							bad.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			if bad.Load() != 0 {
				t.Fatalf("%d of 2400 invocations got another invocation's answer", bad.Load())
			}
		})
	}
	if built.Load() < 2 {
		t.Errorf("the factory built %d instance(s) for 8 concurrent callers", built.Load())
	}
}
