// Package ingest owns the webhook function's request path: body limits and content types,
// handshakes, authentication with the connector's secret, the replay cache, quarantine of authentic
// but unusable payloads (a whole delivery, or each unusable item of a batched one on its own), and
// the exactly-once enqueue of canonical events to the SQS FIFO queue. It answers 2xx only after
// SQS accepted every good event and every unusable item is stored; otherwise 5xx, so the vendor
// re-sends (duplicates are harmless: SQS and the ledger deduplicate by event key).
package ingest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/emf"
)

// DefaultMaxBody is the body limit when none is configured (1 MiB).
const DefaultMaxBody = 1 << 20

// QuarantinePrefix is where quarantined payloads live in the bucket: quarantine/<connector>/...
const QuarantinePrefix = "quarantine/"

// SQSAPI is the SQS call the webhook makes.
type SQSAPI interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// S3API is the S3 call quarantine makes.
type S3API interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// ReplayAPI is the DynamoDB call the replay cache makes.
type ReplayAPI interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
}

// SecretSource returns a connector's secret.
type SecretSource interface {
	Get(ctx context.Context, id string) (connector.Secret, error)
}

// Config is the webhook function's configuration, read once from its environment.
type Config struct {
	SecretID      string
	QueueURL      string
	Bucket        string
	ReplayTable   string // required for connectors whose verification yields a nonce
	PublicBaseURL string // e.g. https://hooks.example.com; empty = rebuilt from the request
	MaxBodyBytes  int64
	// DeadlineMargin is how long before the invocation's deadline the handler stops waiting on
	// AWS and answers 503, so the vendor gets an answer (and retries) rather than a timeout.
	// Default DefaultDeadlineMargin.
	DeadlineMargin time.Duration
}

// DefaultDeadlineMargin is the DeadlineMargin when none is configured.
const DefaultDeadlineMargin = 500 * time.Millisecond

// Handler handles one connector's webhook deliveries.
type Handler struct {
	cfg     Config
	conn    connector.Connector
	secrets SecretSource
	sqs     SQSAPI
	s3      S3API
	replay  ReplayAPI
	now     func() time.Time
	log     *slog.Logger
	metrics *emf.Writer
}

// Deps are the handler's collaborators.
type Deps struct {
	Secrets SecretSource
	SQS     SQSAPI
	S3      S3API
	Replay  ReplayAPI
	Now     func() time.Time
	Log     *slog.Logger
	Metrics *emf.Writer
}

// New returns a handler for one connector.
func New(cfg Config, conn connector.Connector, d Deps) *Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBody
	}
	if cfg.DeadlineMargin <= 0 {
		cfg.DeadlineMargin = DefaultDeadlineMargin
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, conn: conn, secrets: d.Secrets, sqs: d.SQS, s3: d.S3, replay: d.Replay, now: d.Now,
		log: d.Log.With("connector", conn.Name()), metrics: d.Metrics}
}

func respond(status int, body string) events.APIGatewayV2HTTPResponse {
	return events.APIGatewayV2HTTPResponse{StatusCode: status, Headers: map[string]string{"content-type": "application/json"},
		Body: body}
}

func errorResponse(status int, code string) events.APIGatewayV2HTTPResponse {
	b, _ := json.Marshal(map[string]string{"error": code})
	return respond(status, string(b))
}

func (h *Handler) count(name string, v float64) {
	h.metrics.Emit(map[string]string{"Connector": h.conn.Name()}, emf.Metric{Name: name, Value: v, Unit: emf.Count})
}

// Handle answers one API Gateway HTTP API (payload 2.0) request.
func (h *Handler) Handle(ctx context.Context, ev events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	h.metrics.Hold() // one EMF record per dimension set for the whole request
	defer h.metrics.Release()
	start := h.now()
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline.Add(-h.cfg.DeadlineMargin))
		defer cancel()
	}
	resp, outcome := h.handle(ctx, ev, start)
	h.metrics.Emit(map[string]string{"Connector": h.conn.Name()},
		emf.Metric{Name: "HandlingLatency", Value: float64(h.now().Sub(start).Microseconds()) / 1000, Unit: emf.Milliseconds})
	h.log.InfoContext(ctx, "webhook handled", "status", resp.StatusCode, "outcome", outcome)
	return resp, nil
}

func (h *Handler) handle(ctx context.Context, ev events.APIGatewayV2HTTPRequest, now time.Time) (events.APIGatewayV2HTTPResponse, string) {
	h.count("Received", 1)
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			return errorResponse(400, "bad_request"), "bad_base64"
		}
		body = b
	}
	if int64(len(body)) > h.cfg.MaxBodyBytes {
		return errorResponse(413, "payload_too_large"), "too_large"
	}
	req := h.request(ev, body, now)
	sec, err := h.secrets.Get(ctx, h.cfg.SecretID)
	if err != nil {
		h.log.ErrorContext(ctx, "secret unavailable", "error", err.Error())
		return errorResponse(503, "unavailable"), "secret_error"
	}
	if r, ok := h.conn.Handshake(req, sec); ok {
		ct := r.ContentType
		if ct == "" {
			ct = "text/plain"
		}
		return events.APIGatewayV2HTTPResponse{StatusCode: r.Status, Headers: map[string]string{"content-type": ct}, Body: r.Body}, "handshake"
	}
	if req.Method != "POST" {
		return errorResponse(405, "method_not_allowed"), "method"
	}
	if !h.contentTypeOK(req.Header("content-type")) {
		return errorResponse(415, "unsupported_media_type"), "content_type"
	}
	if resp, outcome, done := h.authenticate(ctx, req, sec, body, now); done {
		return resp, outcome
	}
	parsed, err := h.conn.Parse(req, sec)
	if err != nil {
		reason := "unusable"
		if !errors.Is(err, connector.ErrUnusable) {
			reason = "parse_error"
		}
		if qerr := h.quarantine(ctx, req, held{reason: err.Error(), raw: req.Body, key: QuarantineKey(h.conn.Name(), req.Body, now), index: -1}, now); qerr != nil {
			h.log.ErrorContext(ctx, "quarantine failed", "error", qerr.Error())
			return errorResponse(503, "unavailable"), "quarantine_error"
		}
		h.count("Quarantined", 1)
		h.log.WarnContext(ctx, "payload quarantined", "reason", reason)
		return h.quarantinedAnswer(), "quarantined"
	}
	good, bad := h.sort(parsed, req.Body, now)
	h.noteParsed(ctx, parsed)
	if resp, outcome, done := h.deliver(ctx, req, good, bad, now); done {
		return resp, outcome
	}
	return h.answer(parsed, good, bad)
}

// authenticate verifies the delivery and claims its nonce; done is set with the refusal when it
// must not go on (401, or 503 when the replay cache is unavailable).
func (h *Handler) authenticate(ctx context.Context, req *connector.Request, sec connector.Secret, body []byte, now time.Time) (resp events.APIGatewayV2HTTPResponse, outcome string, done bool) {
	ver, err := h.conn.Verify(req, sec, now)
	if err != nil {
		h.count("AuthFailures", 1)
		// What `crmsync verify` reports: which check failed, the URL verified against and when.
		// Never the signature or the secret.
		h.log.WarnContext(ctx, "authentication failed", "reason", err.Error(), "public_url", req.PublicURL,
			"received_at", now.UTC().Format(time.RFC3339Nano))
		return errorResponse(401, "unauthenticated"), "unauthenticated", true
	}
	if ver.Nonce != "" {
		if err := h.claimNonce(ctx, ver, body); err != nil {
			if errors.Is(err, errReplay) {
				h.count("AuthFailures", 1)
				h.log.WarnContext(ctx, "authentication failed", "reason", "replayed token with another body", "public_url", req.PublicURL,
					"received_at", now.UTC().Format(time.RFC3339Nano))
				return errorResponse(401, "unauthenticated"), "replay", true
			}
			h.log.ErrorContext(ctx, "replay cache unavailable", "error", err.Error())
			return errorResponse(503, "unavailable"), "replay_cache_error", true
		}
	}
	return resp, "", false
}

// noteParsed logs and counts what a parse set aside: connector notes, dropped items and
// lifecycle notifications.
func (h *Handler) noteParsed(ctx context.Context, parsed *connector.Parsed) {
	for _, note := range parsed.Notes {
		h.log.InfoContext(ctx, "connector note", "note", note)
	}
	if parsed.Dropped > 0 {
		h.count("ItemsDropped", float64(parsed.Dropped))
	}
	for _, lc := range parsed.Lifecycle {
		// Logged here; the connector also queued it as an event, which the worker records in the
		// ledger for the subscription manager to act on (shared/graphsub).
		h.log.InfoContext(ctx, "lifecycle notification", "lifecycle_event", lc.Event, "subscription_id", lc.SubscriptionID,
			"tenant_id", lc.TenantID, "item", lc.Index)
	}
	if len(parsed.Lifecycle) > 0 {
		h.count("Lifecycle", float64(len(parsed.Lifecycle)))
	}
}

// deliver enqueues the good events and quarantines each bad item alone; done is set with the
// answer when that failed (413 for an event too large, 503 otherwise).
func (h *Handler) deliver(ctx context.Context, req *connector.Request, good []canonical.Event, bad []held, now time.Time) (resp events.APIGatewayV2HTTPResponse, outcome string, done bool) {
	if len(good) > 0 {
		if err := h.enqueue(ctx, good); errors.Is(err, ErrTooLarge) {
			h.count("TooLarge", 1)
			h.log.WarnContext(ctx, "delivery refused: an event is too large for the queue", "error", err.Error())
			return errorResponse(413, "payload_too_large"), "event_too_large", true
		} else if err != nil {
			h.count("EnqueueFailures", 1)
			h.log.ErrorContext(ctx, "enqueue failed", "error", err.Error(), "events", len(good))
			return errorResponse(503, "unavailable"), "enqueue_error", true
		}
		h.count("Enqueued", float64(len(good)))
	}
	// Each unusable item is quarantined alone; if one cannot be stored the vendor must re-send
	// the delivery (the good items' duplicates are harmless: SQS and the ledger dedupe by key).
	for _, b := range bad {
		if err := h.quarantine(ctx, req, b, now); err != nil {
			h.log.ErrorContext(ctx, "quarantine failed", "error", err.Error(), "item", b.index)
			return errorResponse(503, "unavailable"), "quarantine_error", true
		}
		h.log.WarnContext(ctx, "item quarantined", "reason", b.reason, "item", b.index)
	}
	if len(bad) > 0 {
		h.count("Quarantined", float64(len(bad)))
	}
	return resp, "", false
}

// answer is the vendor's answer once every good event is enqueued and every bad item stored.
func (h *Handler) answer(parsed *connector.Parsed, good []canonical.Event, bad []held) (events.APIGatewayV2HTTPResponse, string) {
	// Vendor fields no mapping uses are counted per connector (the monthly mapping review lists
	// which ones from the ledger, where each event keeps its own list).
	unmapped := 0
	for _, ev := range good {
		unmapped += len(ev.Unmapped)
	}
	if unmapped > 0 {
		h.count("UnmappedFields", float64(unmapped))
	}
	outcome := "enqueued"
	if len(bad) > 0 {
		outcome = "partly_quarantined"
		if len(good) == 0 {
			outcome = "quarantined"
		}
	}
	if parsed.Ack != nil {
		ct := parsed.Ack.ContentType
		if ct == "" {
			ct = "application/json"
		}
		return events.APIGatewayV2HTTPResponse{StatusCode: parsed.Ack.Status, Headers: map[string]string{"content-type": ct}, Body: parsed.Ack.Body}, outcome
	}
	if len(good) == 0 && len(bad) > 0 {
		return h.quarantinedAnswer(), outcome
	}
	answer := `{"status":"accepted","events":` + strconv.Itoa(len(good))
	if len(bad) > 0 {
		answer += `,"quarantined":` + strconv.Itoa(len(bad))
	}
	return respond(200, answer+"}"), outcome
}

// quarantinedAnswer is the answer to a delivery whose every item is quarantined: the
// connector's own (connector.QuarantineAnswerer, e.g. Mailgun's 406), else 202.
func (h *Handler) quarantinedAnswer() events.APIGatewayV2HTTPResponse {
	qa, ok := h.conn.(connector.QuarantineAnswerer)
	if !ok {
		return respond(202, `{"status":"quarantined"}`)
	}
	r := qa.QuarantineAnswer()
	ct := r.ContentType
	if ct == "" {
		ct = "application/json"
	}
	return events.APIGatewayV2HTTPResponse{StatusCode: r.Status, Headers: map[string]string{"content-type": ct}, Body: r.Body}
}

// held is one item to quarantine: its reason, the bytes to store, its object key and its
// position in the delivery (-1 for a whole delivery).
type held struct {
	reason string
	raw    []byte
	key    string
	index  int
}

// sort stamps the parsed events with the receipt time and splits them from what must be
// quarantined: the connector's rejected items, each under a key of its own bytes (stable
// across retries, however the vendor batches them), and any event that fails validation, kept
// with the whole delivery under the delivery's key and the event's position.
func (h *Handler) sort(parsed *connector.Parsed, body []byte, now time.Time) ([]canonical.Event, []held) {
	var good []canonical.Event
	var bad []held
	for _, r := range parsed.Rejected {
		bad = append(bad, held{reason: r.Reason, raw: r.Raw, key: QuarantineKey(h.conn.Name(), r.Raw, now), index: r.Index})
	}
	for i := range parsed.Events {
		ev := parsed.Events[i]
		ev.ReceivedAt = now
		if err := ev.Validate(); err != nil {
			key := strings.TrimSuffix(QuarantineKey(h.conn.Name(), body, now), ".json") + "-event" + strconv.Itoa(i) + ".json"
			bad = append(bad, held{reason: fmt.Sprintf("%v: %v", connector.ErrUnusable, err), raw: body, key: key, index: i})
			continue
		}
		good = append(good, ev)
	}
	return good, bad
}

// request builds the connector's view of the delivery, including the public URL the vendor
// called: the configured public base URL, else scheme and host from the request context.
func (h *Handler) request(ev events.APIGatewayV2HTTPRequest, body []byte, now time.Time) *connector.Request {
	return NewRequest(ev, body, h.cfg.PublicBaseURL, now)
}

// NewRequest builds a connector's view of an API Gateway HTTP API delivery whose (decoded) body
// is body. Path is the raw path as API Gateway reports it. PublicURL, the URL the vendor called
// (connectors that sign URLs verify against it), is built as follows, then the raw query appended:
//
//   - publicBaseURL set (it may carry a base path, e.g. https://hooks.example.com/prod for a custom
//     domain's API mapping key): the base plus the raw path, where a raw path that already starts
//     with the base path is not prefixed twice, and a named stage's segment that API Gateway put
//     in the raw path is dropped (the base says where the API is mapped; a custom domain selects
//     the stage through its mapping, so the stage is not part of the URL);
//   - else scheme (x-forwarded-proto, default https) and requestContext.domainName (else the
//     host header) plus the raw path, where for a named stage (requestContext.stage other than
//     $default) the stage segment is added on the default execute-api endpoint when the raw path
//     lacks it, and dropped on a custom domain. An API mapping key the raw path lacks cannot be
//     rebuilt from the request: configure it in publicBaseURL.
func NewRequest(ev events.APIGatewayV2HTTPRequest, body []byte, publicBaseURL string, now time.Time) *connector.Request {
	method := ev.RequestContext.HTTP.Method
	path := ev.RawPath
	if path == "" {
		path = ev.RequestContext.HTTP.Path
	}
	stagePrefix := ""
	if stage := ev.RequestContext.Stage; stage != "" && stage != "$default" {
		stagePrefix = "/" + stage
	}
	hasStage := stagePrefix != "" && (path == stagePrefix || strings.HasPrefix(path, stagePrefix+"/"))
	public := publicPath(path, stagePrefix, hasStage, strings.TrimRight(publicBaseURL, "/"), ev)
	if ev.RawQueryString != "" {
		public += "?" + ev.RawQueryString
	}
	q, _ := url.ParseQuery(ev.RawQueryString)
	headers := make(map[string]string, len(ev.Headers))
	for k, v := range ev.Headers {
		headers[strings.ToLower(k)] = v
	}
	return &connector.Request{Method: method, Path: path, Headers: headers, RawQuery: ev.RawQueryString, Query: q,
		Body: body, PublicURL: public, ReceivedAt: now}
}

// publicPath returns the public URL, without query, for the raw path (see NewRequest).
func publicPath(path, stagePrefix string, hasStage bool, base string, ev events.APIGatewayV2HTTPRequest) string {
	if base != "" {
		basePath := ""
		if i := strings.Index(base, "://"); i >= 0 {
			if j := strings.IndexByte(base[i+3:], '/'); j >= 0 {
				basePath = base[i+3+j:]
			}
		}
		switch {
		case basePath != "" && (path == basePath || strings.HasPrefix(path, basePath+"/")):
			return strings.TrimSuffix(base, basePath) + path
		case hasStage:
			return base + strings.TrimPrefix(path, stagePrefix)
		default:
			return base + path
		}
	}
	scheme := ev.Headers["x-forwarded-proto"]
	if scheme == "" {
		scheme = "https"
	}
	host := ev.RequestContext.DomainName
	if host == "" {
		host = ev.Headers["host"]
	}
	switch {
	case stagePrefix == "":
	case strings.Contains(host, ".execute-api.") && !hasStage:
		path = stagePrefix + path
	case !strings.Contains(host, ".execute-api.") && hasStage:
		path = strings.TrimPrefix(path, stagePrefix)
	}
	return scheme + "://" + host + path
}

func (h *Handler) contentTypeOK(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return slices.Contains(h.conn.ContentTypes(), strings.ToLower(mt))
}

var errReplay = errors.New("replayed nonce")

// claimNonce claims a verified delivery's nonce for this delivery's body. The claim records the
// body's hash, so the same signed body arriving again — the vendor's retry after a 5xx, or the SDK
// retrying this very PutItem after a lost answer — is accepted (re-enqueueing it is harmless: SQS
// and the ledger deduplicate by event key), while another body carrying the same signature, which
// is what a replay of an unsigned-body scheme such as Mailgun's looks like, is refused.
func (h *Handler) claimNonce(ctx context.Context, v connector.Verified, body []byte) error {
	if h.replay == nil || h.cfg.ReplayTable == "" {
		return errors.New("connector needs a replay table and none is configured")
	}
	hash := canonical.PayloadHash(body)
	item, err := attributevalue.MarshalMap(struct {
		PK          string `dynamodbav:"pk"`
		ExpiresAt   int64  `dynamodbav:"expires_at"`
		PayloadHash string `dynamodbav:"payload_hash"`
	}{PK: v.Nonce, ExpiresAt: v.NonceExpires.Unix(), PayloadHash: hash})
	if err != nil {
		return err
	}
	_, err = h.replay.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(h.cfg.ReplayTable), Item: item,
		ConditionExpression:       aws.String("attribute_not_exists(pk) OR payload_hash = :hash"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":hash": &ddbtypes.AttributeValueMemberS{Value: hash}}})
	var ccf *ddbtypes.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return errReplay
	}
	if err != nil {
		return fmt.Errorf("claim nonce: %w", err)
	}
	return nil
}

// QuarantineKey is the object key of a quarantined delivery: stable for the same body, so a
// vendor's retries of one delivery leave one object.
func QuarantineKey(connectorName string, body []byte, at time.Time) string {
	return QuarantinePrefix + connectorName + "/" + at.UTC().Format("2006/01/02") + "/" + canonical.PayloadHash(body) + ".json"
}

// Quarantined is the stored form of a quarantined delivery, or of one unusable item of a batched
// delivery: enough to re-run it after a fix. For an item, Body is the item alone as a delivery
// of its own (see connector.Rejection), Delivery the sha256 of the whole delivery it came in and
// Item its position there; the request metadata is the whole delivery's.
type Quarantined struct {
	Connector  string            `json:"connector"`
	Reason     string            `json:"reason"`
	Delivery   string            `json:"delivery,omitempty"`
	Item       *int              `json:"item,omitempty"`
	ReceivedAt time.Time         `json:"received_at"`
	Method     string            `json:"method"`
	Path       string            `json:"path"`
	RawQuery   string            `json:"raw_query,omitempty"`
	Headers    map[string]string `json:"headers"`
	PublicURL  string            `json:"public_url"`
	Body       []byte            `json:"body"`
}

// quarantine stores one held delivery or item under its key.
func (h *Handler) quarantine(ctx context.Context, req *connector.Request, it held, now time.Time) error {
	q := Quarantined{Connector: h.conn.Name(), Reason: it.reason, ReceivedAt: now, Method: req.Method, Path: req.Path,
		RawQuery: req.RawQuery, Headers: req.Headers, PublicURL: req.PublicURL, Body: it.raw}
	meta := map[string]string{"connector": h.conn.Name(), "reason": truncate(it.reason, 200)}
	if it.index >= 0 {
		idx := it.index
		q.Delivery, q.Item = canonical.PayloadHash(req.Body), &idx
		meta["delivery"], meta["item"] = q.Delivery, strconv.Itoa(idx)
	}
	b, err := json.Marshal(q)
	if err != nil {
		return err
	}
	_, err = h.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(h.cfg.Bucket), Key: aws.String(it.key),
		Body: strings.NewReader(string(b)), ContentType: aws.String("application/json"), Metadata: meta})
	if err != nil {
		return fmt.Errorf("put %s: %w", it.key, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// enqueue sends every event to the ingest queue (see Enqueue).
func (h *Handler) enqueue(ctx context.Context, evs []canonical.Event) error {
	return Enqueue(ctx, h.sqs, h.cfg.QueueURL, evs)
}

// MaxMessageBytes is the most one SQS message may hold, and the most one SendMessageBatch may
// carry in all (256 KiB, counted as SQS counts it: the bodies' bytes; crmsync sends no message
// attributes).
const MaxMessageBytes = 256 * 1024

// maxBatchEntries is the most entries one SendMessageBatch may carry.
const maxBatchEntries = 10

// ErrTooLarge reports an event too big for one queue message. It is a property of the delivery,
// not a passing fault: the webhook answers 413 and stores nothing, so the vendor does not retry
// it forever.
var ErrTooLarge = errors.New("event too large for one queue message")

// Enqueue sends canonical events to the ingest FIFO queue in SendMessageBatch calls of at most ten
// entries and MaxMessageBytes in all, each with MessageDeduplicationId = sha256(key) and
// MessageGroupId = sha256(group key). An event bigger than one message fails the call with
// ErrTooLarge before anything is sent. Any entry SQS does not accept fails the whole call so the
// caller answers 5xx and its client retries (entries already accepted are deduplicated by SQS on
// the retry).
func Enqueue(ctx context.Context, client SQSAPI, queueURL string, evs []canonical.Event) error {
	entries := make([]sqstypes.SendMessageBatchRequestEntry, 0, len(evs))
	for i := range evs {
		b, err := evs[i].Marshal()
		if err != nil {
			return fmt.Errorf("marshal %s: %w", evs[i].Key, err)
		}
		if len(b) > MaxMessageBytes {
			return fmt.Errorf("%w: %s is %d bytes, the queue takes at most %d", ErrTooLarge, evs[i].Key, len(b), MaxMessageBytes)
		}
		entries = append(entries, sqstypes.SendMessageBatchRequestEntry{
			Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(string(b)),
			MessageDeduplicationId: aws.String(evs[i].DedupID()), MessageGroupId: aws.String(evs[i].GroupID()),
		})
	}
	for _, batch := range Batches(entries) {
		out, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: batch})
		if err != nil {
			return fmt.Errorf("send batch: %w", err)
		}
		if len(out.Failed) > 0 {
			f := out.Failed[0]
			return fmt.Errorf("send batch: %d of %d refused (first: %s)", len(out.Failed), len(batch), aws.ToString(f.Code))
		}
	}
	return nil
}

// Batches splits entries, in order, into SendMessageBatch calls of at most ten entries whose
// bodies add up to at most MaxMessageBytes. Each entry must itself fit in MaxMessageBytes.
func Batches(entries []sqstypes.SendMessageBatchRequestEntry) [][]sqstypes.SendMessageBatchRequestEntry {
	var out [][]sqstypes.SendMessageBatchRequestEntry
	var batch []sqstypes.SendMessageBatchRequestEntry
	size := 0
	for _, e := range entries {
		n := len(aws.ToString(e.MessageBody))
		if len(batch) == maxBatchEntries || (len(batch) > 0 && size+n > MaxMessageBytes) {
			out = append(out, batch)
			batch, size = nil, 0
		}
		batch = append(batch, e)
		size += n
	}
	if len(batch) > 0 {
		out = append(out, batch)
	}
	return out
}
