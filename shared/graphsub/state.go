package graphsub

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Subscription statuses.
const (
	// StatusActive: the subscription exists and its last create, renew or reauthorize succeeded.
	StatusActive = "active"
	// StatusFailing: the last attempt failed (LastError says why); the next run retries.
	StatusFailing = "failing"
	// StatusMissing: there is no subscription yet.
	StatusMissing = "missing"
)

// TimeLayout is how the state item's times are written (RFC 3339, UTC, seconds).
const TimeLayout = time.RFC3339

// State is one (mailbox, resource) subscription's state item in the subscriptions table. The
// manager owns every field but the requests (ReauthorizeRequested, RecreateRequested,
// ResyncSince, ResyncSubscriptionID, LastLifecycle), which the lifecycle route (or a run, for
// the lifecycle notifications of the notification route it reads from the ledger, advancing
// LifecycleLedgerSeen) sets and the manager clears once carried out. Version increases on every write (optimistic locking).
type State struct {
	// PK is "<mailbox>/<resource>", e.g. "sam@example.com/messages".
	PK       string `dynamodbav:"pk" json:"pk"`
	Mailbox  string `dynamodbav:"mailbox" json:"mailbox"`
	Resource string `dynamodbav:"resource" json:"resource"`
	// UserID is the mailbox's Graph user id (GET /users/{mailbox}).
	UserID string `dynamodbav:"user_id,omitempty" json:"user_id,omitempty"`
	// SubscriptionID and GraphResource are the live subscription's id and resource path.
	SubscriptionID string `dynamodbav:"subscription_id,omitempty" json:"subscription_id,omitempty"`
	GraphResource  string `dynamodbav:"graph_resource,omitempty" json:"graph_resource,omitempty"`
	// ExpiresAt is the subscription's expirationDateTime.
	ExpiresAt string `dynamodbav:"subscription_expires_at,omitempty" json:"expires_at,omitempty"`
	Status    string `dynamodbav:"status" json:"status"`

	CreatedAt      string `dynamodbav:"created_at,omitempty" json:"created_at,omitempty"`
	RenewedAt      string `dynamodbav:"renewed_at,omitempty" json:"renewed_at,omitempty"`
	ReauthorizedAt string `dynamodbav:"reauthorized_at,omitempty" json:"reauthorized_at,omitempty"`
	// LastError is the last failure (an HTTP status and Graph error code, never a token).
	LastError   string `dynamodbav:"last_error,omitempty" json:"last_error,omitempty"`
	LastErrorAt string `dynamodbav:"last_error_at,omitempty" json:"last_error_at,omitempty"`
	Failures    int    `dynamodbav:"failures,omitempty" json:"failures,omitempty"`

	// Requests, set by the lifecycle route or a detected gap and cleared when carried out.
	ReauthorizeRequested string `dynamodbav:"reauthorize_requested,omitempty" json:"reauthorize_requested,omitempty"`
	RecreateRequested    string `dynamodbav:"recreate_requested,omitempty" json:"recreate_requested,omitempty"`
	// ResyncSince is the start of a window still to resync; ResyncSubscriptionID the
	// subscription that was live in it (part of the resync events' keys).
	ResyncSince          string `dynamodbav:"resync_since,omitempty" json:"resync_since,omitempty"`
	ResyncSubscriptionID string `dynamodbav:"resync_subscription_id,omitempty" json:"resync_subscription_id,omitempty"`
	// LastLifecycle is the last lifecycle notification recorded: "<event> <time>".
	LastLifecycle string `dynamodbav:"last_lifecycle,omitempty" json:"last_lifecycle,omitempty"`
	// LifecycleLedgerSeen is the ledger recorded_at (store.TimeLayout) of the last lifecycle
	// notification read back from the ledger (one that came to the notification route): later
	// runs read only newer ones.
	LifecycleLedgerSeen string `dynamodbav:"lifecycle_ledger_seen,omitempty" json:"lifecycle_ledger_seen,omitempty"`

	LastResyncAt       string `dynamodbav:"last_resync_at,omitempty" json:"last_resync_at,omitempty"`
	LastResyncEnqueued int    `dynamodbav:"last_resync_enqueued,omitempty" json:"last_resync_enqueued,omitempty"`
	UpdatedAt          string `dynamodbav:"updated_at,omitempty" json:"updated_at,omitempty"`
	Version            int64  `dynamodbav:"version" json:"version"`
}

// StateKey is the state item's key of a mailbox's resource.
func StateKey(mailbox, resource string) string { return mailbox + "/" + resource }

// Expiry parses ExpiresAt (zero when unset or malformed).
func (s *State) Expiry() time.Time { return parseTime(s.ExpiresAt) }

func parseTime(v string) time.Time {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

func formatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// List returns every state item, sorted by key (the table holds one per mailbox and resource).
func (m *Manager) List(ctx context.Context) ([]State, error) {
	return ListStates(ctx, m.d.DynamoDB, m.cfg.StateTable)
}

// ListStates scans the subscriptions table; the CLI uses it without a manager.
func ListStates(ctx context.Context, ddb DynamoDBAPI, table string) ([]State, error) {
	var out []State
	var start map[string]types.AttributeValue
	for {
		page, err := ddb.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table), ExclusiveStartKey: start, ConsistentRead: aws.Bool(true)})
		if err != nil {
			return nil, fmt.Errorf("scan subscription states: %w", err)
		}
		for _, item := range page.Items {
			var s State
			if err := attributevalue.UnmarshalMap(item, &s); err != nil {
				return nil, fmt.Errorf("subscription state: %w", err)
			}
			out = append(out, s)
		}
		if start = page.LastEvaluatedKey; len(start) == 0 {
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PK < out[j].PK })
	return out, nil
}

func (m *Manager) get(ctx context.Context, pk string) (*State, error) {
	out, err := m.d.DynamoDB.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(m.cfg.StateTable),
		Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: pk}}, ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("read subscription state: %w", err)
	}
	if len(out.Item) == 0 {
		return nil, nil
	}
	var s State
	if err := attributevalue.UnmarshalMap(out.Item, &s); err != nil {
		return nil, fmt.Errorf("subscription state: %w", err)
	}
	return &s, nil
}

// errConflict: the item changed since it was read.
var errConflict = errors.New("subscription state changed concurrently")

// put writes s if the stored item is still at version read (absent when read is 0).
func (m *Manager) put(ctx context.Context, s *State, read int64) error {
	s.Version = read + 1
	s.UpdatedAt = formatTime(m.d.Now())
	item, err := attributevalue.MarshalMap(s)
	if err != nil {
		return fmt.Errorf("subscription state: %w", err)
	}
	in := &dynamodb.PutItemInput{TableName: aws.String(m.cfg.StateTable), Item: item}
	if read == 0 {
		in.ConditionExpression = aws.String("attribute_not_exists(pk)")
	} else {
		in.ConditionExpression = aws.String("version = :v")
		in.ExpressionAttributeValues = map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: fmt.Sprint(read)}}
	}
	_, err = m.d.DynamoDB.PutItem(ctx, in)
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return errConflict
	}
	if err != nil {
		return fmt.Errorf("write subscription state: %w", err)
	}
	return nil
}

// save writes the run's result s over the item read at the start (before). When the lifecycle
// route changed the item meanwhile, its new requests are kept: a request that changed since
// before was made after the run read it, so it is not the one the run carried out.
func (m *Manager) save(ctx context.Context, s *State, before State) error {
	for attempt := 0; attempt < 3; attempt++ {
		err := m.put(ctx, s, before.Version)
		if !errors.Is(err, errConflict) {
			return err
		}
		cur, err := m.get(ctx, s.PK)
		if err != nil {
			return err
		}
		if cur == nil {
			cur = &State{}
		}
		keep := func(dst *string, was, now string) {
			if was != now {
				*dst = now
			}
		}
		keep(&s.ReauthorizeRequested, before.ReauthorizeRequested, cur.ReauthorizeRequested)
		keep(&s.RecreateRequested, before.RecreateRequested, cur.RecreateRequested)
		keep(&s.ResyncSince, before.ResyncSince, cur.ResyncSince)
		keep(&s.ResyncSubscriptionID, before.ResyncSubscriptionID, cur.ResyncSubscriptionID)
		keep(&s.LastLifecycle, before.LastLifecycle, cur.LastLifecycle)
		keep(&s.LifecycleLedgerSeen, before.LifecycleLedgerSeen, cur.LifecycleLedgerSeen)
		before = *cur
	}
	return fmt.Errorf("write subscription state %s: %w", s.PK, errConflict)
}
