// Package connector owns the contract between crmsync's webhook handling and each vendor
// connector: the request a connector sees, the secret it verifies with, the small interface it
// implements (handshake, verify, parse; optionally hydrate and list), and the sentinel errors
// that decide the HTTP answer (401 for unauthenticated, quarantine for authentic but unusable)
// and what the worker does with a failed hydration (retry, reject, skip).
package connector

import (
	"context"
	"crypto/hmac"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
)

// Sentinel errors. Connectors wrap them with context; the webhook handler maps them to answers.
var (
	// ErrUnauthenticated: the request's signature, token or clientState is missing or wrong, or
	// its timestamp is outside tolerance. Answered 401, nothing stored.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrUnusable: the request is authentic but cannot be parsed or mapped. Quarantined, 202
	// (or the connector's QuarantineAnswer).
	ErrUnusable = errors.New("unusable payload")
	// ErrNotFound: a hydrate or list call found nothing (vendor 404): permanent.
	ErrNotFound = errors.New("vendor object not found")
	// ErrTransient: a vendor call failed in a way worth retrying (5xx, timeout, 429, the
	// vendor's rate-limit codes).
	ErrTransient = errors.New("transient vendor failure")
	// ErrPermanent: a vendor call failed in a way retrying cannot fix (an expired or revoked
	// token, a missing permission, an invalid parameter). Connectors wrap it with the vendor's
	// error code and message; the event is recorded rejected, never retried to the DLQ.
	ErrPermanent = errors.New("permanent vendor failure")
	// ErrSkipped: hydration found nothing to apply on purpose (a draft, a deleted message).
	// Errors made by Skip wrap it and ErrNotFound, so a worker that knows only ErrNotFound still
	// never retries them.
	ErrSkipped = errors.New("skipped")
)

// Skip returns an error that reports a thin event deliberately not applied; reason is short and
// holds no personal data. It wraps ErrSkipped and ErrNotFound.
func Skip(reason string) error { return &skipError{reason: reason} }

type skipError struct{ reason string }

// Error implements error.
func (e *skipError) Error() string { return ErrSkipped.Error() + ": " + e.reason }

// Unwrap returns ErrSkipped and ErrNotFound.
func (e *skipError) Unwrap() []error { return []error{ErrSkipped, ErrNotFound} }

// Request is what a connector sees of one HTTP delivery.
type Request struct {
	Method string
	Path   string
	// Headers holds the request headers with lower-cased names (as API Gateway HTTP API sends
	// them); several values of one header are joined with ",".
	Headers map[string]string
	// RawQuery is the query string as received, without '?'.
	RawQuery string
	Query    url.Values
	Body     []byte
	// PublicURL is the full URL the vendor called, including the query string (the configured
	// public base URL plus path, else rebuilt from the request context).
	PublicURL  string
	ReceivedAt time.Time
}

// Header returns a header's value by lower-case name.
func (r *Request) Header(name string) string { return r.Headers[name] }

// Secret is a connector's secret as stored in Secrets Manager: JSON
// {"current": {...}, "previous": {...}}, each a map of named values (signing_key, verify_token,
// api_token, ...; each connector documents its names). Previous exists during rotation; both are
// tried when verifying.
type Secret struct {
	Current  map[string]string `json:"current"`
	Previous map[string]string `json:"previous,omitempty"`
}

// Values returns the non-empty values of a named field, current first, then previous.
func (s Secret) Values(name string) []string {
	var out []string
	if v := s.Current[name]; v != "" {
		out = append(out, v)
	}
	if v := s.Previous[name]; v != "" && v != s.Current[name] {
		out = append(out, v)
	}
	return out
}

// Get returns the current value of a named field.
func (s Secret) Get(name string) string { return s.Current[name] }

// Response is a connector-chosen HTTP answer (handshakes, acknowledgements).
type Response struct {
	Status      int
	ContentType string
	Body        string
}

// Verified is what a successful verification yields.
type Verified struct {
	// Nonce, when set, must be claimed once in the replay cache until NonceExpires; a second
	// claim is a replay and is refused as unauthenticated (Mailgun tokens).
	Nonce        string
	NonceExpires time.Time
}

// Parsed is the result of parsing an authentic delivery.
type Parsed struct {
	// Events are the canonical events to enqueue; ReceivedAt is filled by the caller.
	Events []canonical.Event
	// Ack, when set, is the answer to give once every event is enqueued (e.g. Graph's 202);
	// otherwise 200 with an empty JSON body.
	Ack *Response
	// Notes are operational facts worth logging, never personal data.
	Notes []string
	// Rejected are the authentic items of a batched delivery (a Graph notification, a Meta
	// change) that cannot be parsed or mapped; the other items' events are in Events. Each is
	// quarantined on its own and the delivery is still acknowledged.
	Rejected []Rejection
	// Lifecycle are the authentic subscription lifecycle items of the delivery (Graph
	// lifecycleEvent), for the log; the connector also returns each as an event to queue, which
	// the subscription manager reads back from the ledger.
	Lifecycle []Lifecycle
	// Dropped counts the items dropped as unauthenticated (a Graph notification whose
	// clientState does not match) while others in the same delivery authenticated.
	Dropped int
}

// Rejection is one item of a delivery that Parse could not turn into an event.
type Rejection struct {
	// Index is the item's position in the delivery, counted as the connector documents it.
	Index int
	// Reason says what is wrong, without personal data.
	Reason string
	// Raw is the item alone, as a delivery of its own that Parse accepts (so it can be
	// released from quarantine after a mapping fix).
	Raw []byte
}

// Lifecycle is one subscription lifecycle notification of a delivery.
type Lifecycle struct {
	// Index is the item's position in the delivery.
	Index int
	// Event is the vendor's lifecycle event name (Graph: reauthorizationRequired,
	// subscriptionRemoved, missed).
	Event string
	// SubscriptionID and TenantID identify the subscription it is about.
	SubscriptionID string
	TenantID       string
	// Raw is the item as received.
	Raw []byte
}

// Connector is one vendor's webhook adapter. Implementations are pure: no AWS, no network; the
// clock is passed in.
type Connector interface {
	// Name is the connector's source name, as in /webhooks/<name>.
	Name() string
	// ContentTypes lists the media types the vendor sends (lower-case, no parameters); others
	// are answered 415. Handshakes are checked before this.
	ContentTypes() []string
	// Handshake answers a subscription handshake (Meta's GET hub.challenge, Graph's
	// validationToken). ok is false when the request is not a handshake.
	Handshake(req *Request, sec Secret) (resp *Response, ok bool)
	// Verify authenticates the delivery exactly as the vendor signs it, trying the current and
	// the previous secret. Failures wrap ErrUnauthenticated.
	Verify(req *Request, sec Secret, now time.Time) (Verified, error)
	// Parse turns an authentic delivery into canonical events. Failures wrap ErrUnusable.
	Parse(req *Request, sec Secret) (*Parsed, error)
}

// QuarantineAnswerer is implemented by connectors whose vendor must get a particular answer to
// an authentic delivery quarantined as unusable, so it stops re-sending what no retry can fix
// (Mailgun stops only on 406). The answer is given once the payload is stored; connectors that do
// not implement it are answered 202.
type QuarantineAnswerer interface {
	QuarantineAnswer() Response
}

// Doer is the HTTP client a connector uses for vendor API calls.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Hydrator is implemented by connectors whose webhooks are thin: it fetches the vendor object
// behind a notification event and fills the event in (subject, fields, activity, kind).
type Hydrator interface {
	Hydrate(ctx context.Context, ev *canonical.Event, sec Secret, api API) error
}

// Lister is implemented by connectors whose vendor can list past items; reconciliation and
// backfill use it to find deliveries that never arrived.
type Lister interface {
	List(ctx context.Context, since, until time.Time, sec Secret, api API) ([]canonical.Event, error)
}

// API is how a connector reaches its vendor's REST API.
type API struct {
	BaseURL string
	Client  Doer
}

// Equal compares two byte strings in constant time.
func Equal(a, b []byte) bool { return hmac.Equal(a, b) }

// Signer is implemented by connectors that can produce a delivery exactly as their vendor would
// sign it, with sec.Current: sample events, tests and load generators use it.
type Signer interface {
	Sign(req *Request, sec Secret, now time.Time) error
}

// NoHandshake is embedded by connectors whose vendor has no subscription handshake.
type NoHandshake struct{}

// Handshake always reports false: the request is never a handshake.
func (NoHandshake) Handshake(*Request, Secret) (*Response, bool) { return nil, false }
