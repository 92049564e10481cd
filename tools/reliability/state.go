package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/tools/awsproxy"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/oracle"
)

// observer watches the endpoint's real answers to the functions' requests, as the fault proxy
// reports them. It counts, per event key, the ledger writes the endpoint committed: the worker's
// TransactWriteItems whose first item is the ledger Put (the application) and its PutItem on the
// ledger (a rejection). A transaction applied behind an injected error is counted once, and its
// retry — canceled by its own first attempt — not at all. It also keeps each API's latency.
type observer struct {
	table   string
	mu      sync.Mutex
	commits map[string]int
	latency map[string]*apiLatency
}

type apiLatency struct {
	n     int
	total time.Duration
}

func newObserver() *observer {
	return &observer{commits: map[string]int{}, latency: map[string]*apiLatency{}}
}

func (l *observer) observe(e awsproxy.Exchange) {
	l.mu.Lock()
	lat := l.latency[e.API]
	if lat == nil {
		lat = &apiLatency{}
		l.latency[e.API] = lat
	}
	lat.n++
	lat.total += e.Elapsed
	l.mu.Unlock()
	if e.Status != 200 || (e.API != "dynamodb.TransactWriteItems" && e.API != "dynamodb.PutItem") {
		return
	}
	type put struct {
		TableName string
		Item      map[string]struct{ S string }
	}
	var key string
	if e.API == "dynamodb.PutItem" {
		var p put
		if json.Unmarshal(e.Request, &p) != nil || p.TableName != l.table {
			return
		}
		key = p.Item["pk"].S
	} else {
		var tx struct {
			TransactItems []struct{ Put *put }
		}
		if json.Unmarshal(e.Request, &tx) != nil || len(tx.TransactItems) == 0 || tx.TransactItems[0].Put == nil ||
			tx.TransactItems[0].Put.TableName != l.table {
			return
		}
		key = tx.TransactItems[0].Put.Item["pk"].S
	}
	if key == "" {
		return
	}
	l.mu.Lock()
	l.commits[key]++
	l.mu.Unlock()
}

// latencies describes the mean endpoint latency per API.
func (l *observer) latencies() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for api, x := range l.latency {
		out = append(out, fmt.Sprintf("%-34s %7d requests, mean %v", api, x.n, (x.total/time.Duration(x.n)).Round(time.Microsecond)))
	}
	sort.Strings(out)
	return out
}

// state is what the run left behind.
type state struct {
	ledger      map[string]string // key -> outcome
	reasons     map[string]string // key -> reason (rejections)
	outcomes    map[string]int
	dlq         map[string]bool // keys in the dead-letter queue
	quarantined int
	actual      *oracle.Actual
}

// crmItem decodes any CRM table item (each kind fills its own attributes).
type crmItem struct {
	PK         string   `dynamodbav:"pk"`
	SK         string   `dynamodbav:"sk"`
	ID         string   `dynamodbav:"id"`
	Entity     string   `dynamodbav:"entity"`
	Identities []string `dynamodbav:"identities"`
	Fields     map[string]struct {
		Value    string `dynamodbav:"value"`
		Source   string `dynamodbav:"source"`
		EventKey string `dynamodbav:"event_key"`
	} `dynamodbav:"fields"`
	AccountID  string `dynamodbav:"account_id"`
	ContactID  string `dynamodbav:"contact_id"`
	Account    string `dynamodbav:"account"`
	ActivityID string `dynamodbav:"activity_id"`
	MovedTo    string `dynamodbav:"moved_to"`
	Doc        string `dynamodbav:"doc"`
	EventKey   string `dynamodbav:"event_key"`
	Field      string `dynamodbav:"field"`
	RerunBy    string `dynamodbav:"rerun_by"`
}

// activityDoc is what the oracle reads of a stored timeline entry's document.
type activityDoc struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Status   string `json:"status"`
	Canceled bool   `json:"canceled"`
	Entries  []struct {
		Key string `json:"key"`
	} `json:"entries"`
}

func scan(ctx context.Context, c *dynamodb.Client, table string, each func(map[string]types.AttributeValue) error) error {
	var start map[string]types.AttributeValue
	for {
		out, err := c.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table), ExclusiveStartKey: start, ConsistentRead: aws.Bool(true)})
		if err != nil {
			return fmt.Errorf("scan %s: %w", table, err)
		}
		for _, it := range out.Items {
			if err := each(it); err != nil {
				return err
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		start = out.LastEvaluatedKey
	}
}

// readState reads the ledger, the CRM table, the dead-letter queue and the quarantine bucket
// directly (not through the fault proxy).
func readState(ctx context.Context, d *localcloud.Dev) (*state, error) {
	ddb := dynamodb.NewFromConfig(d.AWS)
	st := &state{ledger: map[string]string{}, reasons: map[string]string{}, outcomes: map[string]int{}, dlq: map[string]bool{},
		actual: &oracle.Actual{Owners: map[string]string{}, Contacts: map[string]*oracle.Contact{}, Unassociated: map[string]*oracle.Timeline{},
			Homes: map[string][]string{}, DomainAccounts: map[string]string{}, Accounts: map[string]string{}, Audits: map[string]int{}}}
	err := scan(ctx, ddb, d.Stack.Physical["LedgerTable"].Ref, func(it map[string]types.AttributeValue) error {
		var l struct {
			Key     string `dynamodbav:"pk"`
			Outcome string `dynamodbav:"outcome"`
			Reason  string `dynamodbav:"reason"`
		}
		if err := attributevalue.UnmarshalMap(it, &l); err != nil {
			return err
		}
		st.ledger[l.Key] = l.Outcome
		st.outcomes[l.Outcome]++
		if l.Outcome == "REJECTED" {
			st.reasons[l.Key] = l.Reason
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a := st.actual
	activities := map[string]map[string]*oracle.Timeline{} // contact id -> activities
	err = scan(ctx, ddb, d.Stack.Physical["CrmTable"].Ref, func(it map[string]types.AttributeValue) error {
		var c crmItem
		if err := attributevalue.UnmarshalMap(it, &c); err != nil {
			return err
		}
		switch {
		case c.SK == "PROFILE" && strings.HasPrefix(c.PK, "CONTACT#"):
			oc := &oracle.Contact{ID: c.ID, Identities: c.Identities, AccountID: c.AccountID, Fields: map[string]oracle.Field{}}
			for f, v := range c.Fields {
				oc.Fields[f] = oracle.Field{Value: v.Value, Source: v.Source, EventKey: v.EventKey}
			}
			a.Contacts[c.ID] = oc
		case c.SK == "PROFILE" && strings.HasPrefix(c.PK, "ACCOUNT#"):
			a.Accounts[c.ID] = c.Fields["name"].Value
		case c.SK == "IDENT":
			rest := strings.TrimPrefix(c.PK, "IDENT#")
			kind, value, _ := strings.Cut(rest, "#")
			a.Owners[kind+":"+value] = c.ContactID
		case c.SK == "DOMAIN":
			a.DomainAccounts[strings.TrimPrefix(c.PK, "DOMAIN#")] = c.Account
		case strings.HasPrefix(c.SK, "ACT#"):
			if c.MovedTo != "" {
				return nil // a tombstone: the activity lives under its contact now
			}
			var doc activityDoc
			if err := json.Unmarshal([]byte(c.Doc), &doc); err != nil {
				return fmt.Errorf("activity %s/%s: %w", c.PK, c.SK, err)
			}
			t := &oracle.Timeline{ID: c.ActivityID, Type: doc.Type, Status: doc.Status, Canceled: doc.Canceled}
			for _, e := range doc.Entries {
				t.Keys = append(t.Keys, e.Key)
			}
			sort.Strings(t.Keys)
			a.Homes[c.ActivityID] = append(a.Homes[c.ActivityID], c.PK)
			if c.PK == "UNASSOC" {
				a.Unassociated[c.ActivityID] = t
				return nil
			}
			cid := strings.TrimPrefix(c.PK, "CONTACT#")
			if activities[cid] == nil {
				activities[cid] = map[string]*oracle.Timeline{}
			}
			activities[cid][c.ActivityID] = t
		case strings.HasPrefix(c.SK, "AUDIT#"):
			a.Audits[c.EventKey+"|"+c.Entity+"|"+c.Field+"|"+c.RerunBy]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for cid, acts := range activities {
		if c := a.Contacts[cid]; c != nil {
			c.Activities = acts
		} else {
			a.Contacts[cid] = &oracle.Contact{ID: cid, Activities: acts} // activities under a contact with no profile
		}
	}
	for _, c := range a.Contacts {
		if c.Activities == nil {
			c.Activities = map[string]*oracle.Timeline{}
		}
	}

	// Dead letters: read every message (without deleting) for its key.
	q := sqs.NewFromConfig(d.AWS)
	dlqURL := d.Stack.Physical["IngestDLQ"].Ref
	for {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(dlqURL), MaxNumberOfMessages: 10, VisibilityTimeout: 300})
		if err != nil {
			return nil, fmt.Errorf("read the DLQ: %w", err)
		}
		if len(out.Messages) == 0 {
			break
		}
		for _, m := range out.Messages {
			var k struct {
				Key string `json:"key"`
			}
			_ = json.Unmarshal([]byte(aws.ToString(m.Body)), &k)
			st.dlq[k.Key] = true
		}
	}
	objs, err := s3.NewFromConfig(d.AWS, func(o *s3.Options) { o.UsePathStyle = true }).ListObjectsV2(ctx,
		&s3.ListObjectsV2Input{Bucket: aws.String(d.Stack.Physical["QuarantineBucket"].Ref)})
	if err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	st.quarantined = int(aws.ToInt32(objs.KeyCount))
	return st, nil
}
