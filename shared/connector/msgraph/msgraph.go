// Package msgraph owns crmsync's Microsoft Graph change-notification connector (route
// /webhooks/msgraph) for mail messages and calendar events: the validationToken handshake,
// clientState authentication of basic notifications, parsing into thin notification events (and
// lifecycle notes), and hydrating those events through the Graph REST API into email.* and
// meeting.* events.
package msgraph

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
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
	// SecretAccessToken is the secret field holding the bearer token used to hydrate.
	SecretAccessToken = "access_token"
)

// Connector is the Microsoft Graph connector.
type Connector struct {
	internal map[string]bool
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

// New returns the Graph connector.
func New(opts ...Option) *Connector {
	c := &Connector{internal: map[string]bool{}}
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

// matching decodes the body and returns the items whose clientState matches a configured one,
// with their raw bytes.
func matching(body []byte, sec connector.Secret) (items []notification, raws []json.RawMessage, total int, err error) {
	var c collection
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, nil, 0, err
	}
	total = len(c.Value)
	states := sec.Values(SecretClientState)
	for _, raw := range c.Value {
		var n notification
		if json.Unmarshal(raw, &n) != nil || n.ClientState == nil {
			continue
		}
		for _, s := range states {
			if connector.Equal([]byte(s), []byte(*n.ClientState)) {
				items = append(items, n)
				raws = append(raws, raw)
				break
			}
		}
	}
	return items, raws, total, nil
}

// Verify passes when at least one notification's clientState equals a configured client_state
// (constant time; current, then previous). Graph basic notifications carry no other proof.
func (*Connector) Verify(req *connector.Request, sec connector.Secret, _ time.Time) (connector.Verified, error) {
	if len(sec.Values(SecretClientState)) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no client_state configured", connector.ErrUnauthenticated)
	}
	items, _, _, err := matching(req.Body, sec)
	if err != nil {
		return connector.Verified{}, fmt.Errorf("%w: body is not a notification collection", connector.ErrUnauthenticated)
	}
	if len(items) == 0 {
		return connector.Verified{}, fmt.Errorf("%w: no notification with a matching clientState", connector.ErrUnauthenticated)
	}
	return connector.Verified{}, nil
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

// Parse keeps only the notifications whose clientState matches. Lifecycle notifications become
// notes ("lifecycle:<event>:<subscriptionId>"); resource notifications become thin
// KindNotification events to hydrate. The answer is 202.
func (*Connector) Parse(req *connector.Request, sec connector.Secret) (*connector.Parsed, error) {
	items, raws, total, err := matching(req.Body, sec)
	if err != nil {
		return nil, unusable("body is not a notification collection")
	}
	out := &connector.Parsed{Ack: &connector.Response{Status: http.StatusAccepted}}
	if dropped := total - len(items); dropped > 0 {
		out.Notes = append(out.Notes, fmt.Sprintf("dropped %d notification(s) without a matching clientState", dropped))
	}
	for i, n := range items {
		if n.LifecycleEvent != "" {
			out.Notes = append(out.Notes, "lifecycle:"+n.LifecycleEvent+":"+n.SubscriptionID)
			continue
		}
		if n.SubscriptionID == "" || n.ChangeType == "" || n.Resource == "" {
			return nil, unusable("notification %d lacks subscriptionId, changeType or resource", i)
		}
		object := objectOf(n)
		if object == "" {
			return nil, unusable("notification %d: resource is neither a message nor an event", i)
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
			// Graph gives no event time in a basic notification
			// (subscriptionExpirationDateTime is not one): the receipt time stands in until
			// the worker hydrates the event and replaces it.
			OccurredAt:     req.ReceivedAt.UTC(),
			MappingVersion: MappingVersion,
			PayloadHash:    canonical.PayloadHash(raws[i]),
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
		if json.Unmarshal(raws[i], &m) == nil {
			for k := range m {
				if !knownItemKeys[k] {
					ev.Unmapped = append(ev.Unmapped, "value[]."+k)
				}
			}
			sort.Strings(ev.Unmapped)
		}
		out.Events = append(out.Events, ev)
	}
	return out, nil
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
