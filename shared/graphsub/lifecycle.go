package graphsub

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/emf"
)

// Lifecycle events Graph sends to the lifecycleNotificationUrl.
const (
	EventReauthorizationRequired = "reauthorizationRequired"
	EventSubscriptionRemoved     = "subscriptionRemoved"
	EventMissed                  = "missed"
)

// maxLifecycleBody bounds a lifecycle notification collection.
const maxLifecycleBody = 1 << 20

// Request is the lifecycle route's view of one HTTP request.
type Request struct {
	Method string
	Query  url.Values
	Body   []byte
}

// Response is the lifecycle route's answer.
type Response struct {
	Status      int
	ContentType string
	Body        string
}

type lifecycleItem struct {
	SubscriptionID string  `json:"subscriptionId"`
	ClientState    *string `json:"clientState"`
	LifecycleEvent string  `json:"lifecycleEvent"`
}

// Lifecycle serves POST /webhooks/msgraph/lifecycle: Graph's validationToken handshake (200,
// text/plain, the token), then notifications authenticated by clientState (none matching: 401),
// each lifecycle event recorded on its subscription's state item; 202 once recorded, 503 when
// recording failed (Graph retries). The actions themselves wait for the next run.
func (m *Manager) Lifecycle(ctx context.Context, req Request) Response {
	if req.Query.Has("validationToken") {
		return Response{Status: http.StatusOK, ContentType: "text/plain", Body: req.Query.Get("validationToken")}
	}
	if req.Method != http.MethodPost {
		return Response{Status: http.StatusMethodNotAllowed}
	}
	if len(req.Body) > maxLifecycleBody {
		return Response{Status: http.StatusRequestEntityTooLarge}
	}
	sec, err := m.d.Secrets.Get(ctx, m.cfg.SecretID)
	if err != nil {
		m.log.ErrorContext(ctx, "lifecycle: secret unavailable", "error", err.Error())
		return Response{Status: http.StatusServiceUnavailable}
	}
	states := sec.Values("client_state")
	var c struct {
		Value []lifecycleItem `json:"value"`
	}
	if len(states) == 0 || json.Unmarshal(req.Body, &c) != nil {
		m.log.WarnContext(ctx, "lifecycle refused", "reason", "no client_state configured or not a notification collection")
		return Response{Status: http.StatusUnauthorized}
	}
	var matched []lifecycleItem
	for _, it := range c.Value {
		if it.ClientState != nil && anyEqual(states, *it.ClientState) {
			matched = append(matched, it)
		}
	}
	if len(matched) == 0 {
		m.log.WarnContext(ctx, "lifecycle refused", "reason", "no notification with a matching clientState", "notifications", len(c.Value))
		return Response{Status: http.StatusUnauthorized}
	}
	now := m.d.Now()
	for _, it := range matched {
		if err := m.Record(ctx, it.SubscriptionID, it.LifecycleEvent, now); err != nil {
			m.log.ErrorContext(ctx, "lifecycle: record failed", "subscription_id", it.SubscriptionID, "event", it.LifecycleEvent, "error", err.Error())
			return Response{Status: http.StatusServiceUnavailable}
		}
	}
	m.metrics.Emit(nil, emf.Metric{Name: MetricLifecycle, Value: float64(len(matched)), Unit: emf.Count})
	return Response{Status: http.StatusAccepted}
}

func anyEqual(want []string, got string) bool {
	for _, w := range want {
		if hmac.Equal([]byte(w), []byte(got)) {
			return true
		}
	}
	return false
}

// Record records a lifecycle event on the state item of the subscription it names (an unknown
// subscription or event is logged and ignored): reauthorizationRequired asks for a reauthorize,
// subscriptionRemoved for a recreate (and a resync from then), missed for a resync of the last
// ResyncLookback.
func (m *Manager) Record(ctx context.Context, subscriptionID, event string, now time.Time) error {
	if m.requests(subscriptionID, event, now) == nil {
		m.log.WarnContext(ctx, "lifecycle: unknown event ignored", "subscription_id", subscriptionID, "event", safeCode(event))
		return nil
	}
	pk, err := m.findBySubscription(ctx, subscriptionID)
	if err != nil || pk == "" {
		if err == nil {
			m.log.WarnContext(ctx, "lifecycle: unknown subscription ignored", "subscription_id", subscriptionID, "event", event)
		}
		return err
	}
	return m.recordOn(ctx, pk, subscriptionID, event, now, "")
}

// requests are the state item attributes a lifecycle event at now asks to set (nil for an
// unknown event).
func (m *Manager) requests(subscriptionID, event string, now time.Time) map[string]string {
	switch event {
	case EventReauthorizationRequired:
		return map[string]string{"reauthorize_requested": formatTime(now)}
	case EventSubscriptionRemoved:
		return map[string]string{"recreate_requested": formatTime(now)}
	case EventMissed:
		return map[string]string{"resync_since": formatTime(now.Add(-m.cfg.ResyncLookback)), "resync_subscription_id": subscriptionID}
	}
	return nil
}

// recordOn records a lifecycle event at now on the state item pk while it still holds the
// subscription (a request already pending is kept: if_not_exists). seen, when set, is the ledger
// entry's recorded_at the notification came from (collectLedgerLifecycle): it is written as the
// item's LifecycleLedgerSeen in the same update, which is refused if the item has already seen
// it, so each ledger entry is recorded once even by concurrent runs.
func (m *Manager) recordOn(ctx context.Context, pk, subscriptionID, event string, now time.Time, seen string) error {
	set := map[string]string{}
	if req := m.requests(subscriptionID, event, now); req != nil {
		set = req
	} else if seen == "" {
		return nil
	}
	expr := "SET updated_at = :now"
	values := map[string]types.AttributeValue{":now": str(formatTime(m.d.Now())), ":sid": str(subscriptionID),
		":one": &types.AttributeValueMemberN{Value: "1"}}
	cond := "subscription_id = :sid"
	if len(set) > 0 {
		expr += ", last_lifecycle = :ll"
		values[":ll"] = str(event + " " + formatTime(now))
	}
	for attr, v := range set {
		expr += fmt.Sprintf(", %[1]s = if_not_exists(%[1]s, :%[1]s)", attr)
		values[":"+attr] = str(v)
	}
	if seen != "" {
		expr += ", lifecycle_ledger_seen = :seen"
		values[":seen"] = str(seen)
		cond += " AND (attribute_not_exists(lifecycle_ledger_seen) OR lifecycle_ledger_seen < :seen)"
	}
	_, err := m.d.DynamoDB.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(m.cfg.StateTable),
		Key: map[string]types.AttributeValue{"pk": str(pk)}, UpdateExpression: aws.String(expr + " ADD version :one"),
		ConditionExpression: aws.String(cond), ExpressionAttributeValues: values})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		m.log.WarnContext(ctx, "lifecycle: subscription replaced or notification already recorded meanwhile, ignored",
			"subscription_id", subscriptionID, "event", safeCode(event))
		return nil
	}
	if len(set) == 0 {
		if err != nil {
			return fmt.Errorf("record lifecycle event: %w", err)
		}
		m.log.WarnContext(ctx, "lifecycle: unknown event ignored", "subscription_id", subscriptionID, "event", safeCode(event))
		return nil
	}
	if err != nil {
		return fmt.Errorf("record lifecycle event: %w", err)
	}
	m.log.InfoContext(ctx, "lifecycle recorded", "subscription", pk, "subscription_id", subscriptionID, "event", event)
	return nil
}

// findBySubscription returns the key of the state item holding the subscription ("" when none:
// the table holds one small item per mailbox and resource, so a filtered scan is enough).
func (m *Manager) findBySubscription(ctx context.Context, id string) (string, error) {
	in := &dynamodb.ScanInput{TableName: aws.String(m.cfg.StateTable), FilterExpression: aws.String("subscription_id = :sid"),
		ProjectionExpression: aws.String("pk"), ExpressionAttributeValues: map[string]types.AttributeValue{":sid": str(id)}}
	for {
		page, err := m.d.DynamoDB.Scan(ctx, in)
		if err != nil {
			return "", fmt.Errorf("find subscription state: %w", err)
		}
		for _, item := range page.Items {
			if v, ok := item["pk"].(*types.AttributeValueMemberS); ok {
				return v.Value, nil
			}
		}
		if in.ExclusiveStartKey = page.LastEvaluatedKey; len(in.ExclusiveStartKey) == 0 {
			return "", nil
		}
	}
}

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }

// Handle is the function's Lambda handler: an HTTP API request is the lifecycle route, any other
// payload (the schedule's, or {"action":"ensure"}) runs the manager and returns its Report.
func (m *Manager) Handle(ctx context.Context, payload json.RawMessage) (any, error) {
	var probe struct {
		RequestContext *struct {
			HTTP struct {
				Method string `json:"method"`
			} `json:"http"`
		} `json:"requestContext"`
	}
	if json.Unmarshal(payload, &probe) != nil || probe.RequestContext == nil || probe.RequestContext.HTTP.Method == "" {
		return m.Run(ctx)
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(payload, &ev); err != nil {
		return nil, fmt.Errorf("lifecycle: not an HTTP API request: %w", err)
	}
	body := []byte(ev.Body)
	if ev.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(ev.Body)
		if err != nil {
			return events.APIGatewayV2HTTPResponse{StatusCode: http.StatusBadRequest}, nil
		}
		body = b
	}
	q, err := url.ParseQuery(ev.RawQueryString)
	if err != nil || ev.RawQueryString == "" {
		q = url.Values{}
		for k, v := range ev.QueryStringParameters {
			q.Set(k, v)
		}
	}
	resp := m.Lifecycle(ctx, Request{Method: strings.ToUpper(ev.RequestContext.HTTP.Method), Query: q, Body: body})
	out := events.APIGatewayV2HTTPResponse{StatusCode: resp.Status, Body: resp.Body}
	if resp.ContentType != "" {
		out.Headers = map[string]string{"Content-Type": resp.ContentType}
	}
	return out, nil
}
