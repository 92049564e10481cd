package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samples"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

// testStack is a local stack for one test, on a free port, with its own resource names.
type testStack struct {
	*localcloud.Dev
	t       *testing.T
	secrets map[string]connector.Secret
	logs    *bytes.Buffer
}

func startStack(t *testing.T, withWorker bool) *testStack {
	t.Helper()
	return startStackWith(t, withWorker, fnbuild.Factory)
}

// startStackWith is startStack with the functions built by factory.
func startStackWith(t *testing.T, withWorker bool, factory localcloud.Factory) *testStack {
	t.Helper()
	logs := &bytes.Buffer{}
	name := fmt.Sprintf("e2e%d", time.Now().UnixNano()%1e10)
	endpoint := moto.ForTest(t)
	if withWorker {
		// The worker runs DynamoDB transactions concurrently: moto needs them one at a time to
		// keep them atomic and isolated (see moto.Serializer).
		endpoint = moto.SerializedForTest(t)
	}
	d, err := localcloud.Start(context.Background(), localcloud.Config{
		TemplatePath: "../../template.yaml", Endpoint: endpoint, HTTPAddr: "127.0.0.1:0",
		DevSecretsPath: "../../config/dev-secrets.json", FixturesDir: "../../events/vendor", StackName: name,
		Factory: factory, Out: logs, NoSchedules: true, NoEventSources: !withWorker,
	})
	if err != nil {
		t.Fatalf("start local stack: %v", err)
	}
	t.Cleanup(d.Close)
	secrets, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	return &testStack{Dev: d, t: t, secrets: secrets, logs: logs}
}

func (s *testStack) publicBase() string { return "http://" + s.Addr }

// sample builds a freshly signed delivery of a connector's sample payload for this stack.
func (s *testStack) sample(name string) events.APIGatewayV2HTTPRequest {
	s.t.Helper()
	p := samples.Payloads[name]
	body, err := os.ReadFile(filepath.Join("../../events/payloads", p.File))
	if err != nil {
		s.t.Fatal(err)
	}
	return s.signed(name, body, p.ContentType)
}

func (s *testStack) signed(name string, body []byte, contentType string) events.APIGatewayV2HTTPRequest {
	s.t.Helper()
	ev, err := samples.WebhookEvent(name, body, contentType, s.publicBase(), s.secrets[name], time.Now())
	if err != nil {
		s.t.Fatalf("sign %s: %v", name, err)
	}
	return ev
}

// post sends an API Gateway event's request over real HTTP to the local stack.
func (s *testStack) post(ev events.APIGatewayV2HTTPRequest) (int, string) {
	s.t.Helper()
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			s.t.Fatal(err)
		}
		body = b
	}
	u := s.publicBase() + ev.RawPath
	if ev.RawQueryString != "" {
		u += "?" + ev.RawQueryString
	}
	method := ev.RequestContext.HTTP.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range ev.Headers {
		if k == "host" || k == "content-length" || strings.HasPrefix(k, "x-forwarded-") {
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// drain receives and deletes every message on the ingest queue, returning the decoded events.
func (s *testStack) drain() []canonical.Event {
	s.t.Helper()
	ctx := context.Background()
	client := sqs.NewFromConfig(s.AWS)
	url := s.Stack.Physical["IngestQueue"].Ref
	var out []canonical.Event
	for empty := 0; empty < 2; {
		r, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10,
			VisibilityTimeout: 30, WaitTimeSeconds: 0})
		if err != nil {
			s.t.Fatal(err)
		}
		if len(r.Messages) == 0 {
			empty++
			continue
		}
		for _, m := range r.Messages {
			ev, err := canonical.Unmarshal([]byte(aws.ToString(m.Body)))
			if err != nil {
				s.t.Fatalf("queued message is not a canonical event: %v", err)
			}
			out = append(out, *ev)
			if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
				s.t.Fatal(err)
			}
		}
	}
	return out
}

func keysOf(evs []canonical.Event) []string {
	var ks []string
	for _, e := range evs {
		ks = append(ks, e.Key)
	}
	sort.Strings(ks)
	return ks
}

func (s *testStack) quarantined() []string {
	s.t.Helper()
	out, err := s3.NewFromConfig(s.AWS, func(o *s3.Options) { o.UsePathStyle = true }).ListObjectsV2(context.Background(),
		&s3.ListObjectsV2Input{Bucket: aws.String(s.Stack.Physical["QuarantineBucket"].Ref)})
	if err != nil {
		s.t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}
