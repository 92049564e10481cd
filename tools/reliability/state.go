package reliability

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/tools/awsproxy"
	"github.com/crmsync/crmsync/tools/localcloud"
	"github.com/crmsync/crmsync/tools/moto"
	"github.com/crmsync/crmsync/tools/oracle"
)

// observer watches the endpoint's real answers to the functions' requests, as the fault proxy
// reports them. It counts, per event key, the ledger writes the endpoint committed: a
// TransactWriteItems holding a Put on the ledger (the application, wherever the Put sits among
// the items) and a PutItem on the ledger (a rejection, a no-op, a quarantine). A transaction
// applied behind an injected error is counted once, and its retry — canceled by its own first
// attempt — not at all. It counts, per event key, the webhooks' SendMessageBatch entries the
// queue accepted (the harness's late re-sends go around the proxy, so they are not among them).
// It also keeps each API's latency.
type observer struct {
	table    string
	mu       sync.Mutex
	commits  map[string]int
	enqueued map[string]int
	lagged   map[string]int // index -> Queries answered from a lagged index (the patched moto's mark)
	latency  map[string]*apiLatency
	// answered are the transactions answered 200, by ClientRequestToken and items: DynamoDB
	// answers a repeat of one (the same token and items within 10 minutes) with success and
	// writes nothing, so only the first is a commit.
	answered map[string]bool
}

type apiLatency struct {
	n     int
	total time.Duration
}

func newObserver() *observer {
	return &observer{commits: map[string]int{}, enqueued: map[string]int{}, lagged: map[string]int{}, latency: map[string]*apiLatency{}, answered: map[string]bool{}}
}

// ledgerPut is a Put request's table and key, as the DynamoDB JSON protocol carries it.
type ledgerPut struct {
	TableName string
	Item      map[string]struct{ S string }
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
	if e.Status != 200 {
		return
	}
	if e.Header.Get(moto.LaggedHeader) != "" {
		var q struct{ TableName, IndexName string }
		_ = json.Unmarshal(e.Request, &q)
		l.mu.Lock()
		l.lagged[q.IndexName]++
		l.mu.Unlock()
	}
	switch e.API {
	case "dynamodb.PutItem":
		var p ledgerPut
		if json.Unmarshal(e.Request, &p) == nil && p.TableName == l.table {
			l.commit(p.Item["pk"].S)
		}
	case "dynamodb.TransactWriteItems":
		l.observeTransaction(e)
	case "sqs.SendMessageBatch":
		l.observeSend(e)
	}
}

// observeTransaction counts a committed transaction's ledger Puts (a repeat of one already
// answered is no commit).
func (l *observer) observeTransaction(e awsproxy.Exchange) {
	var tx struct {
		ClientRequestToken string
		TransactItems      json.RawMessage
	}
	var items []struct{ Put *ledgerPut }
	if json.Unmarshal(e.Request, &tx) != nil || json.Unmarshal(tx.TransactItems, &items) != nil {
		return
	}
	var keys []string
	for _, item := range items {
		if item.Put != nil && item.Put.TableName == l.table {
			keys = append(keys, item.Put.Item["pk"].S)
		}
	}
	if len(keys) == 0 {
		return
	}
	if tx.ClientRequestToken != "" {
		// The items compared as DynamoDB compares them, not as bytes: a client re-sending one call
		// serializes its attribute maps again, in Go's random map order.
		var parsed any
		_ = json.Unmarshal(tx.TransactItems, &parsed)
		canonical, _ := json.Marshal(parsed) // encoding/json writes object keys sorted
		request := tx.ClientRequestToken + "\x00" + string(canonical)
		l.mu.Lock()
		repeat := l.answered[request]
		l.answered[request] = true
		l.mu.Unlock()
		if repeat {
			return
		}
	}
	for _, key := range keys {
		l.commit(key)
	}
}

// observeSend counts the entries of a SendMessageBatch the queue accepted, by their event's key.
func (l *observer) observeSend(e awsproxy.Exchange) {
	var req struct {
		Entries []struct{ Id, MessageBody string }
	}
	var resp struct {
		Successful []struct{ Id string }
	}
	if json.Unmarshal(e.Request, &req) != nil || json.Unmarshal(e.Response, &resp) != nil {
		return
	}
	keyOf := map[string]string{}
	for _, entry := range req.Entries {
		var body struct {
			Key string `json:"key"`
		}
		if json.Unmarshal([]byte(entry.MessageBody), &body) == nil {
			keyOf[entry.Id] = body.Key
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ok := range resp.Successful {
		if key := keyOf[ok.Id]; key != "" {
			l.enqueued[key]++
		}
	}
}

func (l *observer) commit(key string) {
	if key == "" {
		return
	}
	l.mu.Lock()
	l.commits[key]++
	l.mu.Unlock()
}

// commitCounts returns the ledger commits seen, by event key.
func (l *observer) commitCounts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.commits)
}

// laggedReads returns the Queries answered from a lagged index, by index.
func (l *observer) laggedReads() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.lagged)
}

// enqueuedCount returns how many of the webhooks' sends of key the queue accepted.
func (l *observer) enqueuedCount(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.enqueued[key]
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
	groups      map[string]string // key -> group key
	recorded    map[string]string // key -> recorded_at
	outcomes    map[string]int
	dlq         map[string]bool // keys in the dead-letter queue
	quarantined int
	profiles    map[string]storedProfile // record pk -> its profile as left
	actual      *oracle.Actual
}

// storedField is what the oracle reads of a profile field.
type storedField struct {
	Value    string `dynamodbav:"value" json:"value"`
	Source   string `dynamodbav:"source" json:"source"`
	EventKey string `dynamodbav:"event_key" json:"event_key"`
}

// crmItem decodes any CRM table item (each kind fills its own attributes).
type crmItem struct {
	PK         string                 `dynamodbav:"pk"`
	SK         string                 `dynamodbav:"sk"`
	ID         string                 `dynamodbav:"id"`
	Entity     string                 `dynamodbav:"entity"`
	Identities []string               `dynamodbav:"identities"`
	Fields     map[string]storedField `dynamodbav:"fields"`
	// FieldsZ are a profile's fields as the worker stores them: their JSON, packed.
	FieldsZ    store.Packed `dynamodbav:"fields_z"`
	Version    int64        `dynamodbav:"version"`
	AccountID  string       `dynamodbav:"account_id"`
	ContactID  string       `dynamodbav:"contact_id"`
	Account    string       `dynamodbav:"account"`
	ActivityID string       `dynamodbav:"activity_id"`
	MovedTo    string       `dynamodbav:"moved_to"`
	Doc        store.Packed `dynamodbav:"doc_z"`
	PlainDoc   string       `dynamodbav:"doc"`
	EventKey   string       `dynamodbav:"event_key"`
	Field      string       `dynamodbav:"field"`
	RerunBy    string       `dynamodbav:"rerun_by"`
	// Decisions are an event's audited decisions on one record (a JSON array of {"f": field,
	// ...}), packed; per-field audit items written before carry Field instead.
	Decisions store.Packed `dynamodbav:"decisions_z"`
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

// readState reads the ledger, the CRM table and the quarantine bucket directly (not through the
// fault proxy). The dead-letter queue is read apart, once (readDLQ).
func readState(ctx context.Context, d *localcloud.Dev) (*state, error) {
	client := dynamodb.NewFromConfig(d.AWS)
	st := newState()
	if err := st.readLedger(ctx, client, d.Stack.Physical["LedgerTable"].Ref); err != nil {
		return nil, err
	}
	crm := crmReader{actual: st.actual, activities: map[string]map[string]*oracle.Timeline{}, profiles: st.profiles}
	if err := scan(ctx, client, d.Stack.Physical["CrmTable"].Ref, crm.add); err != nil {
		return nil, err
	}
	crm.attachActivities()
	quarantined, err := countQuarantined(ctx, d.AWS, d.Stack.Physical["QuarantineBucket"].Ref)
	if err != nil {
		return nil, err
	}
	st.quarantined = quarantined
	return st, nil
}

// newState is an empty state.
func newState() *state {
	return &state{profiles: map[string]storedProfile{}, ledger: map[string]string{}, reasons: map[string]string{}, groups: map[string]string{}, recorded: map[string]string{}, outcomes: map[string]int{}, dlq: map[string]bool{},
		actual: &oracle.Actual{Owners: map[string]string{}, Contacts: map[string]*oracle.Contact{}, Unassociated: map[string]*oracle.Timeline{},
			Homes: map[string][]string{}, DomainAccounts: map[string]string{}, Accounts: map[string]string{}, Audits: map[string]int{}}}
}

// readLedger reads every ledger item's outcome (and a rejection's reason).
func (st *state) readLedger(ctx context.Context, client *dynamodb.Client, table string) error {
	return scan(ctx, client, table, func(it map[string]types.AttributeValue) error {
		var entry struct {
			Key        string `dynamodbav:"pk"`
			Outcome    string `dynamodbav:"outcome"`
			Reason     string `dynamodbav:"reason"`
			GroupKey   string `dynamodbav:"group_key"`
			RecordedAt string `dynamodbav:"recorded_at"`
		}
		if err := attributevalue.UnmarshalMap(it, &entry); err != nil {
			return err
		}
		st.ledger[entry.Key] = entry.Outcome
		st.groups[entry.Key], st.recorded[entry.Key] = entry.GroupKey, entry.RecordedAt
		st.outcomes[entry.Outcome]++
		if entry.Outcome == "REJECTED" {
			st.reasons[entry.Key] = entry.Reason
		}
		return nil
	})
}

// crmReader decodes the CRM table's items into what the oracle compares.
type crmReader struct {
	actual     *oracle.Actual
	profiles   map[string]storedProfile               // for the history check
	activities map[string]map[string]*oracle.Timeline // contact id -> activities
}

// add decodes one CRM table item by kind: contact or account profile, identity claim, domain
// claim, live activity or audit entry.
func (r *crmReader) add(it map[string]types.AttributeValue) error {
	var item crmItem
	if err := attributevalue.UnmarshalMap(it, &item); err != nil {
		return err
	}
	if len(item.FieldsZ) > 0 {
		unpacked, err := item.FieldsZ.Unpack()
		if err != nil {
			return fmt.Errorf("profile %s: %w", item.PK, err)
		}
		if err := json.Unmarshal([]byte(unpacked), &item.Fields); err != nil {
			return fmt.Errorf("profile %s: %w", item.PK, err)
		}
	}
	actual := r.actual
	if item.SK == "PROFILE" && r.profiles != nil {
		sum := sha256.Sum256(item.FieldsZ)
		r.profiles[item.PK] = storedProfile{Version: item.Version, Content: hex.EncodeToString(sum[:8])}
	}
	switch {
	case item.SK == "PROFILE" && strings.HasPrefix(item.PK, "CONTACT#"):
		contact := &oracle.Contact{ID: item.ID, Identities: item.Identities, AccountID: item.AccountID, Fields: map[string]oracle.Field{}}
		for name, field := range item.Fields {
			contact.Fields[name] = oracle.Field{Value: field.Value, Source: field.Source, EventKey: field.EventKey}
		}
		actual.Contacts[item.ID] = contact
	case item.SK == "PROFILE" && strings.HasPrefix(item.PK, "ACCOUNT#"):
		actual.Accounts[item.ID] = item.Fields["name"].Value
	case item.SK == "IDENT" && item.ContactID == "": // unclaimed: only parked activities pending on it
	case item.SK == "IDENT":
		rest := strings.TrimPrefix(item.PK, "IDENT#")
		kind, value, _ := strings.Cut(rest, "#")
		actual.Owners[kind+":"+value] = item.ContactID
	case item.SK == "DOMAIN":
		actual.DomainAccounts[strings.TrimPrefix(item.PK, "DOMAIN#")] = item.Account
	case strings.HasPrefix(item.SK, "ACT#"):
		return r.addActivity(item)
	case strings.HasPrefix(item.SK, "AUDIT#") && len(item.Decisions) > 0:
		unpacked, err := item.Decisions.Unpack()
		if err != nil {
			return fmt.Errorf("audit %s/%s: %w", item.PK, item.SK, err)
		}
		var decisions []struct {
			Field string `json:"f"`
		}
		if err := json.Unmarshal([]byte(unpacked), &decisions); err != nil {
			return fmt.Errorf("audit %s/%s: %w", item.PK, item.SK, err)
		}
		// A redelivery after the dedup window is audited beside the original (sk "#redelivery-N").
		_, redelivery, _ := strings.Cut(item.SK, "#redelivery-")
		for _, decision := range decisions {
			actual.Audits[item.EventKey+"|"+item.Entity+"|"+decision.Field+"|"+item.RerunBy+redelivery]++
		}
	case strings.HasPrefix(item.SK, "AUDIT#"):
		actual.Audits[item.EventKey+"|"+item.Entity+"|"+item.Field+"|"+item.RerunBy]++
	}
	return nil
}

// addActivity records a live activity (a tombstone is skipped: the activity lives under its
// contact now) in its home partition: a contact's, or UNASSOC.
func (r *crmReader) addActivity(item crmItem) error {
	if item.MovedTo != "" {
		return nil
	}
	var document activityDoc
	doc := item.PlainDoc
	if len(item.Doc) > 0 {
		unpacked, err := item.Doc.Unpack()
		if err != nil {
			return fmt.Errorf("activity %s/%s: %w", item.PK, item.SK, err)
		}
		doc = unpacked
	}
	if err := json.Unmarshal([]byte(doc), &document); err != nil {
		return fmt.Errorf("activity %s/%s: %w", item.PK, item.SK, err)
	}
	timeline := &oracle.Timeline{ID: item.ActivityID, Type: document.Type, Status: document.Status, Canceled: document.Canceled}
	for _, entry := range document.Entries {
		timeline.Keys = append(timeline.Keys, entry.Key)
	}
	sort.Strings(timeline.Keys)
	r.actual.Homes[item.ActivityID] = append(r.actual.Homes[item.ActivityID], item.PK)
	if item.PK == "UNASSOC" {
		r.actual.Unassociated[item.ActivityID] = timeline
		return nil
	}
	contactID := strings.TrimPrefix(item.PK, "CONTACT#")
	if r.activities[contactID] == nil {
		r.activities[contactID] = map[string]*oracle.Timeline{}
	}
	r.activities[contactID][item.ActivityID] = timeline
	return nil
}

// attachActivities gives every contact its activities (an empty map when it has none); a
// contact id holding activities but no profile gets a contact of its own.
func (r *crmReader) attachActivities() {
	for contactID, activities := range r.activities {
		if contact := r.actual.Contacts[contactID]; contact != nil {
			contact.Activities = activities
		} else {
			r.actual.Contacts[contactID] = &oracle.Contact{ID: contactID, Activities: activities} // activities under a contact with no profile
		}
	}
	for _, contact := range r.actual.Contacts {
		if contact.Activities == nil {
			contact.Activities = map[string]*oracle.Timeline{}
		}
	}
}

// readDLQ reads every dead-letter message for its event key, deleting each once read: the DLQ
// is FIFO, and SQS hands out no further message of a group while one of it is in flight, so a
// read that only hides messages stops at the first ten of a group (and a second such read sees
// nothing until the visibility timeout ends). The verdict reads it once, at the end.
func readDLQ(ctx context.Context, client *sqs.Client, queueURL string) (map[string]bool, error) {
	keys := map[string]bool{}
	for empty := 0; empty < 2; {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(queueURL), MaxNumberOfMessages: 10, VisibilityTimeout: 300})
		if err != nil {
			return nil, fmt.Errorf("read the DLQ: %w", err)
		}
		if len(out.Messages) == 0 {
			empty++
			continue
		}
		empty = 0
		entries := make([]sqstypes.DeleteMessageBatchRequestEntry, len(out.Messages))
		for i, m := range out.Messages {
			var message struct {
				Key string `json:"key"`
			}
			_ = json.Unmarshal([]byte(aws.ToString(m.Body)), &message)
			keys[message.Key] = true
			entries[i] = sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
		}
		deleted, err := client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: entries})
		if err != nil {
			return nil, fmt.Errorf("read the DLQ: delete: %w", err)
		}
		if len(deleted.Failed) > 0 {
			return nil, fmt.Errorf("read the DLQ: %d messages not deleted (%s)", len(deleted.Failed), aws.ToString(deleted.Failed[0].Message))
		}
	}
	return keys, nil
}

// countQuarantined counts the quarantine bucket's objects.
func countQuarantined(ctx context.Context, cfg aws.Config, bucket string) (int, error) {
	listing, err := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }).ListObjectsV2(ctx,
		&s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		return 0, fmt.Errorf("list quarantine: %w", err)
	}
	return int(aws.ToInt32(listing.KeyCount)), nil
}
