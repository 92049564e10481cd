// Package functions_test runs every function's real bootstrap, built by the Makefile's SAM build
// target, under aws-lambda-rie (the emulator `sam local` runs inside its containers) against moto,
// and invokes it with each events/ file meant for it: the sam-local equivalent without Docker.
package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samples"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

const root = ".."

// rieBinary finds aws-lambda-rie: $CRMSYNC_RIE_BIN, bin/aws-lambda-rie (installed by `make tools`),
// or PATH.
func rieBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CRMSYNC_RIE_BIN"); p != "" {
		return p
	}
	if p, err := filepath.Abs(filepath.Join(root, "bin", "aws-lambda-rie")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p
	}
	t.Fatalf("aws-lambda-rie not found: run `make tools` (it installs bin/aws-lambda-rie from the Go module proxy)")
	return ""
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// build runs the Makefile's SAM target for one function, for this machine's architecture.
func build(t *testing.T, id, dir string) string {
	t.Helper()
	cmd := exec.Command("make", "-s", "build-"+id, "ARTIFACTS_DIR="+dir, "HOST=1")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build-%s: %v\n%s", id, err, out)
	}
	return filepath.Join(dir, "bootstrap")
}

// eventsFor lists the events/ files meant for a function: webhook-<connector>*.json for the
// webhook function of that connector, sqs-*.json for functions with an SQS source,
// schedule-<job>.json for the reconcile function of that job, crm-*.json for the function
// serving POST /crm/changes, and graphsubs-*.json (its schedule's input, a lifecycle handshake)
// for the function serving POST /webhooks/msgraph/lifecycle.
func eventsFor(t *testing.T, fn samtemplate.Function) []string {
	t.Helper()
	all, err := filepath.Glob(filepath.Join(root, "events", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range all {
		base := filepath.Base(p)
		switch {
		case fn.Env["CONNECTOR"] != "" && (base == "webhook-"+fn.Env["CONNECTOR"]+".json" || strings.HasPrefix(base, "webhook-"+fn.Env["CONNECTOR"]+"-")):
			out = append(out, p)
		case len(fn.SQS) > 0 && strings.HasPrefix(base, "sqs-"):
			out = append(out, p)
		case fn.Env["JOB"] != "" && base == "schedule-"+fn.Env["JOB"]+".json":
			out = append(out, p)
		case servesRoute(fn, "/crm/changes") && strings.HasPrefix(base, "crm-"):
			out = append(out, p)
		case servesRoute(fn, "/webhooks/msgraph/lifecycle") && strings.HasPrefix(base, "graphsubs-"):
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func servesRoute(fn samtemplate.Function, path string) bool {
	for _, r := range fn.Routes {
		if r.Path == path {
			return true
		}
	}
	return false
}

type rie struct {
	cmd  *exec.Cmd
	addr string
	logs *bytes.Buffer
}

func startRIE(t *testing.T, bin, bootstrap string, env map[string]string) *rie {
	t.Helper()
	r := &rie{addr: freeAddr(t), logs: &bytes.Buffer{}}
	r.cmd = exec.Command(bin, "--log-level", "error", "--runtime-api-address", freeAddr(t), "--runtime-interface-emulator-address", r.addr, bootstrap)
	r.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		r.cmd.Env = append(r.cmd.Env, k+"="+v)
	}
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start aws-lambda-rie: %v", err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", r.addr)
		if err == nil {
			c.Close()
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("aws-lambda-rie did not listen on %s: %s", r.addr, r.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *rie) invoke(t *testing.T, payload []byte) []byte {
	t.Helper()
	resp, err := http.Post("http://"+r.addr+"/2015-03-31/functions/function/invocations", "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("invoke: %v\nlogs:\n%s", err, r.logs)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("invoke: HTTP %d %s\nlogs:\n%s", resp.StatusCode, b, r.logs)
	}
	return b
}

func TestBootstrapsUnderRIE(t *testing.T) {
	ctx := context.Background()
	bin := rieBinary(t)
	endpoint := moto.ForTest(t)
	cfg, err := awsclient.Load(ctx, endpoint)
	if err != nil {
		t.Fatal(err)
	}
	stackName := fmt.Sprintf("rie%d", time.Now().UnixNano()%1e9)
	tmpl, err := samtemplate.Load(filepath.Join(root, "template.yaml"), samtemplate.Options{StackName: stackName, AccountID: localcloud.AccountID})
	if err != nil {
		t.Fatal(err)
	}
	devSecrets, err := localcloud.LoadDevSecrets(filepath.Join(root, "config", "dev-secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := localcloud.Provision(ctx, cfg, tmpl, localcloud.ProvisionOptions{StackName: stackName, DevSecrets: devSecrets})
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := samples.DevSecrets(filepath.Join(root, "config", "dev-secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	fakes := httptest.NewServer(&localcloud.VendorFakes{Dir: filepath.Join(root, "events", "vendor")})
	defer fakes.Close()

	ids := make([]string, 0, len(st.Functions))
	for id := range st.Functions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	buildDir := t.TempDir()
	for _, id := range ids {
		fn := st.Functions[id]
		t.Run(id, func(t *testing.T) {
			files := eventsFor(t, fn)
			if len(files) == 0 {
				t.Fatalf("no events/ file is meant for %s: add one", id)
			}
			bootstrap := build(t, id, filepath.Join(buildDir, id))
			env := map[string]string{
				awsclient.EndpointEnv: endpoint, "AWS_REGION": cfg.Region, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
				"AWS_LAMBDA_FUNCTION_TIMEOUT": fmt.Sprint(fn.Timeout), "AWS_LAMBDA_LOG_FORMAT": "JSON",
			}
			for k, v := range fn.Env {
				env[k] = v
			}
			// As the local stack does: the CRM changes function authorizes with the dev-only
			// roles file, which maps the sample event's principal (user/test).
			env["CRM_ROLES_PATH"] = "../config/dev-crm-roles.yaml"
			for k, prefix := range localcloud.BaseURLEnv {
				if _, ok := fn.Env[k]; ok {
					env[k] = fakes.URL + "/" + prefix
				}
			}
			r := startRIE(t, bin, bootstrap, env)
			for _, f := range files {
				raw, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				name := filepath.Base(f)
				switch {
				case strings.HasPrefix(name, "webhook-"):
					var ev events.APIGatewayV2HTTPRequest
					if err := json.Unmarshal(raw, &ev); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					// Timestamped signatures go stale: sign again now, as the vendor would on a retry.
					if _, err := samples.Refresh(&ev, secrets, time.Now()); err != nil {
						t.Fatalf("%s: re-sign: %v", name, err)
					}
					payload, err := samples.MarshalEvent(ev)
					if err != nil {
						t.Fatal(err)
					}
					var resp events.APIGatewayV2HTTPResponse
					if err := json.Unmarshal(r.invoke(t, payload), &resp); err != nil {
						t.Fatalf("%s: answer is not an HTTP API response: %v", name, err)
					}
					if resp.StatusCode != 200 && resp.StatusCode != 202 {
						t.Errorf("%s: status %d (%s), want 200 or 202\nlogs:\n%s", name, resp.StatusCode, resp.Body, r.logs)
					}
					if c := ev.QueryStringParameters["hub.challenge"]; c != "" && resp.Body != c {
						t.Errorf("%s: handshake body %q, want the challenge %q", name, resp.Body, c)
					}
					if tok := ev.QueryStringParameters["validationToken"]; tok != "" && resp.Body != tok {
						t.Errorf("%s: validation body %q, want the token %q", name, resp.Body, tok)
					}
				case strings.HasPrefix(name, "crm-"):
					// IAM-authorized route: API Gateway has checked the signature; the event carries
					// the caller in requestContext.authorizer.iam.
					var resp events.APIGatewayV2HTTPResponse
					if err := json.Unmarshal(r.invoke(t, raw), &resp); err != nil {
						t.Fatalf("%s: answer is not an HTTP API response: %v", name, err)
					}
					if resp.StatusCode != 202 {
						t.Errorf("%s: status %d (%s), want 202\nlogs:\n%s", name, resp.StatusCode, resp.Body, r.logs)
					}
				case strings.HasPrefix(name, "sqs-"):
					var ev events.SQSEvent
					if err := json.Unmarshal(raw, &ev); err != nil || len(ev.Records) == 0 {
						t.Fatalf("%s: not an SQS event with records: %v", name, err)
					}
					var resp events.SQSEventResponse
					if err := json.Unmarshal(r.invoke(t, raw), &resp); err != nil {
						t.Fatalf("%s: answer is not an SQS batch response: %v", name, err)
					}
					if len(resp.BatchItemFailures) != 0 {
						t.Errorf("%s: %d batch item failures, want none\nlogs:\n%s", name, len(resp.BatchItemFailures), r.logs)
					}
				case strings.HasPrefix(name, "graphsubs-"):
					checkGraphSubs(t, r, name, raw)
				case strings.HasPrefix(name, "schedule-"):
					var want struct{ Job string }
					_ = json.Unmarshal(raw, &want)
					var rep struct {
						Job    string         `json:"job"`
						Counts map[string]int `json:"counts"`
					}
					out := r.invoke(t, raw)
					if err := json.Unmarshal(out, &rep); err != nil || rep.Job != want.Job {
						t.Errorf("%s: answer %s, want a report for job %q\nlogs:\n%s", name, out, want.Job, r.logs)
					}
				}
			}
		})
	}
}

// checkGraphSubs invokes the Graph subscriptions function with one of its events: an HTTP API
// request (the lifecycle route: a validation handshake is answered with its token) or its
// schedule's input (a run report; the template configures no mailbox, so it keeps none).
func checkGraphSubs(t *testing.T, r *rie, name string, raw []byte) {
	t.Helper()
	var req events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(raw, &req); err == nil && req.RequestContext.HTTP.Method != "" {
		var resp events.APIGatewayV2HTTPResponse
		if err := json.Unmarshal(r.invoke(t, raw), &resp); err != nil {
			t.Fatalf("%s: answer is not an HTTP API response: %v", name, err)
		}
		if tok := req.QueryStringParameters["validationToken"]; resp.StatusCode != 200 || resp.Body != tok {
			t.Errorf("%s: status %d body %q, want 200 and the validation token %q\nlogs:\n%s", name, resp.StatusCode, resp.Body, tok, r.logs)
		}
		return
	}
	var rep struct {
		Subscriptions []json.RawMessage `json:"subscriptions"`
		Errors        *int              `json:"errors"`
	}
	out := r.invoke(t, raw)
	if err := json.Unmarshal(out, &rep); err != nil || rep.Errors == nil || *rep.Errors != 0 {
		t.Errorf("%s: answer %s, want a run report without errors\nlogs:\n%s", name, out, r.logs)
	}
}
