package awsproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/moto"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

// fixture is a proxy in front of moto with a table, a FIFO queue, a secret and a bucket, clients
// through the proxy (ddb, sqs, sm, s3) and straight to moto (ddbDirect, sqsDirect).
type fixture struct {
	t                            *testing.T
	proxy                        *Proxy
	endpoint, direct, name       string
	table, queue, secret, bucket string
	mu                           sync.Mutex
	observed                     []Exchange
	ddb, ddbDirect               *dynamodb.Client
	sqs, sqsDirect               *sqs.Client
	sm                           *secretsmanager.Client
	s3                           *s3.Client
}

func newFixture(t *testing.T, maxAttempts int, hold time.Duration) *fixture {
	t.Helper()
	f := &fixture{t: t, direct: moto.ForTest(t), name: fmt.Sprintf("px%d", time.Now().UnixNano()%1e9)}
	p, err := New(Config{Target: f.direct, Seed: 7, Hold: hold, Observe: func(e Exchange) {
		f.mu.Lock()
		f.observed = append(f.observed, e)
		f.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.proxy = p
	if f.endpoint, err = p.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ctx := context.Background()
	opts := []func(*config.LoadOptions) error{config.WithRetryMaxAttempts(maxAttempts)}
	cfg, err := awsclient.Load(ctx, f.endpoint, opts...)
	if err != nil {
		t.Fatal(err)
	}
	dcfg, err := awsclient.Load(ctx, f.direct)
	if err != nil {
		t.Fatal(err)
	}
	f.ddb, f.sqs, f.sm = dynamodb.NewFromConfig(cfg), sqs.NewFromConfig(cfg), secretsmanager.NewFromConfig(cfg)
	f.s3 = s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	f.ddbDirect, f.sqsDirect = dynamodb.NewFromConfig(dcfg), sqs.NewFromConfig(dcfg)

	// Resources are created through the proxy with no faults configured.
	f.table, f.bucket = f.name+"-t", f.name+"-b"
	if _, err := f.ddb.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(f.table), BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}}}); err != nil {
		t.Fatal(err)
	}
	q, err := f.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(f.name + ".fifo"),
		Attributes: map[string]string{"FifoQueue": "true", "VisibilityTimeout": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	f.queue = aws.ToString(q.QueueUrl)
	s, err := f.sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(f.name + "-s"), SecretString: aws.String(`{"current":{}}`)})
	if err != nil {
		t.Fatal(err)
	}
	f.secret = aws.ToString(s.ARN)
	if _, err := f.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(f.bucket)}); err != nil {
		t.Fatal(err)
	}
	return f
}

// call is one SDK call through the proxy, and how to tell that the endpoint applied it.
type call struct {
	api     string
	do      func(ctx context.Context, f *fixture, n int) error
	applied func(ctx context.Context, f *fixture, n int) bool // nil: the call changes nothing
}

func calls() []call {
	return []call{
		{api: "dynamodb.PutItem",
			do: func(ctx context.Context, f *fixture, n int) error {
				_, err := f.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(f.table), Item: item(fmt.Sprintf("put-%d", n))})
				return err
			},
			applied: func(ctx context.Context, f *fixture, n int) bool { return f.exists(ctx, fmt.Sprintf("put-%d", n)) }},
		{api: "dynamodb.GetItem",
			do: func(ctx context.Context, f *fixture, n int) error {
				_, err := f.ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(f.table), Key: item("absent"), ConsistentRead: aws.Bool(true)})
				return err
			}},
		{api: "dynamodb.TransactWriteItems",
			do: func(ctx context.Context, f *fixture, n int) error {
				_, err := f.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
					{Put: &ddbtypes.Put{TableName: aws.String(f.table), Item: item(fmt.Sprintf("tx-%d-a", n))}},
					{Put: &ddbtypes.Put{TableName: aws.String(f.table), Item: item(fmt.Sprintf("tx-%d-b", n))}},
					{Put: &ddbtypes.Put{TableName: aws.String(f.table), Item: item(fmt.Sprintf("tx-%d-c", n))}},
				}})
				return err
			},
			applied: func(ctx context.Context, f *fixture, n int) bool { return f.exists(ctx, fmt.Sprintf("tx-%d-b", n)) }},
		{api: "sqs.SendMessageBatch",
			do: func(ctx context.Context, f *fixture, n int) error {
				out, err := f.sqs.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(f.queue), Entries: []sqstypes.SendMessageBatchRequestEntry{
					{Id: aws.String("0"), MessageBody: aws.String(fmt.Sprintf("m-%d", n)), MessageGroupId: aws.String("g"),
						MessageDeduplicationId: aws.String(fmt.Sprintf("%s-%d", f.name, n))}}})
				if err == nil && len(out.Failed) > 0 {
					err = errors.New(aws.ToString(out.Failed[0].Code))
				}
				return err
			},
			applied: func(ctx context.Context, f *fixture, n int) bool { return f.drainHas(ctx, fmt.Sprintf("m-%d", n)) }},
		{api: "sqs.ReceiveMessage",
			do: func(ctx context.Context, f *fixture, n int) error {
				_, err := f.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(f.queue), WaitTimeSeconds: 0})
				return err
			}},
		{api: "secretsmanager.GetSecretValue",
			do: func(ctx context.Context, f *fixture, n int) error {
				_, err := f.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(f.secret)})
				return err
			}},
		{api: "s3.PutObject",
			do: func(ctx context.Context, f *fixture, n int) error {
				_, err := f.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(fmt.Sprintf("o-%d", n)),
					Body: strings.NewReader("x")})
				return err
			},
			applied: func(ctx context.Context, f *fixture, n int) bool {
				_, err := f.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(f.bucket), Key: aws.String(fmt.Sprintf("o-%d", n))})
				return err == nil
			}},
		{api: "s3.ListObjectsV2",
			do: func(ctx context.Context, f *fixture, n int) error {
				_, err := f.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(f.bucket)})
				return err
			}},
	}
}

func item(pk string) map[string]ddbtypes.AttributeValue {
	return map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: pk}}
}

func (f *fixture) exists(ctx context.Context, pk string) bool {
	out, err := f.ddbDirect.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(f.table), Key: item(pk), ConsistentRead: aws.Bool(true)})
	if err != nil {
		f.t.Fatal(err)
	}
	return len(out.Item) > 0
}

// drainHas receives every visible message of the queue directly and reports whether body was one.
func (f *fixture) drainHas(ctx context.Context, body string) bool {
	found := false
	for i := 0; i < 5; i++ {
		out, err := f.sqsDirect.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(f.queue), MaxNumberOfMessages: 10})
		if err != nil {
			f.t.Fatal(err)
		}
		if len(out.Messages) == 0 {
			break
		}
		for _, m := range out.Messages {
			found = found || aws.ToString(m.Body) == body
			if _, err := f.sqsDirect.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(f.queue), ReceiptHandle: m.ReceiptHandle}); err != nil {
				f.t.Fatal(err)
			}
		}
	}
	return found
}

var (
	retryable = retry.IsErrorRetryables(retry.DefaultRetryables)
	throttle  = retry.IsErrorThrottles(retry.DefaultThrottles)
)

// Every API the functions call is named, counted and forwarded unchanged without faults.
func TestClassifyAndCount(t *testing.T) {
	f := newFixture(t, 1, 0)
	ctx := context.Background()
	f.proxy.Reset()
	for i, c := range calls() {
		if err := c.do(ctx, f, i); err != nil {
			t.Fatalf("%s through the proxy without faults: %v", c.api, err)
		}
		if c.applied != nil && !c.applied(ctx, f, i) {
			t.Errorf("%s: not applied by the endpoint", c.api)
		}
	}
	got := f.proxy.Counts()
	for _, c := range calls() {
		if got[c.api] != 1 {
			t.Errorf("Counts()[%q] = %d, want 1 (counts: %v)", c.api, got[c.api], got)
		}
	}
	if n := Total(f.proxy.Faults()); n != 0 {
		t.Errorf("no rules, yet %d faults", n)
	}
	f.proxy.Reset()
	if n := Total(f.proxy.Counts()); n != 0 {
		t.Errorf("after Reset, %d requests counted", n)
	}
}

// Each fault kind, before and after forwarding, on each API it applies to: the SDK sees the
// error its service would send and classifies it as retryable (throttles as throttles); a fault
// after forwarding leaves the request applied, one before leaves it unapplied; with retries on,
// the SDK's own retry succeeds.
func TestFaultsAgainstMoto(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1, 100*time.Millisecond)
	fr := newFixture(t, 3, 100*time.Millisecond) // SDK retries on
	n := 100
	for _, kind := range Kinds {
		for _, phase := range []Phase{Before, After} {
			for _, c := range calls() {
				if kind == Conflict && c.api != "dynamodb.TransactWriteItems" {
					continue
				}
				name := fmt.Sprintf("%s/%s/%s", kind, phase, c.api)
				t.Run(name, func(t *testing.T) {
					n++
					rule := Rule{Kind: kind, Phase: phase, Rate: 1, APIs: []string{c.api}, Max: 1}
					if err := f.proxy.SetRules([]Rule{rule}); err != nil {
						t.Fatal(err)
					}
					f.proxy.Reset()
					err := c.do(ctx, f, n)
					if err == nil && kind == Timeout && strings.HasSuffix(c.api, ".ListObjectsV2") && f.proxy.Counts()[c.api] == 2 {
						// Go's transport itself re-sends an idempotent GET whose reused connection
						// was dropped before any answer.
						return
					}
					if err == nil {
						t.Fatalf("call succeeded despite a %s fault", kind)
					}
					if f.proxy.Faults()[string(kind)+"/"+string(phase)] != 1 {
						t.Errorf("Faults() = %v, want one %s/%s", f.proxy.Faults(), kind, phase)
					}
					if got := f.proxy.FaultsByAPI(); got[FaultKey(kind, phase, c.api)] != 1 || len(got) != 1 {
						t.Errorf("FaultsByAPI() = %v, want only %q: 1", got, FaultKey(kind, phase, c.api))
					}
					// A conflict is the application's to retry (re-read, re-decide), never the SDK's.
					if got, want := retryable.IsErrorRetryable(err) == aws.TrueTernary, kind != Conflict; got != want {
						t.Errorf("SDK classifies the %s fault as retryable = %v, want %v: %v", kind, got, want, err)
					}
					if kind == Throttle && throttle.IsErrorThrottle(err) != aws.TrueTernary {
						t.Errorf("SDK does not classify the throttle as a throttle: %v", err)
					}
					checkShape(t, c.api, kind, err)
					if c.applied != nil {
						if got, want := c.applied(ctx, f, n), phase == After; got != want {
							t.Errorf("applied by the endpoint = %v, want %v (phase %s)", got, want, phase)
						}
					}

					if kind == Conflict {
						return
					}
					if err := fr.proxy.SetRules([]Rule{rule}); err != nil {
						t.Fatal(err)
					}
					fr.proxy.Reset()
					n++
					if err := c.do(ctx, fr, n); err != nil {
						t.Errorf("with SDK retries the call should succeed after one fault: %v", err)
					}
					if got := fr.proxy.Counts()[c.api]; got != 2 {
						t.Errorf("with SDK retries: %d requests, want 2 (the faulted one and its retry)", got)
					}
				})
			}
		}
	}
}

// checkShape asserts the error the SDK decoded.
func checkShape(t *testing.T, api string, kind Kind, err error) {
	t.Helper()
	if kind == Timeout {
		return // a dropped connection has no shape
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Errorf("%s: not an API error: %v", kind, err)
		return
	}
	code := ae.ErrorCode()
	svc, _, _ := strings.Cut(api, ".")
	want := map[Kind]map[string][]string{
		Throttle: {"dynamodb": {"ProvisionedThroughputExceededException", "ThrottlingException"}, "sqs": {"RequestThrottled"},
			"secretsmanager": {"ThrottlingException"}, "s3": {"SlowDown"}},
		ServerError: {"dynamodb": {"InternalServerError"}, "sqs": {"InternalError"}, "secretsmanager": {"InternalServiceError"},
			"s3": {"InternalError"}},
		Conflict: {"dynamodb": {"TransactionCanceledException"}},
	}[kind][svc]
	ok := false
	for _, w := range want {
		ok = ok || code == w
	}
	if !ok {
		t.Errorf("%s on %s: error code %q, want one of %v", kind, api, code, want)
	}
	if kind == Conflict {
		var tce *ddbtypes.TransactionCanceledException
		if !errors.As(err, &tce) {
			t.Fatalf("conflict: not a TransactionCanceledException: %v", err)
		}
		conflicts := 0
		for _, r := range tce.CancellationReasons {
			if aws.ToString(r.Code) == "TransactionConflict" {
				conflicts++
			}
		}
		if len(tce.CancellationReasons) != 3 || conflicts != 1 {
			t.Errorf("conflict: reasons %d with %d TransactionConflict, want 3 with 1", len(tce.CancellationReasons), conflicts)
		}
	}
}

// A fault after forwarding is the nasty case for exactly-once: the transaction was applied, the
// client saw an error, and the SDK's retry of a conditioned transaction is canceled by its own
// first attempt. The proxy's observer sees the endpoint's real answers.
func TestAfterFaultRetryMeetsItsOwnWrite(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 3, 0)
	if err := f.proxy.SetRules([]Rule{{Kind: ServerError, Phase: After, Rate: 1, Max: 1, APIs: []string{"dynamodb.TransactWriteItems"}}}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.observed = nil
	f.mu.Unlock()
	_, err := f.ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
		{Put: &ddbtypes.Put{TableName: aws.String(f.table), Item: item("once"), ConditionExpression: aws.String("attribute_not_exists(pk)")}},
	}})
	var tce *ddbtypes.TransactionCanceledException
	if !errors.As(err, &tce) || aws.ToString(tce.CancellationReasons[0].Code) != "ConditionalCheckFailed" {
		t.Fatalf("retry after an applied transaction = %v, want TransactionCanceledException [ConditionalCheckFailed]", err)
	}
	if !f.exists(ctx, "once") {
		t.Fatal("the first attempt was not applied")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var statuses []int
	var faults []Kind
	for _, e := range f.observed {
		if e.API == "dynamodb.TransactWriteItems" {
			statuses, faults = append(statuses, e.Status), append(faults, e.Fault)
		}
	}
	if !reflect.DeepEqual(statuses, []int{200, 400}) || !reflect.DeepEqual(faults, []Kind{ServerError, ""}) {
		t.Errorf("observed statuses %v faults %v, want [200 400] [server-error \"\"]", statuses, faults)
	}
}

// A timeout fault holds the request; a client with a shorter timeout gives up first, and either
// way the SDK treats it as a retryable connection failure.
func TestTimeoutHoldsPastClientTimeout(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1, 2*time.Second)
	if err := f.proxy.SetRules([]Rule{{Kind: Timeout, Phase: Before, Rate: 1, Max: 1}}); err != nil {
		t.Fatal(err)
	}
	cfg, err := awsclient.Load(ctx, f.endpoint, config.WithRetryMaxAttempts(1),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(200*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = dynamodb.NewFromConfig(cfg).GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(f.table), Key: item("x")})
	if err == nil || time.Since(start) > time.Second {
		t.Fatalf("GetItem = %v after %v, want the client's 200ms timeout", err, time.Since(start))
	}
	if retryable.IsErrorRetryable(err) != aws.TrueTernary {
		t.Errorf("client timeout not retryable: %v", err)
	}
}

// The same seed and the same request sequence give the same faults.
func TestDeterministicWithSeed(t *testing.T) {
	ctx := context.Background()
	run := func(seed uint64) []bool {
		f := newFixture(t, 1, 0)
		p, err := New(Config{Target: f.direct, Seed: seed, Rules: []Rule{{Kind: Throttle, Phase: Before, Rate: 0.4}}})
		if err != nil {
			t.Fatal(err)
		}
		ep, err := p.Start("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		cfg, err := awsclient.Load(ctx, ep, config.WithRetryMaxAttempts(1))
		if err != nil {
			t.Fatal(err)
		}
		c := dynamodb.NewFromConfig(cfg)
		var out []bool
		for i := 0; i < 40; i++ {
			_, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(f.table), Key: item("x")})
			out = append(out, err != nil)
		}
		return out
	}
	a, b, c := run(42), run(42), run(43)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("seed 42 twice gave different faults:\n%v\n%v", a, b)
	}
	if reflect.DeepEqual(a, c) {
		t.Errorf("seeds 42 and 43 gave the same 40 decisions")
	}
	hits := 0
	for _, x := range a {
		if x {
			hits++
		}
	}
	if hits < 6 || hits > 28 {
		t.Errorf("rate 0.4 faulted %d of 40 requests", hits)
	}
}

func TestParseRules(t *testing.T) {
	for _, c := range []struct {
		spec string
		want string
		err  bool
	}{
		{"", "none", false},
		{"none", "none", false},
		{"throttle=0.02", "throttle/before=0.01,throttle/after=0.01", false},
		{"server-error/after=0.5@dynamodb.TransactWriteItems|sqs.*", "server-error/after=0.5@dynamodb.TransactWriteItems|sqs.*", false},
		{"all/before=0.1", "throttle/before=0.1,server-error/before=0.1,timeout/before=0.1,conflict/before=0.1", false},
		{"bogus=0.1", "", true},
		{"throttle/during=0.1", "", true},
		{"throttle=2", "", true},
		{"throttle", "", true},
	} {
		rules, err := ParseRules(c.spec)
		if (err != nil) != c.err {
			t.Errorf("ParseRules(%q) error = %v, want error %v", c.spec, err, c.err)
			continue
		}
		if err == nil && String(rules) != c.want {
			t.Errorf("ParseRules(%q) = %s, want %s", c.spec, String(rules), c.want)
		}
	}
}

func TestClassifyNames(t *testing.T) {
	mk := func(method, target, path, auth string) *http.Request {
		r, _ := http.NewRequest(method, "http://x"+path, nil)
		if target != "" {
			r.Header.Set("X-Amz-Target", target)
		}
		if auth != "" {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/"+auth+"/aws4_request, SignedHeaders=host, Signature=x")
		}
		return r
	}
	for _, c := range []struct {
		r    *http.Request
		want string
	}{
		{mk("POST", "DynamoDB_20120810.TransactWriteItems", "/", "dynamodb"), "dynamodb.TransactWriteItems"},
		{mk("POST", "DynamoDB_20120810.Query", "/", ""), "dynamodb.Query"},
		{mk("POST", "AmazonSQS.SendMessageBatch", "/", ""), "sqs.SendMessageBatch"},
		{mk("POST", "secretsmanager.GetSecretValue", "/", "secretsmanager"), "secretsmanager.GetSecretValue"},
		{mk("PUT", "", "/bucket/quarantine/x.json", "s3"), "s3.PutObject"},
		{mk("GET", "", "/bucket?list-type=2&prefix=q", "s3"), "s3.ListObjectsV2"},
		{mk("PUT", "", "/bucket", "s3"), "s3.CreateBucket"},
		{mk("POST", "", "/?Action=Publish", "sns"), "sns.Publish"},
		{mk("GET", "", "/moto-api/reset", ""), "moto.reset"},
	} {
		if got := Classify(c.r, nil); got != c.want {
			t.Errorf("Classify(%s %s) = %q, want %q", c.r.Method, c.r.URL, got, c.want)
		}
	}
}
