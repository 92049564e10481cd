package localcloud_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/dlq"
	"github.com/crmsync/crmsync/tools/alarms"
	"github.com/crmsync/crmsync/tools/fnbuild"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samples"
)

// lockedBuffer is the stack's log output, read while the stack writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The DLQ alarm rehearsed end to end on the local stack: a Meta notification whose hydration
// keeps failing (the Graph fake answers 500) is retried until SQS dead-letters it, the DLQ alarm
// goes to ALARM naming its runbook; once the fake is fixed and the DLQ redriven, the lead is
// applied and the alarm returns to OK.
func TestRehearseDLQAlarm(t *testing.T) {
	ctx := context.Background()
	tmpl := mutated(t, "VisibilityTimeout: 180", "VisibilityTimeout: 2", "maxReceiveCount: 5", "maxReceiveCount: 2")
	logs := &lockedBuffer{}
	d, err := localcloud.Start(ctx, localcloud.Config{
		TemplatePath: tmpl, Endpoint: moto.ForTest(t), HTTPAddr: "127.0.0.1:0",
		DevSecretsPath: "../../config/dev-secrets.json", FixturesDir: "../../events/vendor",
		StackName: fmt.Sprintf("rh%d", time.Now().UnixNano()%1e9), Factory: fnbuild.Factory, Out: logs, NoSchedules: true,
		// One CloudWatch minute is 2 seconds here, evaluated every half second.
		Alarms: localcloud.AlarmOptions{Scale: 1.0 / 30, Interval: 500 * time.Millisecond, Sample: 250 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("start local stack: %v", err)
	}
	defer d.Close()
	base := "http://" + d.Addr
	if st := alarmState(t, base, "dlq-not-empty"); st.Runbook != "docs/runbooks/dlq-not-empty.md" {
		t.Fatalf("dlq-not-empty = %+v", st)
	}

	// Meta Graph answers 500 for the sample's lead: hydration is a transient failure.
	const lead = "918273645501234"
	req, _ := http.NewRequest(http.MethodPut, base+"/_vendor/meta-graph/"+lead, strings.NewReader(`{"error":{"message":"boom","code":1}}`))
	req.Header.Set(localcloud.FakeStatusHeader, "500")
	mustDo(t, req, http.StatusNoContent)

	secrets, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile("../../events/payloads/meta-leads.json")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := samples.WebhookEvent("meta-leads", body, "application/json", base, secrets["meta-leads"], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	post(t, base, ev)

	st := waitState(t, base, "dlq-not-empty", alarms.Alarming, 90*time.Second)
	if !strings.Contains(st.Reason, "breaching") {
		t.Errorf("reason = %q", st.Reason)
	}
	waitLog(t, logs, `"to":"ALARM"`, `"runbook":"docs/runbooks/dlq-not-empty.md"`)

	// Fix the vendor, redrive the DLQ: the lead is applied and the alarm clears.
	req, _ = http.NewRequest(http.MethodDelete, base+"/_vendor/meta-graph/"+lead, nil)
	mustDo(t, req, http.StatusNoContent)
	res, err := dlq.Redrive(ctx, sqs.NewFromConfig(d.AWS), d.Stack.Physical["IngestDLQ"].Ref, d.Stack.Physical["IngestQueue"].Ref, dlq.Options{})
	if err != nil || res.Moved != 1 || res.Messages[0].Key != "meta-leads:"+lead {
		t.Fatalf("redrive: %+v, %v", res, err)
	}
	waitState(t, base, "dlq-not-empty", alarms.OK, 60*time.Second)
	waitLog(t, logs, `"from":"ALARM","to":"OK"`, `"runbook":"docs/runbooks/dlq-not-empty.md"`)

	ddb := dynamodb.NewFromConfig(d.AWS)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(d.Stack.Physical["LedgerTable"].Ref),
			Key: map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "meta-leads:" + lead}}, ConsistentRead: aws.Bool(true)})
		if err != nil {
			t.Fatal(err)
		}
		if o, ok := out.Item["outcome"].(*ddbtypes.AttributeValueMemberS); ok && o.Value == "APPLIED" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the redriven lead was not applied: %v", out.Item)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The worker's invocations are counted as AWS/Lambda metrics, the queues are sampled.
	var view localcloud.AlarmsView
	getJSON(t, base+"/_local/alarms", &view)
	if len(view.Alarms) < 20 || view.Scale != 1.0/30 || len(view.Transitions) == 0 {
		t.Errorf("view: %d alarms, scale %v, %d transitions", len(view.Alarms), view.Scale, len(view.Transitions))
	}
	for _, a := range view.Alarms {
		if a.Name == "worker-errors" && a.State != alarms.OK {
			t.Errorf("worker-errors = %+v (the worker reports failures per message, it never errors)", a)
		}
	}
}

func mutated(t *testing.T, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile("../../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("template.yaml no longer contains %q: update the test", repl[i])
		}
		s = strings.Replace(s, repl[i], repl[i+1], 1)
	}
	p := filepath.Join(t.TempDir(), "template.yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustDo(t *testing.T, req *http.Request, want int) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d", req.Method, req.URL, resp.StatusCode, want)
	}
}

func post(t *testing.T, base string, ev events.APIGatewayV2HTTPRequest) {
	t.Helper()
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(ev.Body); err != nil {
			t.Fatal(err)
		}
	}
	u := base + ev.RawPath
	if ev.RawQueryString != "" {
		u += "?" + ev.RawQueryString
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range ev.Headers {
		if k != "host" && k != "content-length" && !strings.HasPrefix(k, "x-forwarded-") {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s: %d %s", ev.RawPath, resp.StatusCode, b)
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func alarmState(t *testing.T, base, name string) alarms.Status {
	t.Helper()
	var view localcloud.AlarmsView
	getJSON(t, base+"/_local/alarms", &view)
	for _, a := range view.Alarms {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("no alarm %s in %+v", name, view.Alarms)
	return alarms.Status{}
}

func waitState(t *testing.T, base, name string, want alarms.State, within time.Duration) alarms.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := alarmState(t, base, name)
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed %s (%s), want %s", name, st.State, st.Reason, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitLog waits for one log line holding every fragment.
func waitLog(t *testing.T, logs *lockedBuffer, fragments ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, line := range strings.Split(logs.String(), "\n") {
			all := true
			for _, f := range fragments {
				all = all && strings.Contains(line, f)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q", fragments)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
