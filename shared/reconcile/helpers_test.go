package reconcile_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/reconcile"
	"github.com/crmsync/crmsync/shared/wiring"
	wiredreconcile "github.com/crmsync/crmsync/shared/wiring/reconcile"
	wiredworker "github.com/crmsync/crmsync/shared/wiring/worker"
	"github.com/crmsync/crmsync/shared/worker"
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

const root = "../.."

// fixtureWindow covers the vendor fixtures of events/vendor (11 March 2025).
var (
	fixtureSince = time.Date(2025, 3, 11, 0, 0, 0, 0, time.UTC)
	fixtureUntil = fixtureSince.Add(24 * time.Hour)
)

// syncBuffer collects EMF lines written concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// metric returns the values a metric took with the given dimension.
func (s *syncBuffer) metric(name, dim, val string) []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []float64
	for _, line := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		for _, d := range emf.Parse(line) {
			if d.Name == name && d.Dimensions[dim] == val && len(d.Dimensions) == 1 {
				out = append(out, d.Value)
			}
		}
	}
	return out
}

// stack is a provisioned stack with the vendor fakes, a worker and a reconcile runner.
type stack struct {
	t       *testing.T
	st      *localcloud.Stack
	ddb     *dynamodb.Client
	sqs     *sqs.Client
	worker  *worker.Worker
	runner  *reconcile.Runner
	metrics *syncBuffer
	secrets map[string]connector.Secret
	env     map[string]string
	aws     aws.Config
}

// newStack provisions template.yaml on moto; the runner's clock is now + ahead (parity skips
// records changed within the last minute).
func newStack(t *testing.T, ahead time.Duration) *stack {
	t.Helper()
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("r%d-%s", time.Now().UnixNano()%1e9, strings.ToLower(t.Name()))
	if len(name) > 28 {
		name = name[:28]
	}
	tmpl, err := samtemplate.Load(filepath.Join(root, "template.yaml"), samtemplate.Options{StackName: name, AccountID: localcloud.AccountID})
	if err != nil {
		t.Fatal(err)
	}
	devSecrets, err := localcloud.LoadDevSecrets(filepath.Join(root, "config", "dev-secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := localcloud.Provision(ctx, cfg, tmpl, localcloud.ProvisionOptions{StackName: name, DevSecrets: devSecrets})
	if err != nil {
		t.Fatal(err)
	}
	fakes := httptest.NewServer(&localcloud.VendorFakes{Dir: filepath.Join(root, "events", "vendor")})
	t.Cleanup(fakes.Close)
	env := map[string]string{}
	for k, v := range st.Functions["ReconcileParityFunction"].Env {
		env[k] = v
	}
	for k, prefix := range localcloud.BaseURLEnv {
		if _, ok := env[k]; ok {
			env[k] = fakes.URL + "/" + prefix
		}
	}
	secrets, err := samples.DevSecrets(filepath.Join(root, "config", "dev-secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, st: st, ddb: dynamodb.NewFromConfig(cfg), sqs: sqs.NewFromConfig(cfg), metrics: &syncBuffer{}, secrets: secrets, env: env, aws: cfg}
	getenv := func(k string) string { return env[k] }
	if s.worker, err = wiredworker.New(wiring.Env{Getenv: getenv, AWS: cfg}); err != nil {
		t.Fatal(err)
	}
	if s.runner, err = wiredreconcile.New(wiring.Env{Getenv: getenv, AWS: cfg, Stdout: s.metrics,
		Now: func() time.Time { return time.Now().Add(ahead) }}); err != nil {
		t.Fatal(err)
	}
	return s
}

// parse maps a sample payload (events/payloads/<file>, possibly edited) as its webhook would.
func (s *stack) parse(name string, body []byte, contentType string) []canonical.Event {
	s.t.Helper()
	c, err := registry.New(name)
	if err != nil {
		s.t.Fatal(err)
	}
	p, err := c.Parse(&connector.Request{Method: "POST", Body: body, Headers: map[string]string{"content-type": contentType},
		ReceivedAt: time.Now().UTC()}, s.secrets[name])
	if err != nil {
		s.t.Fatalf("parse %s: %v", name, err)
	}
	for i := range p.Events {
		p.Events[i].ReceivedAt = time.Now().UTC()
	}
	return p.Events
}

func sample(t *testing.T, name string) ([]byte, string) {
	t.Helper()
	p := samples.Payloads[name]
	b, err := os.ReadFile(filepath.Join(root, "events", "payloads", p.File))
	if err != nil {
		t.Fatal(err)
	}
	return b, p.ContentType
}

// deliver applies a connector's sample payload as if its webhook had been delivered.
func (s *stack) deliver(name string) []canonical.Event {
	s.t.Helper()
	body, ct := sample(s.t, name)
	evs := s.parse(name, body, ct)
	for i := range evs {
		s.apply(&evs[i])
	}
	return evs
}

func (s *stack) apply(ev *canonical.Event) worker.Result {
	s.t.Helper()
	res, err := s.worker.Apply(context.Background(), ev)
	if err != nil {
		s.t.Fatalf("apply %s: %v", ev.Key, err)
	}
	return res
}

// drain applies every message on the ingest queue with the worker, as the event source
// mapping would, and returns their keys.
func (s *stack) drain() []string {
	s.t.Helper()
	ctx := context.Background()
	url := s.st.Physical["IngestQueue"].Ref
	var keys []string
	for empty := 0; empty < 2; {
		out, err := s.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10, VisibilityTimeout: 30})
		if err != nil {
			s.t.Fatal(err)
		}
		if len(out.Messages) == 0 {
			empty++
			continue
		}
		for _, m := range out.Messages {
			res, err := s.worker.ApplyBody(ctx, []byte(aws.ToString(m.Body)))
			if err != nil {
				s.t.Fatalf("apply queued %s: %v", res.Key, err)
			}
			keys = append(keys, res.Key)
			if _, err := s.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
				s.t.Fatal(err)
			}
		}
	}
	return keys
}

func (s *stack) run(req reconcile.Request) reconcile.Report {
	s.t.Helper()
	rep, err := s.runner.Run(context.Background(), req)
	if err != nil {
		s.t.Fatalf("reconcile %s: %v", req.Job, err)
	}
	return rep
}

func (s *stack) contact(email string) *worker.ContactView {
	s.t.Helper()
	v, err := s.worker.GetContact(context.Background(), worker.ContactQuery{Email: email})
	if err != nil {
		s.t.Fatalf("contact %s: %v", email, err)
	}
	return v
}
