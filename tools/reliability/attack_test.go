package reliability

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
	"github.com/crmsync/crmsync/shared/connector/twilio"
	"github.com/crmsync/crmsync/tools/loadgen"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/samples"
)

// attackStack is a local stack whose queue nobody consumes, with webhook secret caches of 1 s.
type attackStack struct {
	t       *testing.T
	d       *localcloud.Dev
	base    string
	secrets map[string]connector.Secret
	rnd     *rand.Rand
	sqs     *sqs.Client
	queue   string
}

func startAttackStack(t *testing.T) *attackStack {
	t.Helper()
	d, err := localcloud.Start(context.Background(), localcloud.Config{
		TemplatePath: "../../template.yaml", Endpoint: moto.ForTest(t), HTTPAddr: "127.0.0.1:0",
		DevSecretsPath: "../../config/dev-secrets.json", FixturesDir: "../../events/vendor",
		StackName: fmt.Sprintf("atk%d", time.Now().UnixNano()%1e9), Factory: Factory(nil, time.Second),
		Out: io.Discard, NoSchedules: true, NoEventSources: true, Alarms: localcloud.AlarmOptions{Disabled: true},
	})
	if err != nil {
		t.Fatalf("start local stack: %v", err)
	}
	t.Cleanup(d.Close)
	secrets, err := samples.DevSecrets("../../config/dev-secrets.json")
	if err != nil {
		t.Fatal(err)
	}
	return &attackStack{t: t, d: d, base: "http://" + d.Addr, secrets: secrets, rnd: rand.New(rand.NewPCG(1, 2)),
		sqs: sqs.NewFromConfig(d.AWS), queue: d.Stack.Physical["IngestQueue"].Ref}
}

// delivery is an authentic delivery of the connector's sample payload.
func (s *attackStack) delivery(name string) *loadgen.Delivery {
	s.t.Helper()
	p := samples.Payloads[name]
	body, err := os.ReadFile(filepath.Join("../../events/payloads", p.File))
	if err != nil {
		s.t.Fatal(err)
	}
	return &loadgen.Delivery{Connector: name, Body: body, ContentType: p.ContentType}
}

// signed is the delivery signed at now with sec (the connector's current secret when sec is nil).
func (s *attackStack) signed(name string, now time.Time, sec *connector.Secret) *connector.Request {
	s.t.Helper()
	use := s.secrets[name]
	if sec != nil {
		use = *sec
	}
	req, err := loadgen.Sign(s.delivery(name), s.base, use, now, s.rnd)
	if err != nil {
		s.t.Fatal(err)
	}
	return req
}

func (s *attackStack) send(method string, req *connector.Request) (int, string) {
	s.t.Helper()
	u := s.base + req.Path
	if req.RawQuery != "" {
		u += "?" + req.RawQuery
	}
	hr, err := http.NewRequest(method, u, bytes.NewReader(req.Body))
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// depth is how many messages the ingest queue holds (visible or not).
func (s *attackStack) depth() int {
	s.t.Helper()
	out, err := s.sqs.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(s.queue),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		s.t.Fatal(err)
	}
	n := 0
	for _, v := range out.Attributes {
		x, _ := strconv.Atoi(v)
		n += x
	}
	return n
}

// drain deletes every message on the queue.
func (s *attackStack) drain() {
	s.t.Helper()
	for {
		out, err := s.sqs.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(s.queue), MaxNumberOfMessages: 10})
		if err != nil {
			s.t.Fatal(err)
		}
		if len(out.Messages) == 0 {
			return
		}
		for _, m := range out.Messages {
			if _, err := s.sqs.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(s.queue), ReceiptHandle: m.ReceiptHandle}); err != nil {
				s.t.Fatal(err)
			}
		}
	}
}

func (s *attackStack) quarantined() int {
	s.t.Helper()
	out, err := s3.NewFromConfig(s.d.AWS, func(o *s3.Options) { o.UsePathStyle = true }).ListObjectsV2(context.Background(),
		&s3.ListObjectsV2Input{Bucket: aws.String(s.d.Stack.Physical["QuarantineBucket"].Ref)})
	if err != nil {
		s.t.Fatal(err)
	}
	return int(aws.ToInt32(out.KeyCount))
}

// The signature of each connector, where it lives and how to forge one with the wrong algorithm.
var sigHeader = map[string]string{
	"twilio": "x-twilio-signature", "calendly": "calendly-webhook-signature", "typeform": "typeform-signature",
	"meta-leads": "x-hub-signature-256", "generic": "webhook-signature",
}

func sha1mac(key, msg []byte) []byte {
	m := hmac.New(sha1.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

func sha256mac(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// bodySignature edits the signature object inside a Mailgun body, or the clientState of a Graph one.
func bodySignature(t *testing.T, name string, body []byte, edit func(sig string) (string, bool)) []byte {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Fatal(err)
	}
	switch name {
	case "mailgun":
		sig := obj["signature"].(map[string]any)
		if v, keep := edit(sig["signature"].(string)); keep {
			sig["signature"] = v
		} else {
			delete(obj, "signature")
		}
	case "msgraph":
		for _, it := range obj["value"].([]any) {
			n := it.(map[string]any)
			if v, keep := edit(n["clientState"].(string)); keep {
				n["clientState"] = v
			} else {
				delete(n, "clientState")
			}
		}
	}
	b, _ := json.Marshal(obj)
	return b
}

// editSig changes a delivery's signature wherever its connector keeps it; keep=false removes it.
func editSig(t *testing.T, name string, req *connector.Request, edit func(sig string) (string, bool)) {
	t.Helper()
	if h, ok := sigHeader[name]; ok {
		v, keep := edit(req.Headers[h])
		if keep {
			req.Headers[h] = v
		} else {
			delete(req.Headers, h)
			delete(req.Headers, "x-hub-signature")
		}
		return
	}
	req.Body = bodySignature(t, name, req.Body, edit)
}

// wrongAlgorithm re-signs the delivery as its vendor would, but with another hash: SHA-256 where
// the scheme is SHA-1 (Twilio), SHA-1 everywhere else.
func wrongAlgorithm(t *testing.T, name string, req *connector.Request, sec connector.Secret) {
	t.Helper()
	switch name {
	case "twilio":
		// HMAC-SHA256 over exactly what Twilio signs with HMAC-SHA1.
		params, _ := url.ParseQuery(string(req.Body))
		msg := req.PublicURL + twilio.SortedParams(params)
		req.Headers["x-twilio-signature"] = base64.StdEncoding.EncodeToString(sha256mac([]byte(sec.Get("auth_token")), []byte(msg)))
	case "calendly":
		ts := strings.TrimPrefix(strings.Split(req.Headers["calendly-webhook-signature"], ",")[0], "t=")
		req.Headers["calendly-webhook-signature"] = "t=" + ts + ",v1=" + hex.EncodeToString(sha1mac([]byte(sec.Get("signing_key")), []byte(ts+"."+string(req.Body))))
	case "typeform":
		req.Headers["typeform-signature"] = "sha1=" + base64.StdEncoding.EncodeToString(sha1mac([]byte(sec.Get("signing_key")), req.Body))
	case "meta-leads":
		req.Headers["x-hub-signature-256"] = "sha1=" + hex.EncodeToString(sha1mac([]byte(sec.Get("app_secret")), req.Body))
		delete(req.Headers, "x-hub-signature")
	case "generic":
		key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sec.Get("signing_key"), "whsec_"))
		msg := req.Headers["webhook-id"] + "." + req.Headers["webhook-timestamp"] + "." + string(req.Body)
		req.Headers["webhook-signature"] = "v1," + base64.StdEncoding.EncodeToString(sha1mac(key, []byte(msg)))
	case "mailgun":
		var obj struct {
			Signature map[string]string `json:"signature"`
		}
		_ = json.Unmarshal(req.Body, &obj)
		forged := hex.EncodeToString(sha1mac([]byte(sec.Get("signing_key")), []byte(obj.Signature["timestamp"]+obj.Signature["token"])))
		req.Body = bodySignature(t, name, req.Body, func(string) (string, bool) { return forged, true })
	case "msgraph":
		// clientState is a shared token, not a MAC: the nearest thing is a token hashed instead.
		sum := sha256.Sum256([]byte(sec.Get("client_state")))
		req.Body = bodySignature(t, name, req.Body, func(string) (string, bool) { return hex.EncodeToString(sum[:]), true })
	}
}

// hostile replaces the body with hostile bytes; the signature (left as it was) no longer matches,
// and where the signature lives inside the body, the body is no longer a signed object.
func hostile(body []byte) func(*connector.Request) {
	return func(r *connector.Request) { r.Body = body }
}

func deeplyNested(depth int) []byte {
	return []byte(strings.Repeat(`{"a":[`, depth) + "1" + strings.Repeat("]}", depth))
}

func hugeArray(n int) []byte {
	return []byte(`{"value":[` + strings.TrimSuffix(strings.Repeat(`{"x":1},`, n), ",") + `]}`)
}

var invalidUTF8 = []byte("{\"event\":\"\xff\xfe\xfd\",\"payload\":{\"email\":\"\xc3\x28@example.com\"}}")

// Every route refuses every attack with the right status and enqueues nothing (and stores nothing).
func TestAttackTable(t *testing.T) {
	s := startAttackStack(t)
	now := time.Now()
	type row struct {
		name string
		want int
		make func() (string, *connector.Request) // method and request
	}
	var rows []row
	for _, name := range registry.Names() {
		name := name
		sec := s.secrets[name]
		post := func(mut func(*connector.Request)) func() (string, *connector.Request) {
			return func() (string, *connector.Request) {
				r := s.signed(name, now, nil)
				mut(r)
				return http.MethodPost, r
			}
		}
		rows = append(rows,
			row{name + ": missing signature", 401, post(func(r *connector.Request) {
				editSig(t, name, r, func(string) (string, bool) { return "", false })
			})},
			row{name + ": empty signature", 401, post(func(r *connector.Request) {
				editSig(t, name, r, func(string) (string, bool) { return "", true })
			})},
			row{name + ": truncated signature", 401, post(func(r *connector.Request) {
				editSig(t, name, r, func(v string) (string, bool) { return v[:len(v)/2], true })
			})},
			row{name + ": wrong algorithm", 401, post(func(r *connector.Request) { wrongAlgorithm(t, name, r, sec) })},
			row{name + ": oversized body (1 MiB + 1)", 413, post(func(r *connector.Request) {
				r.Body = bytes.Repeat([]byte("x"), 1<<20+1)
			})},
			row{name + ": wrong content type", 415, post(func(r *connector.Request) { r.Headers["content-type"] = "text/plain" })},
			row{name + ": no content type", 415, post(func(r *connector.Request) { delete(r.Headers, "content-type") })},
			row{name + ": invalid UTF-8", 401, post(hostile(invalidUTF8))},
			row{name + ": deeply nested JSON (50,000 levels)", 401, post(hostile(deeplyNested(50000)))},
			row{name + ": huge array (100,000 elements)", 401, post(hostile(hugeArray(100000)))},
		)
		if name != "meta-leads" && name != "msgraph" { // their handshakes are answered
			// The template routes only POST: API Gateway has no route for a GET.
			rows = append(rows, row{name + ": wrong method (GET)", 404, func() (string, *connector.Request) {
				return http.MethodGet, s.signed(name, now, nil)
			}})
		}
		switch name {
		case "calendly", "mailgun", "generic": // schemes with a signed timestamp
			rows = append(rows,
				row{name + ": stale timestamp (10 min old)", 401, func() (string, *connector.Request) {
					return http.MethodPost, s.signed(name, now.Add(-10*time.Minute), nil)
				}},
				row{name + ": future timestamp (10 min ahead)", 401, func() (string, *connector.Request) {
					return http.MethodPost, s.signed(name, now.Add(10*time.Minute), nil)
				}})
		}
	}
	rows = append(rows, row{"meta-leads: handshake with a wrong verify token", 403, func() (string, *connector.Request) {
		return http.MethodGet, &connector.Request{Path: "/webhooks/meta-leads", RawQuery: "hub.mode=subscribe&hub.challenge=42&hub.verify_token=guess",
			Headers: map[string]string{}}
	}})

	// POST /crm/changes is IAM-authorized: API Gateway refuses unsigned calls; signed ones still
	// meet the function's own checks.
	iam := map[string]string{"authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261101/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=0",
		"content-type": "application/json"}
	crm := func(body []byte, headers map[string]string) func() (string, *connector.Request) {
		return func() (string, *connector.Request) {
			h := map[string]string{}
			for k, v := range headers {
				h[k] = v
			}
			return http.MethodPost, &connector.Request{Path: "/crm/changes", Headers: h, Body: body}
		}
	}
	change := []byte(`{"change_id":"atk-1","contact":{"email":"ada@example.com"},"actor":{"email":"eve@example.com","role":"admin"},"fields":{"phone":"+14155550199"}}`)
	noAuth := map[string]string{"content-type": "application/json"}
	textPlain := map[string]string{"authorization": iam["authorization"], "content-type": "text/plain"}
	rows = append(rows,
		row{"crm changes: no SigV4 signature", 403, crm(change, noAuth)},
		row{"crm changes: wrong content type", 415, crm(change, textPlain)},
		row{"crm changes: oversized body (64 KiB + 1)", 413, crm(bytes.Repeat([]byte(" "), 64<<10+1), iam)},
		row{"crm changes: invalid UTF-8", 400, crm(invalidUTF8, iam)},
		row{"crm changes: deeply nested JSON", 400, crm(deeplyNested(5000), iam)},
		row{"crm changes: huge array", 400, crm(hugeArray(5000), iam)},
	)

	q0 := s.quarantined()
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			method, req := r.make()
			status, body := s.send(method, req)
			if status != r.want {
				t.Errorf("status %d %s, want %d", status, strings.TrimSpace(body), r.want)
			}
			if n := s.depth(); n != 0 {
				t.Errorf("%d message(s) enqueued, want none", n)
				s.drain()
			}
		})
	}
	if q := s.quarantined(); q != q0 {
		t.Errorf("attacks left %d quarantined payload(s), want none", q-q0)
	}

	// A Mailgun token is admitted for one body: Mailgun does not sign the event body, so a replay
	// is the signature with another body, and it is refused. The same signed delivery again is
	// Mailgun's own retry (e.g. after a 5xx): accepted (SQS and the ledger deduplicate it).
	t.Run("mailgun: replayed token", func(t *testing.T) {
		req := s.signed("mailgun", time.Now(), nil)
		if status, body := s.send(http.MethodPost, req); status != 200 {
			t.Fatalf("first delivery = %d %s, want 200", status, body)
		}
		s.drain()
		if status, body := s.send(http.MethodPost, req); status != 200 {
			t.Errorf("the vendor's retry of the same delivery = %d %s, want 200", status, body)
		}
		// SQS drops the resend within its deduplication window (moto may not, once the first
		// message was deleted); either way the ledger applies the event once.
		s.drain()
		forged := *req
		forged.Body = bytes.Replace(req.Body, []byte(`"event-data"`), []byte(`"event-data" `), 1)
		if bytes.Equal(forged.Body, req.Body) {
			t.Fatal("mailgun delivery has no event-data member to alter")
		}
		if status, body := s.send(http.MethodPost, &forged); status != 401 {
			t.Errorf("replayed token with another body = %d %s, want 401", status, body)
		}
		if n := s.depth(); n != 0 {
			t.Errorf("the replay enqueued %d message(s)", n)
			s.drain()
		}
	})

	// Rotation: while the previous secret is configured it still verifies; once it is removed
	// (Secrets Manager PutSecretValue, seen after the webhooks' 1 s cache TTL) it does not.
	sm := secretsmanager.NewFromConfig(s.d.AWS)
	put := func(name string, sec connector.Secret) {
		for id, conn := range samples.SecretConnectors {
			if conn != name {
				continue
			}
			b, _ := json.Marshal(sec)
			if _, err := sm.PutSecretValue(context.Background(), &secretsmanager.PutSecretValueInput{
				SecretId: aws.String(s.d.Stack.Physical[id].Ref), SecretString: aws.String(string(b))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range registry.Names() {
		sec := s.secrets[name]
		if len(sec.Previous) == 0 {
			t.Fatalf("%s: the dev secret has no previous value to rotate out", name)
		}
		put(name, connector.Secret{Current: sec.Current}) // the previous value is gone
	}
	time.Sleep(1500 * time.Millisecond) // past the webhooks' secret cache TTL
	for _, name := range registry.Names() {
		t.Run(name+": signed with the previous secret after its removal", func(t *testing.T) {
			prev := connector.Secret{Current: s.secrets[name].Previous}
			status, body := s.send(http.MethodPost, s.signed(name, time.Now(), &prev))
			if status != 401 {
				t.Errorf("status %d %s, want 401", status, body)
			}
			if n := s.depth(); n != 0 {
				t.Errorf("%d message(s) enqueued, want none", n)
				s.drain()
			}
			// The current secret still works.
			if status, body := s.send(http.MethodPost, s.signed(name, time.Now(), nil)); status/100 != 2 {
				t.Errorf("current secret after the rotation = %d %s, want 2xx", status, body)
			}
			s.drain()
		})
	}
}
