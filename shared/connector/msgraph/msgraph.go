// Package msgraph owns crmsync's Microsoft Graph change-notification connector (route
// /webhooks/msgraph) for mail messages and calendar events: the validationToken handshake,
// clientState authentication of basic notifications, parsing each notification of a batch on its
// own into thin notification events (lifecycle notifications set aside, unusable items rejected
// one by one), and hydrating those events through the Graph REST API into email.* and meeting.*
// events, with the mailbox owner resolved from the user id Graph names the mailbox by.
package msgraph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/connector"
	"github.com/crmsync/crmsync/shared/identity"
)

const (
	// Name is the connector's route and source name.
	Name = "msgraph"
	// MappingVersion identifies the mapping this package applies.
	MappingVersion = "msgraph/1"

	// SecretClientState is the secret field holding the subscription's clientState.
	SecretClientState = "client_state"
	// SecretAccessToken is the secret field holding a static bearer token, used as is when the
	// secret holds no client credentials (by the token source, or by Hydrate itself when no
	// token source is configured).
	SecretAccessToken = "access_token"
	// SecretTenantID, SecretClientID and SecretClientSecret are the secret fields holding the
	// app registration's client credentials, from which the token source (shared/graphauth)
	// obtains and refreshes app tokens with the OAuth client-credentials flow.
	SecretTenantID     = "tenant_id"
	SecretClientID     = "client_id"
	SecretClientSecret = "client_secret"
	// SecretTokenURL is the secret field that overrides the token endpoint (default
	// https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token).
	SecretTokenURL = "token_url"
)

// Connector is the Microsoft Graph connector. Its hydrator caches mailbox owners (user id →
// addresses) and takes its bearer tokens from a TokenSource; it is safe for concurrent use.
type Connector struct {
	internal map[string]bool
	tokens   TokenSource // nil = the secret's access_token

	mu     sync.Mutex
	owners map[string]owner // user id (lower-case) → its addresses
}

// TokenSource hands out Graph app tokens per tenant (shared/graphauth.Tenants): Token returns a
// valid token for tenant ("" = the app's own tenant), its failures wrapping
// connector.ErrTransient or connector.ErrPermanent and never holding a secret; Invalidate drops
// tenant's cached token after Graph refused it (401).
type TokenSource interface {
	Token(ctx context.Context, tenant string) (string, error)
	Invalidate(tenant string)
}

// Option configures the connector.
type Option func(*Connector)

// WithInternalDomains names the organisation's own email domains. Hydrate uses them to tell a
// sent message from a received one and to keep the organisation's people out of the event's
// subject (the external person).
func WithInternalDomains(domains ...string) Option {
	return func(c *Connector) {
		for _, d := range domains {
			if d = strings.ToLower(strings.TrimSpace(d)); d != "" {
				c.internal[d] = true
			}
		}
	}
}

// WithTokenSource makes Hydrate authorize its Graph calls with app tokens from ts, asked for the
// notification's tenant (its tenantId; "" when it names none), and, when Graph answers 401,
// invalidate the token and retry once with a new one. Without a token source, Hydrate uses the
// secret's static access_token as is.
func WithTokenSource(ts TokenSource) Option {
	return func(c *Connector) { c.tokens = ts }
}

// New returns the Graph connector.
func New(opts ...Option) *Connector {
	c := &Connector{internal: map[string]bool{}, owners: map[string]owner{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

var (
	_ connector.Connector = (*Connector)(nil)
	_ connector.Signer    = (*Connector)(nil)
	_ connector.Hydrator  = (*Connector)(nil)
)

// Name returns "msgraph".
func (*Connector) Name() string { return Name }

// ContentTypes returns application/json (the text/plain validation request is a handshake,
// answered before the content-type check).
func (*Connector) ContentTypes() []string { return []string{"application/json"} }

// Handshake answers Graph's subscription validation: any request with a validationToken query
// parameter gets 200 text/plain with the URL-decoded token as the body.
func (*Connector) Handshake(req *connector.Request, _ connector.Secret) (*connector.Response, bool) {
	q := req.Query
	if q == nil {
		q, _ = url.ParseQuery(req.RawQuery)
	}
	if !q.Has("validationToken") {
		return nil, false
	}
	return &connector.Response{Status: http.StatusOK, ContentType: "text/plain", Body: q.Get("validationToken")}, true
}

// notification is one item of a Graph notification collection.
type notification struct {
	ID                             string       `json:"id"`
	SubscriptionID                 string       `json:"subscriptionId"`
	SubscriptionExpirationDateTime string       `json:"subscriptionExpirationDateTime"`
	ClientState                    *string      `json:"clientState"`
	ChangeType                     string       `json:"changeType"`
	Resource                       string       `json:"resource"`
	TenantID                       string       `json:"tenantId"`
	LifecycleEvent                 string       `json:"lifecycleEvent"`
	ResourceData                   resourceData `json:"resourceData"`
}

type resourceData struct {
	ODataType string `json:"@odata.type"`
	ODataID   string `json:"@odata.id"`
	ETag      string `json:"@odata.etag"`
	ID        string `json:"id"`
}

// knownItemKeys are the notification properties the mapping reads or deliberately drops.
var knownItemKeys = map[string]bool{
	"id": true, "subscriptionId": true, "subscriptionExpirationDateTime": true, "clientState": true,
	"changeType": true, "resource": true, "tenantId": true, "lifecycleEvent": true, "resourceData": true,
}

type collection struct {
	Value []json.RawMessage `json:"value"`
}

// changeTypes are the change types of message and event notifications.
var changeTypes = map[string]bool{"created": true, "updated": true, "deleted": true}

// lifecycleEvents are the lifecycle notifications Graph sends.
var lifecycleEvents = map[string]bool{"reauthorizationRequired": true, "subscriptionRemoved": true, "missed": true}

// authentic reports whether one raw notification carries a clientState equal to one of states
// (constant time). Only clientState is read, so an authentic but otherwise malformed item is
// still recognised as authentic.
func authentic(raw json.RawMessage, states []string) bool {
	var item struct {
		ClientState *string `json:"clientState"`
	}
	if json.Unmarshal(raw, &item) != nil || item.ClientState == nil {
		return false
	}
	for _, s := range states {
		if connector.Equal([]byte(s), []byte(*item.ClientState)) {
			return true
		}
	}
	return false
}

// Verify passes when at least one notification's clientState equals a configured client_state
// (constant time; current, then previous). Graph basic notifications carry no other proof; Parse
// drops the items that do not match.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, _ time.Time) (connector.Verified, error) {
	states := sec.Values(SecretClientState)
	if len(states) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no client_state configured", connector.ErrUnauthenticated)
	}
	var c collection
	if err := json.Unmarshal(req.Body, &c); err != nil {
		return connector.Verified{}, fmt.Errorf("%w: body is not a notification collection", connector.ErrUnauthenticated)
	}
	for _, raw := range c.Value {
		if authentic(raw, states) {
			return connector.Verified{}, nil
		}
	}
	return connector.Verified{}, fmt.Errorf("%w: no notification with a matching clientState", connector.ErrUnauthenticated)
}

// Sign sets every notification's clientState to sec.Current's client_state, as Graph echoes
// the value given at subscription time. The body is rewritten (re-encoded).
func (*Connector) Sign(req *connector.Request, sec connector.Secret, _ time.Time) error {
	state := sec.Get(SecretClientState)
	if state == "" {
		return errors.New("msgraph: no current client_state")
	}
	var c struct {
		Value []map[string]json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(req.Body, &c); err != nil {
		return fmt.Errorf("msgraph: sign: body is not a notification collection: %w", err)
	}
	enc, _ := json.Marshal(state)
	for _, item := range c.Value {
		if item != nil {
			item["clientState"] = enc
		}
	}
	body, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("msgraph: sign: %w", err)
	}
	req.Body = body
	return nil
}

func unusable(format string, a ...any) error {
	return fmt.Errorf("%w: msgraph: "+format, append([]any{connector.ErrUnusable}, a...)...)
}

// Parse handles every notification of the collection on its own (Graph batches notifications of
// several subscriptions, even tenants, in one POST). Items whose clientState does not match are
// dropped and counted (Dropped). Lifecycle notifications (Graph sends them here when a
// subscription's lifecycleNotificationUrl is this route) go to Lifecycle and each also becomes a
// KindNotification event of object LifecycleObject: queued like any event, recorded in the
// ledger by the worker (Hydrate skips it with its reason), and read back from there by the
// subscription manager's next run, which acts on it as on the lifecycle route's. Resource notifications
// for a message or an event become thin KindNotification events to hydrate; any other authentic
// item (malformed, an unknown change type or lifecycle event, another resource) is a Rejection
// indexed by its position in value[], whose Raw is {"value":[item]}. Only a body that is not a
// notification collection is unusable as a whole. The answer is 202.
func (*Connector) Parse(req *connector.Request, sec connector.Secret) (*connector.Parsed, error) {
	var c collection
	if err := json.Unmarshal(req.Body, &c); err != nil {
		return nil, unusable("body is not a notification collection")
	}
	states := sec.Values(SecretClientState)
	out := &connector.Parsed{Ack: &connector.Response{Status: http.StatusAccepted}}
	for i, raw := range c.Value {
		if !authentic(raw, states) {
			out.Dropped++
			continue
		}
		var n notification
		if err := json.Unmarshal(raw, &n); err != nil {
			out.Rejected = append(out.Rejected, rejection(i, raw, "notification is malformed"))
			continue
		}
		if n.LifecycleEvent != "" {
			if !lifecycleEvents[n.LifecycleEvent] {
				out.Rejected = append(out.Rejected, rejection(i, raw, "unknown lifecycleEvent "+quote(n.LifecycleEvent)))
				continue
			}
			if n.SubscriptionID == "" {
				out.Rejected = append(out.Rejected, rejection(i, raw, "lifecycle notification lacks subscriptionId"))
				continue
			}
			out.Lifecycle = append(out.Lifecycle, connector.Lifecycle{Index: i, Event: n.LifecycleEvent,
				SubscriptionID: n.SubscriptionID, TenantID: n.TenantID, Raw: raw})
			out.Events = append(out.Events, lifecycleEvent(n, raw, req.ReceivedAt))
			continue
		}
		ev, reason := thinEvent(n, raw, req.ReceivedAt)
		if reason != "" {
			out.Rejected = append(out.Rejected, rejection(i, raw, reason))
			continue
		}
		out.Events = append(out.Events, ev)
	}
	if out.Dropped > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("dropped %d notification(s) without a matching clientState", out.Dropped))
	}
	return out, nil
}

// LifecycleObject is the HydrateRef.Object of a lifecycle event: a Graph lifecycle notification
// that reached the notification route, queued so the ledger records it for the subscription
// manager (shared/graphsub reads it back by LifecycleGroupKey). Its Change is the lifecycleEvent
// and its Resource "subscriptions/{subscriptionId}".
const LifecycleObject = "lifecycle"

// LifecycleGroupKey is the group key of a subscription's lifecycle events: one FIFO group (in
// order) and one ledger ByGroup partition per subscription.
func LifecycleGroupKey(subscriptionID string) string {
	return identity.GroupKey(nil, nil, Name, "lifecycle:"+subscriptionID)
}

// lifecycleEvent maps an authentic lifecycle notification (known event, with a subscription id)
// to the event that carries it to the ledger. Graph's lifecycle items usually have no id and two
// distinct `missed` notifications can be byte for byte the same, so the key holds the receipt
// time unless the item has an id: a re-sent delivery records the request again, which the
// manager treats as the same request (it is idempotent).
func lifecycleEvent(n notification, raw json.RawMessage, receivedAt time.Time) canonical.Event {
	at := receivedAt.UTC()
	key := "msgraph:lifecycle:" + n.SubscriptionID + ":" + n.LifecycleEvent + ":"
	if n.ID != "" {
		key += n.ID
	} else {
		key += at.Format(time.RFC3339Nano)
	}
	ev := canonical.Event{
		Key: key, Source: Name, Kind: canonical.KindNotification,
		GroupKey:       LifecycleGroupKey(n.SubscriptionID),
		OccurredAt:     at,
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(raw),
		Hydrate:        &canonical.HydrateRef{Object: LifecycleObject, Resource: "subscriptions/" + n.SubscriptionID, Change: n.LifecycleEvent},
		ExternalIDs:    map[string]string{"subscription_id": n.SubscriptionID},
	}
	if n.TenantID != "" {
		ev.ExternalIDs["tenant_id"] = n.TenantID
	}
	return ev
}

// thinEvent maps one resource notification to a thin event, or says why it cannot.
func thinEvent(n notification, raw json.RawMessage, receivedAt time.Time) (canonical.Event, string) {
	if n.SubscriptionID == "" || n.ChangeType == "" || n.Resource == "" {
		return canonical.Event{}, "notification lacks subscriptionId, changeType or resource"
	}
	if !changeTypes[n.ChangeType] {
		return canonical.Event{}, "unsupported changeType " + quote(n.ChangeType)
	}
	object := objectOf(n)
	if object == "" {
		return canonical.Event{}, "resource is neither a message nor an event"
	}
	key := "msgraph:" + n.ID
	if n.ID == "" {
		key = "msgraph:" + n.SubscriptionID + ":" + n.ChangeType + ":" + n.Resource + ":" + n.ResourceData.ETag
	}
	ev := canonical.Event{
		Key:      key,
		Source:   Name,
		Kind:     canonical.KindNotification,
		GroupKey: identity.GroupKey(nil, nil, Name, n.Resource),
		// Graph gives no event time in a basic notification (subscriptionExpirationDateTime is
		// not one): the receipt time stands in until the worker hydrates the event and
		// replaces it.
		OccurredAt:     receivedAt.UTC(),
		MappingVersion: MappingVersion,
		PayloadHash:    canonical.PayloadHash(raw),
		Hydrate:        &canonical.HydrateRef{Object: object, Resource: n.Resource, Change: n.ChangeType},
		ExternalIDs:    map[string]string{"subscription_id": n.SubscriptionID},
	}
	if n.TenantID != "" {
		ev.ExternalIDs["tenant_id"] = n.TenantID
	}
	if n.ResourceData.ID != "" {
		ev.ExternalIDs["resource_id"] = n.ResourceData.ID
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) == nil {
		for k := range m {
			if !knownItemKeys[k] {
				ev.Unmapped = append(ev.Unmapped, "value[]."+k)
			}
		}
		sort.Strings(ev.Unmapped)
	}
	if err := ev.Validate(); err != nil {
		return canonical.Event{}, "notification maps to an invalid event"
	}
	return ev, ""
}

// rejection records one authentic item that cannot be used, as a collection of its own.
func rejection(i int, raw json.RawMessage, reason string) connector.Rejection {
	single := make([]byte, 0, len(raw)+12)
	single = append(append(append(single, `{"value":[`...), raw...), "]}"...)
	return connector.Rejection{Index: i, Reason: "value[" + strconv.Itoa(i) + "]: " + reason, Raw: single}
}

// quote keeps a vendor value short and printable for a reason.
func quote(s string) string {
	if len(s) > 40 {
		s = s[:40]
	}
	return strconv.Quote(s)
}

// objectOf tells a message from an event by the resource data's type, else by the resource path.
func objectOf(n notification) string {
	switch strings.ToLower(n.ResourceData.ODataType) {
	case "#microsoft.graph.message":
		return "message"
	case "#microsoft.graph.event":
		return "event"
	}
	r := strings.ToLower(n.Resource)
	switch {
	case strings.Contains(r, "/messages/") || strings.Contains(r, "/messages('"):
		return "message"
	case strings.Contains(r, "/events/") || strings.Contains(r, "/events('"):
		return "event"
	}
	return ""
}
