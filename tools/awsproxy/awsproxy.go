// Package awsproxy owns crmsync's AWS fault proxy: an HTTP reverse proxy placed between the
// functions and the AWS endpoint (moto locally) that names every request by service and API,
// counts them, and injects the failures real AWS produces — throttling, 500s, timeouts and
// DynamoDB transaction conflicts — at configurable rates, either before forwarding (the request
// never reaches the endpoint) or after (the endpoint applied it but the client sees an error,
// the case that tests exactly-once hardest).
//
// Requests are named "<service>.<API>": from the X-Amz-Target header for the JSON protocols
// ("DynamoDB_20120810.TransactWriteItems" is dynamodb.TransactWriteItems,
// "AmazonSQS.SendMessageBatch" is sqs.SendMessageBatch, "secretsmanager.GetSecretValue" is
// secretsmanager.GetSecretValue), from the Action parameter for the query protocol, and from the
// method and path for S3 (s3.PutObject, s3.ListObjectsV2, ...); the service comes from the
// SigV4 credential scope when the request does not say it otherwise.
//
// Faults have the shapes the AWS SDKs classify: throttles are DynamoDB
// ProvisionedThroughputExceededException or ThrottlingException (400), SQS RequestThrottled (403
// with X-Amzn-Query-Error), Secrets Manager ThrottlingException (400) and S3 SlowDown (503), all
// retryable throttles; server errors are 500 InternalServerError/InternalFailure/InternalError;
// conflicts are DynamoDB TransactionCanceledException whose CancellationReasons hold one
// TransactionConflict (TransactWriteItems only); a timeout holds the request for Config.Hold and
// then closes the connection without answering.
//
// Decisions come from one pseudo-random sequence seeded with Config.Seed: the same requests in the
// same order get the same faults.
package awsproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a kind of injected fault.
type Kind string

// The fault kinds.
const (
	// Throttle answers with the service's throttling error.
	Throttle Kind = "throttle"
	// ServerError answers 500 with the service's internal error.
	ServerError Kind = "server-error"
	// Timeout holds the request for Config.Hold, then closes the connection without an answer.
	Timeout Kind = "timeout"
	// Conflict answers a DynamoDB TransactWriteItems with TransactionCanceledException
	// [TransactionConflict]; it applies to no other API.
	Conflict Kind = "conflict"
	// Partial answers a batch call 200 having done only part of it, as the services may: an SQS
	// SendMessageBatch with some entries under Failed (InternalError, not the sender's fault), a
	// DynamoDB BatchGetItem with some keys under UnprocessedKeys. The rest is forwarded. It applies
	// to no other API, and only after forwarding (the phase is ignored).
	Partial Kind = "partial"
)

// Kinds lists every fault kind answered with an error (Partial, answered 200, is apart).
var Kinds = []Kind{Throttle, ServerError, Timeout, Conflict}

// Phase says when a fault is injected.
type Phase string

// The phases.
const (
	// Before: the request is answered by the proxy and never reaches the endpoint.
	Before Phase = "before"
	// After: the request is forwarded and applied, then its answer is replaced by the fault.
	After Phase = "after"
)

// Rule injects one kind of fault in one phase at a rate.
type Rule struct {
	// Kind is the fault to inject.
	Kind Kind
	// Phase is when to inject it.
	Phase Phase
	// Rate is the probability, in [0, 1], that a matching request gets the fault.
	Rate float64
	// APIs restricts the rule to these request names: "dynamodb.TransactWriteItems", or a whole
	// service as "sqs.*". Empty matches every request the kind applies to.
	APIs []string
	// Max bounds how many faults the rule injects in all (0: no bound).
	Max int
}

// Config configures a Proxy.
type Config struct {
	// Target is the AWS endpoint requests are forwarded to, e.g. http://127.0.0.1:4566.
	Target string
	// Seed seeds the fault decisions.
	Seed uint64
	// Rules are the faults to inject; the first rule whose draw hits wins.
	Rules []Rule
	// Hold is how long a Timeout fault holds a request before closing the connection (default
	// 2s); a client whose own timeout is shorter gives up first.
	Hold time.Duration
	// Observe, when set, is called after every request the endpoint answered, with the endpoint's
	// real answer (even when the client was given a fault after it).
	Observe func(Exchange)
	// Contention, when set, makes overlapping DynamoDB writes conflict as in DynamoDB (see
	// contention): it names each table's key attributes (hash key first), e.g.
	// {"crm": {"pk", "sk"}}. Writes to tables it does not name never conflict.
	Contention map[string][]string
}

// Exchange is one request the endpoint answered, as Config.Observe sees it.
type Exchange struct {
	// API is the request's name, e.g. "dynamodb.TransactWriteItems".
	API string
	// Request is the request body.
	Request []byte
	// Status is the endpoint's HTTP status.
	Status int
	// Response is the endpoint's answer body; Header its headers.
	Response []byte
	Header   http.Header
	// Fault is the fault the client was given instead of the answer ("" when none).
	Fault Kind
	// Elapsed is how long the endpoint took to answer.
	Elapsed time.Duration
}

// Proxy is a counting, fault-injecting reverse proxy. It is safe for concurrent use.
type Proxy struct {
	target *url.URL
	client *http.Client
	hold   time.Duration

	mu       sync.Mutex
	rnd      *rand.Rand
	rules    []Rule
	injected []int // per rule
	counts   map[string]int
	faults   map[string]int
	byAPI    map[string]int
	observe  func(Exchange)
	contend  atomic.Pointer[contention]

	srv *http.Server
	ln  net.Listener
}

// New returns a proxy to cfg.Target.
func New(cfg Config) (*Proxy, error) {
	u, err := url.Parse(cfg.Target)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("awsproxy: target %q: want http(s)://host:port", cfg.Target)
	}
	if err := validate(cfg.Rules); err != nil {
		return nil, err
	}
	if cfg.Hold <= 0 {
		cfg.Hold = 2 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
	p := &Proxy{target: u, client: &http.Client{Transport: tr}, hold: cfg.Hold,
		rnd: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), counts: map[string]int{},
		faults: map[string]int{}, byAPI: map[string]int{}, observe: cfg.Observe}
	p.SetContention(cfg.Contention)
	p.rules = append([]Rule(nil), cfg.Rules...)
	p.injected = make([]int, len(p.rules))
	return p, nil
}

func validate(rules []Rule) error {
	for i, r := range rules {
		switch {
		case r.Kind != Throttle && r.Kind != ServerError && r.Kind != Timeout && r.Kind != Conflict && r.Kind != Partial:
			return fmt.Errorf("awsproxy: rule %d: unknown kind %q", i, r.Kind)
		case r.Phase != Before && r.Phase != After:
			return fmt.Errorf("awsproxy: rule %d: phase must be %q or %q", i, Before, After)
		case r.Rate < 0 || r.Rate > 1:
			return fmt.Errorf("awsproxy: rule %d: rate %v outside [0, 1]", i, r.Rate)
		}
	}
	return nil
}

// SetRules replaces the fault rules (e.g. none, to let a run drain) and their injection bounds.
func (p *Proxy) SetRules(rules []Rule) error {
	if err := validate(rules); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append([]Rule(nil), rules...)
	p.injected = make([]int, len(p.rules))
	return nil
}

// Start serves the proxy on addr ("127.0.0.1:0" for a free port) and returns its URL, the
// endpoint to give AWS clients.
func (p *Proxy) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("awsproxy: listen %s: %w", addr, err)
	}
	p.ln = ln
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), nil
}

// Close stops serving (held requests are dropped).
func (p *Proxy) Close() {
	if p.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if p.srv.Shutdown(ctx) != nil {
			_ = p.srv.Close()
		}
	}
}

// Counts returns how many requests the proxy received, by "<service>.<API>" (faulted ones
// included).
func (p *Proxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return clone(p.counts)
}

// Faults returns how many faults the proxy injected, by "<kind>/<phase>" (e.g.
// "throttle/before").
func (p *Proxy) Faults() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return clone(p.faults)
}

// FaultsByAPI returns how many faults the proxy injected, by FaultKey(kind, phase, api) (e.g.
// "conflict/after dynamodb.TransactWriteItems").
func (p *Proxy) FaultsByAPI() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return clone(p.byAPI)
}

// SetContention turns contention on for the tables named (as Config.Contention), or off with nil;
// its counts start again.
func (p *Proxy) SetContention(keys map[string][]string) {
	if keys == nil {
		p.contend.Store(nil)
		return
	}
	p.contend.Store(newContention(keys))
}

// NaturalConflicts returns the conflicts of overlapping writes the proxy answered (Config.Contention),
// by API; none without contention.
func (p *Proxy) NaturalConflicts() map[string]int {
	if c := p.contend.Load(); c != nil {
		return c.counted()
	}
	return map[string]int{}
}

// FaultKey names one fault kind in one phase on one API, as FaultsByAPI counts it.
func FaultKey(kind Kind, phase Phase, api string) string {
	return string(kind) + "/" + string(phase) + " " + api
}

// Reset zeroes the request and fault counts (rules and their bounds are kept).
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
	p.faults = map[string]int{}
	p.byAPI = map[string]int{}
	if c := p.contend.Load(); c != nil {
		c.mu.Lock()
		c.counts = map[string]int{}
		c.mu.Unlock()
	}
}

func clone(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Total sums a count map.
func Total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Keys returns a count map's keys, sorted.
func Keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// count counts a request answered without a fault draw (a natural conflict).
func (p *Proxy) count(api string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[api]++
}

// decide counts the request and draws its fault, if any.
func (p *Proxy) decide(api string) (Kind, Phase, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[api]++
	for i, r := range p.rules {
		if !r.Matches(api) || (r.Max > 0 && p.injected[i] >= r.Max) || r.Rate == 0 {
			continue
		}
		if p.rnd.Float64() < r.Rate {
			p.injected[i]++
			p.faults[string(r.Kind)+"/"+string(r.Phase)]++
			p.byAPI[FaultKey(r.Kind, r.Phase, api)]++
			return r.Kind, r.Phase, true
		}
	}
	return "", "", false
}

// Matches reports whether the rule may fault a request named api.
func (r Rule) Matches(api string) bool {
	if r.Kind == Conflict && api != "dynamodb.TransactWriteItems" {
		return false
	}
	if r.Kind == Partial && api != "sqs.SendMessageBatch" && api != "dynamodb.BatchGetItem" {
		return false
	}
	if strings.HasPrefix(api, "moto.") {
		return false // the emulator's own control API is never faulted
	}
	if len(r.APIs) == 0 {
		return true
	}
	for _, a := range r.APIs {
		if a == api || (strings.HasSuffix(a, ".*") && strings.HasPrefix(api, strings.TrimSuffix(a, "*"))) {
			return true
		}
	}
	return false
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read request", http.StatusBadRequest)
		return
	}
	api := Classify(r, body)
	release := func() {}
	if c := p.contend.Load(); c != nil {
		var status int
		var header map[string]string
		var answer []byte
		if release, status, header, answer = c.begin(api, body); release == nil {
			p.count(api)
			for k, v := range header {
				w.Header().Set(k, v)
			}
			w.WriteHeader(status)
			_, _ = w.Write(answer)
			return
		}
	}
	kind, phase, fault := p.decide(api)
	if fault && kind == Partial {
		release()
		p.partial(w, r, api, body)
		return
	}
	if fault && phase == Before {
		release()
		p.inject(w, r, api, kind, body)
		return
	}
	began := time.Now()
	status, header, resp, err := p.forward(r, body)
	release() // the endpoint answered (or never will): the transaction is over
	if err != nil {
		// The endpoint did not answer: the client sees a dropped connection.
		hangUp(w)
		return
	}
	if p.observe != nil {
		ex := Exchange{API: api, Request: body, Status: status, Response: resp, Header: header, Elapsed: time.Since(began)}
		if fault {
			ex.Fault = kind
		}
		p.observe(ex)
	}
	if fault {
		p.inject(w, r, api, kind, body)
		return
	}
	for k, vs := range header {
		if strings.EqualFold(k, "Content-Length") || strings.EqualFold(k, "Connection") || strings.EqualFold(k, "Transfer-Encoding") {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write(resp)
}

// forward sends the request to the target and reads the whole answer.
func (p *Proxy) forward(r *http.Request, body []byte) (int, http.Header, []byte, error) {
	u := *p.target
	u.Path = singleJoin(p.target.Path, r.URL.Path)
	u.RawPath = ""
	if r.URL.RawPath != "" {
		u.RawPath = singleJoin(p.target.EscapedPath(), r.URL.RawPath)
	}
	u.RawQuery = r.URL.RawQuery
	req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header = r.Header.Clone()
	req.Host = r.Host
	req.ContentLength = int64(len(body))
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, b, nil
}

func singleJoin(a, b string) string {
	switch {
	case a == "" || a == "/":
		return b
	case strings.HasSuffix(a, "/") && strings.HasPrefix(b, "/"):
		return a + b[1:]
	case !strings.HasSuffix(a, "/") && !strings.HasPrefix(b, "/"):
		return a + "/" + b
	}
	return a + b
}

// inject answers the request with the fault.
func (p *Proxy) inject(w http.ResponseWriter, r *http.Request, api string, kind Kind, body []byte) {
	if kind == Timeout {
		t := time.NewTimer(p.hold)
		select {
		case <-t.C:
		case <-r.Context().Done(): // the client gave up first
			t.Stop()
		}
		hangUp(w)
		return
	}
	status, header, resp := faultResponse(api, kind, body, p.draw())
	for k, v := range header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(status)
	_, _ = w.Write(resp)
}

func (p *Proxy) draw() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rnd.Float64()
}

// hangUp closes the client's connection without an answer.
func hangUp(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // reset, as a timed-out load balancer does
	}
	_ = conn.Close()
}

// ErrUnknown is returned by Parse for an unknown fault kind or phase.
var ErrUnknown = errors.New("unknown fault")
