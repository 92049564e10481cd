// Package samples owns crmsync's sample events: the signed API Gateway (HTTP API, payload 2.0)
// webhook events under events/ that `sam local invoke -e`, `crmsync-dev dev` rehearsals and tests
// replay, the SQS ingest batch and the scheduled-job inputs. It builds them from the raw vendor
// bodies in events/payloads and the dev-only secrets in config/dev-secrets.json, signing each
// delivery with its connector's own Signer so a sample verifies exactly as a vendor's would.
package samples

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/connector/registry"
)

// SecretConnectors maps each connector secret's logical id in template.yaml (and key in
// config/dev-secrets.json) to the connector that reads it.
var SecretConnectors = map[string]string{
	"TwilioSecret":    "twilio",
	"CalendlySecret":  "calendly",
	"TypeformSecret":  "typeform",
	"MetaLeadsSecret": "meta-leads",
	"MsgraphSecret":   "msgraph",
	"MailgunSecret":   "mailgun",
	"GenericSecret":   "generic",
}

// Payloads names each connector's raw vendor body under <dir>/payloads and its content type.
var Payloads = map[string]struct{ File, ContentType string }{
	"twilio":     {"twilio.form", "application/x-www-form-urlencoded"},
	"calendly":   {"calendly.json", "application/json; charset=utf-8"},
	"typeform":   {"typeform.json", "application/json"},
	"meta-leads": {"meta-leads.json", "application/json"},
	"msgraph":    {"msgraph.json", "application/json"},
	"mailgun":    {"mailgun.json", "application/json"},
	"generic":    {"generic.json", "application/json"},
}

// ScheduleJobs are the reconcile jobs the template schedules; each gets
// events/schedule-<job>.json holding the rule's Input.
var ScheduleJobs = []string{"parity", "consistency", "mapping-review"}

// SQSBatchSources are the connectors whose parsed samples make up events/sqs-ingest-batch.json.
var SQSBatchSources = []string{"twilio", "typeform", "calendly"}

// IngestQueueARN is the queue the sample SQS batch claims to come from.
const IngestQueueARN = "arn:aws:sqs:us-east-1:123456789012:crmsync-local-IngestQueue.fifo"

// MetaChallenge is the hub.challenge of the Meta handshake sample.
const MetaChallenge = "1158201444"

// GraphValidationToken is the validationToken of the Graph validation sample.
const GraphValidationToken = "Validation: Testing client application reachability for subscription Request-Id: 2a1a4c3e-0b55-4f39-9a0e-3d2b7e5c9f11"

const (
	accountID = "123456789012"
	apiID     = "crmsynclocal"
	userAgent = "crmsync-samples/1"
	sourceIP  = "203.0.113.10"
)

// DevSecrets reads config/dev-secrets.json ({"<SecretLogicalId>": {"current": {...},
// "previous": {...}}, "_comment": "..."}) and returns the connector secrets keyed by connector
// name. Keys starting with "_" and logical ids that belong to no connector are skipped.
func DevSecrets(path string) (map[string]connector.Secret, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]connector.Secret{}
	for id, v := range raw {
		name, ok := SecretConnectors[id]
		if strings.HasPrefix(id, "_") || !ok {
			continue
		}
		var s connector.Secret
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, id, err)
		}
		out[name] = s
	}
	return out, nil
}

func signer(name string) (connector.Connector, connector.Signer, error) {
	c, err := registry.New(name)
	if err != nil {
		return nil, nil, err
	}
	s, ok := c.(connector.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("connector %s cannot sign", name)
	}
	return c, s, nil
}

// WebhookEvent builds the API Gateway HTTP API (payload 2.0) event of a delivery of body to
// POST /webhooks/<connectorName> at publicBase (e.g. http://127.0.0.1:3000), signed at now with
// sec.Current as the vendor would: signature headers are set, and the body (Mailgun and Graph
// sign inside it) and query string (Twilio's bodySHA256) take the signed form. Headers are
// lower-cased; host, x-forwarded-proto and requestContext.domainName come from publicBase, so
// the webhook function rebuilds the same public URL with or without PUBLIC_BASE_URL (when
// publicBase has no path). A Mailgun token already in the body is replaced by a fresh one,
// since the replay cache admits each token once.
func WebhookEvent(connectorName string, body []byte, contentType string, publicBase string, sec connector.Secret, now time.Time) (events.APIGatewayV2HTTPRequest, error) {
	var ev events.APIGatewayV2HTTPRequest
	u, err := url.Parse(strings.TrimRight(publicBase, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return ev, fmt.Errorf("public base URL %q: want http(s)://host[:port]", publicBase)
	}
	path := "/webhooks/" + connectorName
	ev = baseEvent("POST", path, "", u)
	ev.Headers["content-type"] = contentType
	ev.Body = string(body)
	if err := resign(&ev, connectorName, sec, now, strings.TrimRight(publicBase, "/")+path); err != nil {
		return events.APIGatewayV2HTTPRequest{}, err
	}
	return ev, nil
}

// baseEvent returns an unsigned event for method and path (rawQuery without '?') at the base
// URL u.
func baseEvent(method, path, rawQuery string, u *url.URL) events.APIGatewayV2HTTPRequest {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	prefix, _, _ := strings.Cut(u.Hostname(), ".")
	ev := events.APIGatewayV2HTTPRequest{
		Version:        "2.0",
		RouteKey:       method + " " + path,
		RawPath:        path,
		RawQueryString: rawQuery,
		Headers: map[string]string{
			"host":              u.Host,
			"user-agent":        userAgent,
			"x-forwarded-for":   sourceIP,
			"x-forwarded-port":  port,
			"x-forwarded-proto": u.Scheme,
		},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey:     method + " " + path,
			AccountID:    accountID,
			Stage:        "$default",
			APIID:        apiID,
			DomainName:   u.Host,
			DomainPrefix: prefix,
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{
				Method: method, Path: path, Protocol: "HTTP/1.1", SourceIP: sourceIP, UserAgent: userAgent,
			},
		},
	}
	setQuery(&ev, rawQuery)
	return ev
}

// setQuery sets the raw query string and API Gateway's queryStringParameters (several values of
// one name joined with ",").
func setQuery(ev *events.APIGatewayV2HTTPRequest, rawQuery string) {
	ev.RawQueryString = rawQuery
	ev.QueryStringParameters = nil
	if rawQuery == "" {
		return
	}
	q, _ := url.ParseQuery(rawQuery)
	ev.QueryStringParameters = make(map[string]string, len(q))
	for k, v := range q {
		ev.QueryStringParameters[k] = strings.Join(v, ",")
	}
}

// stamp sets the request time and a request id derived from the event's content.
func stamp(ev *events.APIGatewayV2HTTPRequest, now time.Time) {
	now = now.UTC()
	ev.RequestContext.Time = now.Format("02/Jan/2006:15:04:05 -0700")
	ev.RequestContext.TimeEpoch = now.UnixMilli()
	sum := sha256.Sum256([]byte(ev.RouteKey + "\n" + ev.RawQueryString + "\n" + ev.Body + "\n" + ev.RequestContext.Time))
	ev.RequestContext.RequestID = base64.RawURLEncoding.EncodeToString(sum[:])[:14] + "="
}

// request rebuilds the connector's view of an event as the webhook function does when no
// PUBLIC_BASE_URL is configured: scheme from x-forwarded-proto, host from the request context.
func request(ev *events.APIGatewayV2HTTPRequest, now time.Time) (*connector.Request, error) {
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			return nil, fmt.Errorf("body: %w", err)
		}
		body = b
	}
	path := ev.RawPath
	if path == "" {
		path = ev.RequestContext.HTTP.Path
	}
	headers := make(map[string]string, len(ev.Headers))
	for k, v := range ev.Headers {
		headers[strings.ToLower(k)] = v
	}
	scheme := headers["x-forwarded-proto"]
	if scheme == "" {
		scheme = "https"
	}
	host := ev.RequestContext.DomainName
	if host == "" {
		host = headers["host"]
	}
	public := scheme + "://" + host + path
	if ev.RawQueryString != "" {
		public += "?" + ev.RawQueryString
	}
	q, _ := url.ParseQuery(ev.RawQueryString)
	return &connector.Request{Method: ev.RequestContext.HTTP.Method, Path: path, Headers: headers,
		RawQuery: ev.RawQueryString, Query: q, Body: body, PublicURL: public, ReceivedAt: now}, nil
}

// Resign signs an existing webhook event again, in place, at time now with sec.Current: the
// signature headers, the signed body and query string, content-length and the request time are
// replaced; anything else is kept (the Standard Webhooks webhook-id, so the canonical event keeps
// its key). Use it to refresh samples whose signature carries a timestamp (Calendly, Mailgun,
// generic) before replaying them. A Mailgun event gets a fresh token each time.
func Resign(ev *events.APIGatewayV2HTTPRequest, connectorName string, sec connector.Secret, now time.Time) error {
	return resign(ev, connectorName, sec, now, "")
}

// resign signs ev in place; publicURL, when set, is the URL signed (before any query string),
// otherwise it is rebuilt from the event.
func resign(ev *events.APIGatewayV2HTTPRequest, connectorName string, sec connector.Secret, now time.Time, publicURL string) error {
	_, s, err := signer(connectorName)
	if err != nil {
		return err
	}
	req, err := request(ev, now)
	if err != nil {
		return err
	}
	if publicURL != "" {
		req.PublicURL = publicURL
		if ev.RawQueryString != "" {
			req.PublicURL += "?" + ev.RawQueryString
		}
	}
	if connectorName == "mailgun" {
		if req.Body, err = dropMailgunToken(req.Body); err != nil {
			return err
		}
	}
	if err := s.Sign(req, sec, now); err != nil {
		return fmt.Errorf("sign %s: %w", connectorName, err)
	}
	if ev.Headers == nil {
		ev.Headers = map[string]string{}
	}
	for k, v := range req.Headers {
		ev.Headers[strings.ToLower(k)] = v
	}
	ev.Body, ev.IsBase64Encoded = string(req.Body), false
	if len(req.Body) > 0 {
		ev.Headers["content-length"] = strconv.Itoa(len(req.Body))
	} else {
		delete(ev.Headers, "content-length")
	}
	if req.RawQuery != ev.RawQueryString {
		setQuery(ev, req.RawQuery)
	}
	stamp(ev, now)
	return nil
}

// dropMailgunToken removes the token of a Mailgun body's signature object, so that signing
// derives a new one.
func dropMailgunToken(body []byte) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, errors.New("mailgun: body is not a JSON object")
	}
	if _, ok := obj["signature"]; !ok {
		return body, nil
	}
	delete(obj, "signature")
	return json.Marshal(obj)
}

// HandshakeEvents returns the unsigned subscription handshakes: Meta's GET hub.challenge with
// the dev verify token, and Graph's validationToken POST. Keys are file names under events/.
func HandshakeEvents(secrets map[string]connector.Secret, publicBase string, now time.Time) (map[string]events.APIGatewayV2HTTPRequest, error) {
	u, err := url.Parse(strings.TrimRight(publicBase, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("public base URL %q: want http(s)://host[:port]", publicBase)
	}
	verify := secrets["meta-leads"].Get("verify_token")
	if verify == "" {
		return nil, errors.New("meta-leads: no verify_token in the secrets")
	}
	// Meta sends the parameters in this order.
	metaQuery := "hub.mode=subscribe&hub.challenge=" + url.QueryEscape(MetaChallenge) +
		"&hub.verify_token=" + url.QueryEscape(verify)
	meta := baseEvent("GET", "/webhooks/meta-leads", metaQuery, u)
	meta.Headers["accept"] = "*/*"
	stamp(&meta, now)

	graph := baseEvent("POST", "/webhooks/msgraph", "validationToken="+url.QueryEscape(GraphValidationToken), u)
	graph.Headers["content-type"] = "text/plain; charset=utf-8"
	graph.Headers["content-length"] = "0"
	stamp(&graph, now)
	return map[string]events.APIGatewayV2HTTPRequest{
		"webhook-meta-leads-handshake.json": meta,
		"webhook-msgraph-validation.json":   graph,
	}, nil
}

// Generate writes the sample events under dir (the repository's events/ directory) from the raw
// bodies in dir/payloads, signed at now with secrets (by connector name) for publicBase:
//
//   - webhook-<connector>.json for every connector;
//   - webhook-meta-leads-handshake.json and webhook-msgraph-validation.json;
//   - sqs-ingest-batch.json: the ingest queue's SQS FIFO batch holding the canonical events of
//     the Twilio, Typeform and Calendly samples;
//   - schedule-<job>.json: each reconcile job's scheduled input ({"job":"<job>"}).
func Generate(dir string, secrets map[string]connector.Secret, publicBase string, now time.Time) error {
	files := map[string]any{}
	webhooks := map[string]events.APIGatewayV2HTTPRequest{}
	for _, name := range registry.Names() {
		p, ok := Payloads[name]
		if !ok {
			return fmt.Errorf("no sample payload defined for connector %s", name)
		}
		sec, ok := secrets[name]
		if !ok {
			return fmt.Errorf("no secret for connector %s", name)
		}
		body, err := os.ReadFile(filepath.Join(dir, "payloads", p.File))
		if err != nil {
			return err
		}
		ev, err := WebhookEvent(name, body, p.ContentType, publicBase, sec, now)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		webhooks[name] = ev
		files["webhook-"+name+".json"] = ev
	}
	hs, err := HandshakeEvents(secrets, publicBase, now)
	if err != nil {
		return err
	}
	for f, ev := range hs {
		files[f] = ev
	}
	batch, err := sqsBatch(webhooks, secrets, now)
	if err != nil {
		return err
	}
	files["sqs-ingest-batch.json"] = batch
	for _, job := range ScheduleJobs {
		files["schedule-"+job+".json"] = map[string]string{"job": job}
	}

	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		var b []byte
		var err error
		if ev, ok := files[f].(events.APIGatewayV2HTTPRequest); ok {
			b, err = MarshalEvent(ev)
		} else {
			b, err = marshalIndent(files[f])
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ParseEvent verifies a webhook event with its connector at now and returns the canonical
// events it yields, with ReceivedAt set to now and each validated.
func ParseEvent(ev events.APIGatewayV2HTTPRequest, connectorName string, sec connector.Secret, now time.Time) ([]canonical.Event, error) {
	c, err := registry.New(connectorName)
	if err != nil {
		return nil, err
	}
	req, err := request(&ev, now)
	if err != nil {
		return nil, err
	}
	if _, err := c.Verify(req, sec, now); err != nil {
		return nil, fmt.Errorf("%s: verify: %w", connectorName, err)
	}
	parsed, err := c.Parse(req, sec)
	if err != nil {
		return nil, fmt.Errorf("%s: parse: %w", connectorName, err)
	}
	for i := range parsed.Events {
		parsed.Events[i].ReceivedAt = now.UTC()
		if err := parsed.Events[i].Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", connectorName, err)
		}
	}
	return parsed.Events, nil
}

// sqsBatch builds the SQS event the ingest worker receives for the SQSBatchSources samples, as
// the webhook function would have enqueued them.
func sqsBatch(webhooks map[string]events.APIGatewayV2HTTPRequest, secrets map[string]connector.Secret, now time.Time) (events.SQSEvent, error) {
	var out events.SQSEvent
	sent := now.UTC().Add(-2 * time.Second)
	for _, name := range SQSBatchSources {
		evs, err := ParseEvent(webhooks[name], name, secrets[name], now)
		if err != nil {
			return out, err
		}
		for _, e := range evs {
			body, err := e.Marshal()
			if err != nil {
				return out, err
			}
			n := len(out.Records)
			md5sum := md5.Sum(body)
			id := canonical.HashHex(e.Key)
			out.Records = append(out.Records, events.SQSMessage{
				MessageId:     uuidish(id),
				ReceiptHandle: "AQEB" + base64.StdEncoding.EncodeToString([]byte(id))[:64],
				Body:          string(body),
				Md5OfBody:     hex.EncodeToString(md5sum[:]),
				Attributes: map[string]string{
					"ApproximateReceiveCount":          "1",
					"SentTimestamp":                    strconv.FormatInt(sent.UnixMilli(), 10),
					"SenderId":                         "AROAEXAMPLEWEBHOOK0001:crmsync-local-" + name + "-webhook",
					"ApproximateFirstReceiveTimestamp": strconv.FormatInt(sent.Add(40*time.Millisecond).UnixMilli(), 10),
					"MessageGroupId":                   e.GroupID(),
					"MessageDeduplicationId":           e.DedupID(),
					"SequenceNumber":                   fmt.Sprintf("18884560%012d", 1000*n+1),
				},
				MessageAttributes: map[string]events.SQSMessageAttribute{},
				EventSourceARN:    IngestQueueARN,
				EventSource:       "aws:sqs",
				AWSRegion:         "us-east-1",
			})
		}
	}
	return out, nil
}

// uuidish formats the first 32 hex digits of h as a UUID.
func uuidish(h string) string {
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ConnectorOf returns the connector an event is addressed to, from its path /webhooks/<name>.
func ConnectorOf(ev *events.APIGatewayV2HTTPRequest) (string, error) {
	path := ev.RawPath
	if path == "" {
		path = ev.RequestContext.HTTP.Path
	}
	name, ok := strings.CutPrefix(path, "/webhooks/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("path %q is not /webhooks/<connector>", path)
	}
	if _, err := registry.New(name); err != nil {
		return "", err
	}
	return name, nil
}

// Refresh re-signs a sample webhook event at now with its connector's secret (from secrets, by
// connector name) and returns the connector's name. Subscription handshakes carry no signature:
// they only get the new request time.
func Refresh(ev *events.APIGatewayV2HTTPRequest, secrets map[string]connector.Secret, now time.Time) (string, error) {
	name, err := ConnectorOf(ev)
	if err != nil {
		return "", err
	}
	c, _, err := signer(name)
	if err != nil {
		return "", err
	}
	sec, ok := secrets[name]
	if !ok {
		return "", fmt.Errorf("no secret for connector %s", name)
	}
	req, err := request(ev, now)
	if err != nil {
		return "", err
	}
	if _, ok := c.Handshake(req, sec); ok {
		stamp(ev, now)
		return name, nil
	}
	return name, Resign(ev, name, sec, now)
}

// MarshalEvent renders an API Gateway event as indented JSON the way API Gateway sends it:
// without the empty requestContext.authentication object that aws-lambda-go always encodes.
func MarshalEvent(ev events.APIGatewayV2HTTPRequest) ([]byte, error) {
	b, err := marshalIndent(ev)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	var rc map[string]json.RawMessage
	if err := json.Unmarshal(m["requestContext"], &rc); err != nil {
		return nil, err
	}
	if ev.RequestContext.Authentication.ClientCert.ClientCertPem == "" {
		delete(rc, "authentication")
	}
	if m["requestContext"], err = marshalIndent(rc); err != nil {
		return nil, err
	}
	// Keep API Gateway's member order for the top level; map order elsewhere is irrelevant.
	var out strings.Builder
	out.WriteString("{")
	first := true
	for _, k := range []string{"version", "routeKey", "rawPath", "rawQueryString", "cookies", "headers",
		"queryStringParameters", "pathParameters", "requestContext", "stageVariables", "body", "isBase64Encoded"} {
		v, ok := m[k]
		if !ok {
			continue
		}
		if !first {
			out.WriteString(",")
		}
		first = false
		kb, _ := json.Marshal(k)
		out.Write(kb)
		out.WriteString(":")
		out.Write(v)
	}
	out.WriteString("}")
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(out.String()), "", "  "); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// marshalIndent encodes v as indented JSON without escaping <, > and & (bodies stay readable).
func marshalIndent(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
