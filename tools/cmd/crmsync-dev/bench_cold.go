package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// coldStart is one function's deployed bootstrap and its start under aws-lambda-rie.
type coldStart struct {
	Function string
	Kind     string
	// Size is dist/<Function>/bootstrap (the deployed arm64 build) in bytes; 0 when missing.
	Size int64
	// InitMs is the median over runs of the first invocation's wall time (from starting
	// aws-lambda-rie, which starts the bootstrap, to the first answer) minus the handler's own
	// duration as the emulator reports it: process start, Go runtime and package init, the
	// function's construction, and the emulator's own start and one loopback round trip.
	InitMs float64
	// HandlerMs is the median duration of that first invocation's handler.
	HandlerMs float64
	// RIEInitMs is the median of the emulator's "INIT REPORT(durationMs)".
	RIEInitMs float64
	// Requests counts requests to the AWS endpoint from start through the first invocation,
	// which makes no AWS call of its own (Probe): any would have come from init.
	Requests int
	// Probe is the first invocation.
	Probe string
	// Reached is set when a later invocation that does call AWS reached the counting endpoint
	// (the count is live).
	Reached bool
}

// coldProbe is an invocation of each kind that makes no AWS call, and one that does.
func coldProbe(kind fnbuild.Kind) (name string, quiet, aws []byte) {
	switch kind {
	case fnbuild.KindWebhook:
		return "a request whose body is not valid base64 (answered 400 before any AWS call)",
			[]byte(`{"version":"2.0","rawPath":"/webhooks/x","body":"!!","isBase64Encoded":true,"requestContext":{"http":{"method":"POST"}}}`),
			[]byte(`{"version":"2.0","rawPath":"/webhooks/x","body":"a=b","headers":{"content-type":"application/json"},"requestContext":{"http":{"method":"POST"}}}`)
	case fnbuild.KindWorker:
		return "an empty SQS batch", []byte(`{"Records":[]}`),
			[]byte(`{"Records":[{"messageId":"m1","body":"{\"key\":\"bench:1\",\"source\":\"bench\"}","attributes":{"MessageGroupId":"g"}}]}`)
	case fnbuild.KindCrmChanges:
		return "a GET (answered 405 before any AWS call)",
			[]byte(`{"version":"2.0","rawPath":"/crm/changes","requestContext":{"http":{"method":"GET"}}}`), nil
	case fnbuild.KindGraphSubs:
		return "a GET of the lifecycle route (answered 405 before any AWS call)",
			[]byte(`{"version":"2.0","rawPath":"/webhooks/msgraph/lifecycle","requestContext":{"http":{"method":"GET"}}}`), nil
	default:
		return "an unknown job (refused before any AWS call)", []byte(`{"job":"no-such-job"}`), nil
	}
}

var (
	rieInitRe = regexp.MustCompile(`INIT REPORT\(durationMs: ([0-9.]+)\)`)
	rieDurRe  = regexp.MustCompile(`INVOKE RTDONE\(status: [a-z]+, produced bytes: [0-9]+, duration: ([0-9.]+)ms\)`)
)

func runColdStarts(ctx context.Context, o benchOptions) ([]coldStart, error) {
	tmpl, err := samtemplate.Load(filepath.Join(o.repo, "template.yaml"), samtemplate.Options{StackName: "bench", AccountID: localcloud.AccountID})
	if err != nil {
		return nil, err
	}
	fns, err := tmpl.Functions()
	if err != nil {
		return nil, err
	}
	rie, err := filepath.Abs(o.rie)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(rie); err != nil {
		return nil, fmt.Errorf("aws-lambda-rie not found at %s (make tools installs it)", rie)
	}
	// The AWS endpoint every function is pointed at: it counts requests and answers 500.
	var hits atomic.Int64
	ep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"__type":"InternalServerError","message":"bench endpoint"}`))
	}))
	defer ep.Close()

	build, err := os.MkdirTemp("", "crmsync-bench-cold-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(build)
	bins := map[fnbuild.Kind]string{}
	var out []coldStart
	for _, fn := range fns {
		kind, ok := fnbuild.KindOf(fn.LogicalID)
		if !ok {
			continue
		}
		cs := coldStart{Function: fn.LogicalID, Kind: string(kind)}
		if st, err := os.Stat(filepath.Join(o.dist, fn.LogicalID, "bootstrap")); err == nil {
			cs.Size = st.Size()
		}
		if bins[kind] == "" {
			dir := filepath.Join(build, string(kind))
			cmd := exec.CommandContext(ctx, "make", "-s", "build-"+fn.LogicalID, "ARTIFACTS_DIR="+dir, "HOST=1")
			cmd.Dir = o.repo
			if b, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("make build-%s: %v\n%s", fn.LogicalID, err, b)
			}
			bins[kind] = filepath.Join(dir, "bootstrap")
		}
		env := map[string]string{"CRMSYNC_AWS_ENDPOINT": ep.URL, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
			"AWS_SECRET_ACCESS_KEY": "test", "AWS_LAMBDA_FUNCTION_TIMEOUT": strconv.Itoa(fn.Timeout), "AWS_LAMBDA_LOG_FORMAT": "JSON",
			"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": strconv.Itoa(fn.MemorySize)}
		for k, v := range fn.Env {
			if strings.HasPrefix(v, "{{") {
				v = "bench-" + strings.Trim(strings.TrimPrefix(v, "{{ref:"), "{}")
			}
			if strings.HasSuffix(k, "_BASE_URL") && v != "" {
				v = ep.URL + "/vendor" // never the internet
			}
			env[k] = v
		}
		probe, quiet, loud := coldProbe(kind)
		cs.Probe = probe
		var inits, handlers, rieInits []float64
		for run := 0; run < max(1, o.coldRuns); run++ {
			before := hits.Load()
			r, err := measureCold(ctx, rie, bins[kind], env, quiet)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", fn.LogicalID, err)
			}
			cs.Requests += int(hits.Load() - before)
			inits = append(inits, r.wallMs-r.handlerMs)
			handlers = append(handlers, r.handlerMs)
			rieInits = append(rieInits, r.rieInitMs)
			if run == 0 && loud != nil {
				b := hits.Load()
				_, _ = r.invoke(loud)
				cs.Reached = hits.Load() > b
			}
			r.stop()
		}
		cs.InitMs, cs.HandlerMs, cs.RIEInitMs = median(inits), median(handlers), median(rieInits)
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Function < out[j].Function })
	return out, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type rieRun struct {
	cmd                          *exec.Cmd
	addr                         string
	logs                         *syncBuffer
	wallMs, handlerMs, rieInitMs float64
}

func freeLocalAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// measureCold starts aws-lambda-rie with the bootstrap and times its first invocation.
func measureCold(ctx context.Context, rie, bootstrap string, env map[string]string, payload []byte) (*rieRun, error) {
	api, err := freeLocalAddr()
	if err != nil {
		return nil, err
	}
	addr, err := freeLocalAddr()
	if err != nil {
		return nil, err
	}
	r := &rieRun{addr: addr, logs: &syncBuffer{}}
	r.cmd = exec.CommandContext(ctx, rie, "--runtime-api-address", api, "--runtime-interface-emulator-address", addr, bootstrap)
	r.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		r.cmd.Env = append(r.cmd.Env, k+"="+v)
	}
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := start.Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("aws-lambda-rie did not listen: %s", r.logs.String())
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := r.invoke(payload); err != nil {
		r.stop()
		return nil, err
	}
	r.wallMs = float64(time.Since(start).Microseconds()) / 1000
	// The emulator logs the invocation's report right after answering.
	for i := 0; i < 100 && !rieDurRe.MatchString(r.logs.String()); i++ {
		time.Sleep(5 * time.Millisecond)
	}
	logs := r.logs.String()
	if m := rieDurRe.FindStringSubmatch(logs); m != nil {
		r.handlerMs, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := rieInitRe.FindStringSubmatch(logs); m != nil {
		r.rieInitMs, _ = strconv.ParseFloat(m[1], 64)
	}
	return r, nil
}

func (r *rieRun) invoke(payload []byte) ([]byte, error) {
	resp, err := http.Post("http://"+r.addr+"/2015-03-31/functions/function/invocations", "application/json", bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("invoke: %w\n%s", err, r.logs.String())
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func (r *rieRun) stop() {
	if r.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	_ = r.cmd.Wait()
}
