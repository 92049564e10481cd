package awsproxy

import (
	"encoding/json"
	"hash/crc32"
	"strconv"
	"strings"
	"sync"
)

// contention makes overlapping DynamoDB writes meet as they do in DynamoDB, which the emulator
// behind the proxy (serialising every request) never shows. DynamoDB documents the conflicts
// ("Transaction conflict handling in DynamoDB"):
//
//   - an item of a TransactWriteItems that is part of another ongoing TransactWriteItems: the
//     later transaction is canceled, its CancellationReasons holding TransactionConflict at the
//     conflicting items;
//   - a PutItem, UpdateItem or DeleteItem of an item an ongoing TransactWriteItems includes: it
//     fails with TransactionConflictException.
//
// A transaction is ongoing from the moment the proxy receives it until the endpoint answered
// it. Behind an emulator that serialises requests that window includes the wait for the
// emulator, so conflicts are more frequent than in DynamoDB: a stress, never a kindness.
type contention struct {
	mu     sync.Mutex
	keys   map[string][]string // table -> key attribute names
	held   map[string]int      // item -> ongoing transactions holding it
	counts map[string]int      // API -> natural conflicts answered
}

func newContention(keys map[string][]string) *contention {
	return &contention{keys: keys, held: map[string]int{}, counts: map[string]int{}}
}

// writeRequest is the items a DynamoDB write names, in the JSON protocol's shape.
type writeRequest struct {
	TableName     string
	Item, Key     map[string]json.RawMessage
	TransactItems []map[string]struct {
		TableName string
		Item, Key map[string]json.RawMessage
	}
}

// itemKey names one item: its table and its key attributes' values, as the request carries them.
func (c *contention) itemKey(table string, attrs map[string]json.RawMessage) string {
	var b strings.Builder
	b.WriteString(table)
	for _, name := range c.keys[table] {
		b.WriteByte(0)
		b.Write(attrs[name])
	}
	return b.String()
}

// items lists the items a write request names ("" for none the proxy knows the key of), and
// whether it is a transaction.
func (c *contention) items(api string, body []byte) (items []string, transaction bool) {
	switch api {
	case "dynamodb.TransactWriteItems", "dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.DeleteItem":
	default:
		return nil, false
	}
	var req writeRequest
	if json.Unmarshal(body, &req) != nil {
		return nil, false
	}
	if api != "dynamodb.TransactWriteItems" {
		attrs := req.Key
		if attrs == nil {
			attrs = req.Item
		}
		if _, known := c.keys[req.TableName]; !known {
			return nil, false
		}
		return []string{c.itemKey(req.TableName, attrs)}, false
	}
	for _, op := range req.TransactItems {
		key := ""
		for _, x := range op { // one of Put, Update, Delete, ConditionCheck
			attrs := x.Key
			if attrs == nil {
				attrs = x.Item
			}
			if _, known := c.keys[x.TableName]; known {
				key = c.itemKey(x.TableName, attrs)
			}
		}
		items = append(items, key)
	}
	return items, true
}

// begin admits a write or refuses it with the conflict DynamoDB would answer. An admitted
// transaction holds its items until release is called (after the endpoint answered).
func (c *contention) begin(api string, body []byte) (release func(), status int, header map[string]string, answer []byte) {
	items, transaction := c.items(api, body)
	if len(items) == 0 {
		return func() {}, 0, nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	conflicting := make([]bool, len(items))
	conflict := false
	for i, item := range items {
		if item != "" && c.held[item] > 0 {
			conflicting[i], conflict = true, true
		}
	}
	if conflict {
		c.counts[api]++
		status, header, answer = conflictAnswer(transaction, conflicting)
		return nil, status, header, answer
	}
	if !transaction {
		return func() {}, 0, nil, nil
	}
	for _, item := range items {
		if item != "" {
			c.held[item]++
		}
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, item := range items {
			if item == "" {
				continue
			}
			if c.held[item]--; c.held[item] <= 0 {
				delete(c.held, item)
			}
		}
	}, 0, nil, nil
}

// conflictAnswer is DynamoDB's answer to a write that met an ongoing transaction.
func conflictAnswer(transaction bool, conflicting []bool) (int, map[string]string, []byte) {
	var doc map[string]any
	if transaction {
		reasons := make([]map[string]string, len(conflicting))
		codes := make([]string, len(conflicting))
		for i, c := range conflicting {
			reasons[i], codes[i] = map[string]string{"Code": "None"}, "None"
			if c {
				reasons[i] = map[string]string{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
				codes[i] = "TransactionConflict"
			}
		}
		doc = map[string]any{"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
			"Message":             "Transaction cancelled, please refer cancellation reasons for specific reasons [" + strings.Join(codes, ", ") + "]",
			"CancellationReasons": reasons}
	} else {
		doc = map[string]any{"__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
			"message": "Transaction is ongoing for the item"}
	}
	b, _ := json.Marshal(doc)
	return 400, dynamoHeaders(b), b
}

// counted returns the natural conflicts answered, by API.
func (c *contention) counted() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return clone(c.counts)
}

// dynamoHeaders are the headers of a DynamoDB JSON answer b (DynamoDB signs every answer with a
// CRC32 the SDK checks).
func dynamoHeaders(b []byte) map[string]string {
	return map[string]string{"Content-Type": "application/x-amz-json-1.0", "Content-Length": strconv.Itoa(len(b)),
		"X-Amz-Crc32": strconv.FormatUint(uint64(crc32.ChecksumIEEE(b)), 10), "x-amzn-RequestId": "CONTENTION"}
}
