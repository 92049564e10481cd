package graphsub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/emf"
	"github.com/crmsync/crmsync/shared/graphauth"
	"github.com/crmsync/crmsync/shared/graphsub"
	"github.com/crmsync/crmsync/shared/secrets"
	"github.com/crmsync/crmsync/shared/wiring"
	wiredgraphsubs "github.com/crmsync/crmsync/shared/wiring/graphsubs"
	wiredworker "github.com/crmsync/crmsync/shared/wiring/worker"
	"github.com/crmsync/crmsync/shared/worker"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

const root = "../.."

// The fixtures' mailbox (events/vendor/msgraph/users/sam.rivera@example.net.json), its Graph user
// id, and the app registered with the fake's token endpoint (events/vendor/msgraph-login).
const (
	mailbox     = "sam.rivera@example.net"
	userID      = "3f0b6c2e-8d4a-4e71-b5c9-2a7d1e9f4b60"
	tenant      = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
	clientState = "dev-msgraph-client-state-current"
	msgA        = "AAMkADM0ZGRhMjdjLTA5NjUtNGMzYi1iNzM1LTk5NmJmYzk4NzVlMABGAAAAAADG8oR0pIpVQq3nAnj6_dKpBwCpOqNkdDOZSLNdY9hRCD-VAAAAAAEMAACpOqNkdDOZSLNdY9hRCD-VAAAP5FgRAAA="
	msgB        = "AAMkADM0ZGRhMjdjLTA5NjUtNGMzYi1iNzM1LTk5NmJmYzk4NzVlMABGAAAAAADG8oR0pIpVQq3nAnj6_dKpBwCpOqNkdDOZSLNdY9hRCD-VAAAAAAEMAACpOqNkdDOZSLNdY9hRCD-VAAAP5FgSAAA="
	msgOld      = "AAMkADM0ZGRhMjdjLTA5NjUtNGMzYi1iNzM1LTk5NmJmYzk4NzVlMABGAAAAAADG8oR0pIpVQq3nAnj6_dKpBwCpOqNkdDOZSLNdY9hRCD-VAAAAAAEMAACpOqNkdDOZSLNdY9hRCD-VAAAP5FgQAAA="
)

// syncBuffer collects log and EMF lines written concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// last returns a metric's last value.
func (s *syncBuffer) last(name string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := 0.0, false
	for _, line := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		for _, d := range emf.Parse(line) {
			if d.Name == name {
				v, ok = d.Value, true
			}
		}
	}
	return v, ok
}

// stack is the local stack (moto, the vendor fakes, every function of template.yaml served over
// HTTP) with a manager built by the function's own wiring, on a clock the test moves.
type stack struct {
	t       *testing.T
	d       *localcloud.Dev
	base    string
	ddb     *dynamodb.Client
	sqs     *sqs.Client
	mgr     *graphsub.Manager
	worker  *worker.Worker
	graph   *graphauth.Source // the test's own view of Graph (same app)
	ahead   atomic.Int64
	metrics *syncBuffer
	logs    *syncBuffer
	env     map[string]string
}

// newStack starts the local stack; env overrides the function's environment.
func newStack(t *testing.T, env map[string]string) *stack {
	t.Helper()
	ctx := context.Background()
	logs := &syncBuffer{}
	d, err := localcloud.Start(ctx, localcloud.Config{
		TemplatePath: filepath.Join(root, "template.yaml"), Endpoint: moto.ForTest(t), HTTPAddr: "127.0.0.1:0",
		DevSecretsPath: filepath.Join(root, "config", "dev-secrets.json"), FixturesDir: filepath.Join(root, "events", "vendor"),
		StackName: fmt.Sprintf("gs%d", time.Now().UnixNano()%1e9), Factory: fnbuild.Factory, Out: logs,
		NoSchedules: true, NoEventSources: true,
	})
	if err != nil {
		t.Fatalf("start local stack: %v", err)
	}
	t.Cleanup(d.Close)
	s := &stack{t: t, d: d, base: "http://" + d.Addr, ddb: dynamodb.NewFromConfig(d.AWS), sqs: sqs.NewFromConfig(d.AWS),
		metrics: &syncBuffer{}, logs: logs, env: map[string]string{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("local stack logs:\n%s", logs.String())
		}
	})
	for k, v := range d.Stack.Functions["GraphSubscriptionsFunction"].Env {
		s.env[k] = v
	}
	s.env["GRAPH_MAILBOXES"] = mailbox
	s.env["GRAPH_RESOURCES"] = "messages,events"
	s.env["MSGRAPH_SECRET_ID"] = s.appSecret()
	for k, v := range env {
		s.env[k] = v
	}
	s.mgr, err = wiredgraphsubs.New(wiring.Env{Getenv: func(k string) string { return s.env[k] }, AWS: d.AWS,
		Log: slog.New(slog.NewJSONHandler(logs, nil)), Stdout: s.metrics, Now: s.now})
	if err != nil {
		t.Fatal(err)
	}
	wenv := d.Stack.Functions["WorkerFunction"].Env
	if s.worker, err = wiredworker.New(wiring.Env{Getenv: func(k string) string { return wenv[k] }, AWS: d.AWS}); err != nil {
		t.Fatal(err)
	}
	cache := secrets.New(secretsmanager.NewFromConfig(d.AWS), time.Minute, nil)
	s.graph = graphauth.New(cache, s.env["MSGRAPH_SECRET_ID"], graphauth.Options{LoginBaseURL: s.env["MSGRAPH_LOGIN_BASE_URL"]})
	return s
}

// appSecret stores the msgraph secret with app credentials (the fake's registered app) beside
// the dev secret's client_state, and returns its id.
func (s *stack) appSecret() string {
	body, _ := json.Marshal(map[string]any{"current": map[string]string{"client_state": clientState, "tenant_id": tenant,
		"client_id": "6731de76-14a6-49ae-97bc-6eba6914391e", "client_secret": "dev-msgraph-client-secret"}})
	out, err := secretsmanager.NewFromConfig(s.d.AWS).CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name: aws.String(fmt.Sprintf("graphsub-test-%d", time.Now().UnixNano())), SecretString: aws.String(string(body))})
	if err != nil {
		s.t.Fatal(err)
	}
	return aws.ToString(out.ARN)
}

func (s *stack) now() time.Time { return time.Now().Add(time.Duration(s.ahead.Load())) }

func (s *stack) run() graphsub.Report {
	s.t.Helper()
	rep, err := s.mgr.Run(context.Background())
	if err != nil {
		s.t.Fatalf("run: %v", err)
	}
	return rep
}

func outcome(t *testing.T, rep graphsub.Report, resource string) graphsub.Outcome {
	t.Helper()
	for _, o := range rep.Subscriptions {
		if o.Key == graphsub.StateKey(mailbox, resource) {
			return o
		}
	}
	t.Fatalf("no outcome for %s in %+v", resource, rep)
	return graphsub.Outcome{}
}

func (s *stack) state(resource string) graphsub.State {
	s.t.Helper()
	states, err := s.mgr.List(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	for _, st := range states {
		if st.PK == graphsub.StateKey(mailbox, resource) {
			return st
		}
	}
	s.t.Fatalf("no state item for %s", resource)
	return graphsub.State{}
}

// post sends a JSON body to a route of the local HTTP API.
func (s *stack) post(path, body string) (int, string) {
	s.t.Helper()
	resp, err := http.Post(s.base+path, "application/json", strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// lifecycle posts a lifecycle notification as Graph would.
func (s *stack) lifecycle(subscriptionID, event, state string) int {
	s.t.Helper()
	st, _ := s.post("/webhooks/msgraph/lifecycle", fmt.Sprintf(`{"value":[{"subscriptionId":%q,"subscriptionExpirationDateTime":%q,`+
		`"tenantId":%q,"clientState":%q,"lifecycleEvent":%q}]}`, subscriptionID, s.now().Add(48*time.Hour).Format(time.RFC3339), tenant, state, event))
	return st
}

// graphDo calls the Graph fake as the app.
func (s *stack) graphDo(method, path string, body io.Reader, header http.Header) *http.Response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+"/_vendor/msgraph"+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.graph.Client(nil).Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp
}

// fakeSubscription returns Graph's view of a subscription (nil when it does not exist).
func (s *stack) fakeSubscription(id string) map[string]any {
	s.t.Helper()
	resp := s.graphDo(http.MethodGet, "/subscriptions/"+id, nil, nil)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var sub map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&sub); err != nil {
		s.t.Fatal(err)
	}
	return sub
}

// setFake sets what the vendor fake answers at a path (PUT; status 0 = 200).
func (s *stack) setFake(path string, status int, body string) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, s.base+"/_vendor"+path, strings.NewReader(body))
	if status != 0 {
		req.Header.Set(localcloud.FakeStatusHeader, fmt.Sprint(status))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
}

func (s *stack) clearFake(path string) {
	req, _ := http.NewRequest(http.MethodDelete, s.base+"/_vendor"+path, nil)
	req.Header.Set(localcloud.FakeResetHeader, "1")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// tokensIssued is how many tokens the fake's identity platform issued.
func (s *stack) tokensIssued() int {
	s.t.Helper()
	resp, err := http.Get(s.base + "/_vendor/msgraph-login/tokens")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var n struct{ Issued int }
	_ = json.NewDecoder(resp.Body).Decode(&n)
	return n.Issued
}

// queued receives and deletes every message on the ingest queue and returns their events.
func (s *stack) queued() []canonical.Event {
	s.t.Helper()
	ctx := context.Background()
	url := s.d.Stack.Physical["IngestQueue"].Ref
	var out []canonical.Event
	for empty := 0; empty < 2; {
		rec, err := s.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10, VisibilityTimeout: 30})
		if err != nil {
			s.t.Fatal(err)
		}
		if len(rec.Messages) == 0 {
			empty++
			continue
		}
		for _, m := range rec.Messages {
			ev, err := canonical.Unmarshal([]byte(aws.ToString(m.Body)))
			if err != nil {
				s.t.Fatal(err)
			}
			out = append(out, *ev)
			if _, err := s.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
				s.t.Fatal(err)
			}
		}
	}
	return out
}

// apply applies events with the worker, as the event source mapping would.
func (s *stack) apply(evs []canonical.Event) {
	s.t.Helper()
	for i := range evs {
		res, err := s.worker.Apply(context.Background(), &evs[i])
		if err != nil {
			s.t.Fatalf("apply %s: %v", evs[i].Key, err)
		}
		if res.Outcome != "APPLIED" {
			s.t.Fatalf("apply %s: outcome %s (%s), want APPLIED", evs[i].Key, res.Outcome, res.Reason)
		}
	}
}
