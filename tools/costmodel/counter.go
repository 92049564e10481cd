// Package costmodel owns crmsync's measurement of what an event costs on AWS: a counting
// middleware for aws-sdk-go-v2 (every request by service and operation, DynamoDB read and write
// units computed from item sizes by DynamoDB's published rules, SQS requests as billed), the
// published us-east-1 prices (prices.go, the one place they live) and the arithmetic that turns
// counted usage into dollars per million events. `crmsync-dev bench` and the per-event budget test
// build on it.
package costmodel

import (
	"context"
	"errors"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/crmsync/crmsync/tools/ddbexpr"
)

// Op names one API of one service, e.g. {DynamoDB, GetItem}.
type Op struct {
	Service   string
	Operation string
}

// String is the operation as "<Service> <Operation>", e.g. "DynamoDB GetItem".
func (o Op) String() string { return o.Service + " " + o.Operation }

// DynamoUnits are DynamoDB capacity units, computed by the published rules: a read is 1 unit per
// 4 KB strongly consistent (0.5 eventually consistent; an index query is always eventually
// consistent; a query reads the items its key condition selects, before any filter); a write is
// 1 unit per KB of the larger of the item before and after; transactional reads and writes cost
// twice; a global secondary index costs 1 unit per KB of each index entry put or deleted
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html#GSI.Writes). A
// failed conditional write or a canceled transaction is charged as if it had been written.
type DynamoUnits struct {
	// Read is the tables' read units (RRU on demand).
	Read float64
	// Write is the tables' write units (WRU on demand).
	Write float64
	// IndexWrite is the write units of global secondary index propagation.
	IndexWrite float64
	// Reported sums the ConsumedCapacity the endpoint returned, when it returned any (only when
	// a caller asks for it; moto reports fixed placeholders, not sizes).
	Reported float64
	// Transactions counts TransactWriteItems calls, TransactItems their items.
	Transactions, TransactItems int
	// CanceledTransactions counts transactions the endpoint canceled (conditions, conflicts).
	CanceledTransactions int
	// ConditionFailures counts single-item writes whose condition failed.
	ConditionFailures int
	// Estimated counts operations whose units could not be computed exactly (the item's prior
	// state was unknown, or an unsupported operation).
	Estimated int
}

// WriteTotal is the write units billed: tables plus indexes.
func (d DynamoUnits) WriteTotal() float64 { return d.Write + d.IndexWrite }

// Usage is what a Counter counted.
type Usage struct {
	// Calls counts SDK operations by service and API.
	Calls map[Op]int
	// Attempts counts HTTP attempts (retries included).
	Attempts map[Op]int
	// Errors counts operations that returned an error.
	Errors map[Op]int
	// RequestBytes and ResponseBytes are the HTTP body sizes per operation.
	RequestBytes  map[Op]int64
	ResponseBytes map[Op]int64
	// Latency sums the time the endpoint took to answer each operation's attempts.
	Latency map[Op]time.Duration
	// DynamoDB is every table's capacity units.
	DynamoDB DynamoUnits
	// SQSRequests is SQS requests as billed: every API action is one request per 64 KB chunk of
	// its payload (messages sent, or received).
	SQSRequests float64
	// SQSReceives and SQSEmptyReceives count ReceiveMessage calls and those that got nothing.
	SQSReceives, SQSEmptyReceives int
	// SQSMessagesSent and SQSMessagesReceived count messages.
	SQSMessagesSent, SQSMessagesReceived int
}

func newUsage() Usage {
	return Usage{Calls: map[Op]int{}, Attempts: map[Op]int{}, Errors: map[Op]int{}, RequestBytes: map[Op]int64{}, ResponseBytes: map[Op]int64{},
		Latency: map[Op]time.Duration{}}
}

// Count returns the calls of one operation.
func (u Usage) Count(service, operation string) int { return u.Calls[Op{service, operation}] }

// ServiceCalls returns the calls made to one service.
func (u Usage) ServiceCalls(service string) int {
	n := 0
	for op, c := range u.Calls {
		if op.Service == service {
			n += c
		}
	}
	return n
}

// Ops lists the operations with calls, sorted.
func (u Usage) Ops() []Op {
	var out []Op
	for op, n := range u.Calls {
		if n != 0 {
			out = append(out, op)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func cloneMap[V int | int64 | time.Duration](m map[Op]V) map[Op]V {
	out := make(map[Op]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func subMap[V int | int64 | time.Duration](a, b map[Op]V) map[Op]V {
	out := cloneMap(a)
	for k, v := range b {
		out[k] -= v
		if out[k] == 0 {
			delete(out, k)
		}
	}
	return out
}

// Clone returns a deep copy.
func (u Usage) Clone() Usage {
	c := u
	c.Calls, c.Attempts, c.Errors = cloneMap(u.Calls), cloneMap(u.Attempts), cloneMap(u.Errors)
	c.RequestBytes, c.ResponseBytes = cloneMap(u.RequestBytes), cloneMap(u.ResponseBytes)
	c.Latency = cloneMap(u.Latency)
	return c
}

// Sub returns u minus an earlier snapshot of the same counter.
func (u Usage) Sub(prev Usage) Usage {
	d := u.Clone()
	d.Calls, d.Attempts, d.Errors = subMap(u.Calls, prev.Calls), subMap(u.Attempts, prev.Attempts), subMap(u.Errors, prev.Errors)
	d.RequestBytes, d.ResponseBytes = subMap(u.RequestBytes, prev.RequestBytes), subMap(u.ResponseBytes, prev.ResponseBytes)
	d.Latency = subMap(u.Latency, prev.Latency)
	a, b := u.DynamoDB, prev.DynamoDB
	d.DynamoDB = DynamoUnits{Read: a.Read - b.Read, Write: a.Write - b.Write, IndexWrite: a.IndexWrite - b.IndexWrite,
		Reported: a.Reported - b.Reported, Transactions: a.Transactions - b.Transactions, TransactItems: a.TransactItems - b.TransactItems,
		CanceledTransactions: a.CanceledTransactions - b.CanceledTransactions, ConditionFailures: a.ConditionFailures - b.ConditionFailures,
		Estimated: a.Estimated - b.Estimated}
	d.SQSRequests -= prev.SQSRequests
	d.SQSReceives -= prev.SQSReceives
	d.SQSEmptyReceives -= prev.SQSEmptyReceives
	d.SQSMessagesSent -= prev.SQSMessagesSent
	d.SQSMessagesReceived -= prev.SQSMessagesReceived
	return d
}

// Index is one global secondary index: its key attributes and projection.
type Index struct {
	Name        string
	Hash, Range string
	// Projection is ALL, KEYS_ONLY or INCLUDE (with Include naming the projected attributes).
	Projection string
	Include    []string
}

type table struct {
	hash, rng string
	indexes   []Index
	items     map[string]ddbexpr.Item // the shadow: every item written or read through the counter
	complete  bool                    // created through the counter: the shadow knows every item
}

// Counter counts the AWS requests made through the clients of every aws.Config it is added to
// (Option), and computes DynamoDB capacity units from item sizes. To know an item's size before a
// write and which indexes it belongs to, it keeps a shadow of the items it sees written and read;
// tables created through it (CreateTable) are known completely. Safe for concurrent use.
type Counter struct {
	mu     sync.Mutex
	u      Usage
	tables map[string]*table
	trace  *[]WriteTrace
}

// WriteTrace is one item write as the counter priced it.
type WriteTrace struct {
	Table string
	// PK and SK are the item's key values (SK empty for a hash-only table).
	PK, SK string
	// Bytes is the larger of the item's size before and after the write.
	Bytes int
	// Units is the table write units (doubled in a transaction); IndexUnits the indexes'.
	Units, IndexUnits float64
	Transactional     bool
	// Check is set for a transaction's ConditionCheck (nothing written; priced as a
	// transactional write of the item checked).
	Check bool
}

// StartTrace records every item write from now on, until StopTrace returns them.
func (c *Counter) StartTrace() {
	c.mu.Lock()
	c.trace = &[]WriteTrace{}
	c.mu.Unlock()
}

// StopTrace ends recording and returns the writes recorded since StartTrace.
func (c *Counter) StopTrace() []WriteTrace {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trace == nil {
		return nil
	}
	out := *c.trace
	c.trace = nil
	return out
}

func (c *Counter) traceWrite(name string, w write, units, index float64, tx bool) {
	if c.trace == nil {
		return
	}
	t := WriteTrace{Table: name, Bytes: w.size(), Units: units, IndexUnits: index, Transactional: tx, Check: w.check}
	if w.t != nil {
		t.PK, t.SK = scalarString(w.key[w.t.hash]), scalarString(w.key[w.t.rng])
	}
	*c.trace = append(*c.trace, t)
}

func scalarString(v ddbtypes.AttributeValue) string {
	switch x := v.(type) {
	case *ddbtypes.AttributeValueMemberS:
		return x.Value
	case *ddbtypes.AttributeValueMemberN:
		return x.Value
	}
	return ""
}

// NewCounter returns an empty counter.
func NewCounter() *Counter { return &Counter{u: newUsage(), tables: map[string]*table{}} }

// Snapshot returns a copy of what was counted so far.
func (c *Counter) Snapshot() Usage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.u.Clone()
}

// Reset zeroes the counts (the item shadow is kept).
func (c *Counter) Reset() {
	c.mu.Lock()
	c.u = newUsage()
	c.mu.Unlock()
}

// RegisterTable declares a table that was not created through the counter. Its shadow starts
// empty, so units of writes to items it has not seen are estimates.
func (c *Counter) RegisterTable(name, hash, rng string, indexes ...Index) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tables[name] = &table{hash: hash, rng: rng, indexes: indexes, items: map[string]ddbexpr.Item{}}
}

// Option adds the counter to a middleware stack: append it to aws.Config.APIOptions (or
// localcloud.Config.AWSOptions) and every client built from that configuration is counted.
func (c *Counter) Option(stack *middleware.Stack) error {
	if err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("crmsync.costmodel.count",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			c.record(Op{middleware.GetServiceID(ctx), middleware.GetOperationName(ctx)}, in.Parameters, out.Result, err)
			return out, md, err
		}), middleware.After); err != nil {
		return err
	}
	return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("crmsync.costmodel.attempt",
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
			start := time.Now()
			out, md, err := next.HandleDeserialize(ctx, in)
			took := time.Since(start)
			op := Op{middleware.GetServiceID(ctx), middleware.GetOperationName(ctx)}
			var reqN, respN int64
			if r, ok := in.Request.(*smithyhttp.Request); ok && r.ContentLength > 0 {
				reqN = r.ContentLength
			}
			if r, ok := out.RawResponse.(*smithyhttp.Response); ok && r.ContentLength > 0 {
				respN = r.ContentLength
			}
			c.mu.Lock()
			c.u.Attempts[op]++
			c.u.Latency[op] += took
			c.u.RequestBytes[op] += reqN
			c.u.ResponseBytes[op] += respN
			c.mu.Unlock()
			return out, md, err
		}), middleware.After)
}

func (c *Counter) record(op Op, params, result any, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.u.Calls[op]++
	if err != nil {
		c.u.Errors[op]++
	}
	switch op.Service {
	case dynamodb.ServiceID:
		c.dynamo(params, result, err)
	case sqs.ServiceID:
		c.sqs(params, result, err)
	}
}

// ---------------------------------------------------------------------------- DynamoDB

const (
	kb  = 1024
	kb4 = 4 * 1024
)

// ReadUnits is the read units of reading n bytes: 1 per 4 KB (at least 1) strongly consistent,
// half that eventually consistent.
func ReadUnits(n int, consistent bool) float64 {
	u := math.Max(1, math.Ceil(float64(n)/kb4))
	if !consistent {
		u /= 2
	}
	return u
}

// WriteUnits is the write units of writing an n-byte item: 1 per KB, at least 1.
func WriteUnits(n int) float64 { return math.Max(1, math.Ceil(float64(n)/kb)) }

func (t *table) key(item ddbexpr.Item) string { return ddbexpr.KeyString(item, t.hash, t.rng) }

// prior returns the shadow's item for key (nil when absent) and whether that is known.
func (t *table) prior(key ddbexpr.Item) (ddbexpr.Item, bool) {
	if t == nil {
		return nil, false
	}
	it, ok := t.items[t.key(key)]
	return it, ok || t.complete
}

func (t *table) set(item ddbexpr.Item) {
	if t != nil {
		t.items[t.key(item)] = item
	}
}

func (t *table) del(key ddbexpr.Item) {
	if t != nil {
		delete(t.items, t.key(key))
	}
}

func (idx Index) has(it ddbexpr.Item) bool {
	if it == nil || it[idx.Hash] == nil {
		return false
	}
	return idx.Range == "" || it[idx.Range] != nil
}

func (t *table) entrySize(idx Index, it ddbexpr.Item) int {
	switch idx.Projection {
	case "KEYS_ONLY", "INCLUDE":
		n := 0
		seen := map[string]bool{}
		names := append([]string{t.hash, t.rng, idx.Hash, idx.Range}, idx.Include...)
		for _, a := range names {
			if v, ok := it[a]; a != "" && ok && !seen[a] {
				seen[a] = true
				n += len(a) + ddbexpr.ValueSize(v)
			}
		}
		return n
	}
	return ddbexpr.ItemSize(it)
}

// sameEntry reports whether old and new project the same attributes into idx.
func (t *table) sameEntry(idx Index, old, new ddbexpr.Item) bool {
	names := map[string]bool{}
	switch idx.Projection {
	case "KEYS_ONLY", "INCLUDE":
		for _, a := range append([]string{t.hash, t.rng, idx.Hash, idx.Range}, idx.Include...) {
			names[a] = a != ""
		}
	default:
		for a := range old {
			names[a] = true
		}
		for a := range new {
			names[a] = true
		}
	}
	for a, projected := range names {
		if !projected {
			continue
		}
		ov, inOld := old[a]
		nv, inNew := new[a]
		if inOld != inNew || (inOld && !ddbexpr.Equal(ov, nv)) {
			return false
		}
	}
	return true
}

// indexWrites is the write units a table write from old to new (either nil) costs its indexes.
func (t *table) indexWrites(old, new ddbexpr.Item) float64 {
	if t == nil {
		return 0
	}
	u := 0.0
	for _, idx := range t.indexes {
		inOld, inNew := idx.has(old), idx.has(new)
		switch {
		case inOld && inNew:
			same := ddbexpr.Equal(old[idx.Hash], new[idx.Hash]) && (idx.Range == "" || ddbexpr.Equal(old[idx.Range], new[idx.Range]))
			switch {
			case same && t.sameEntry(idx, old, new):
				// Neither the index key nor a projected attribute changed: nothing is written.
			case same:
				u += WriteUnits(max(t.entrySize(idx, old), t.entrySize(idx, new)))
			default:
				u += WriteUnits(t.entrySize(idx, old)) + WriteUnits(t.entrySize(idx, new))
			}
		case inOld:
			u += WriteUnits(t.entrySize(idx, old))
		case inNew:
			u += WriteUnits(t.entrySize(idx, new))
		}
	}
	return u
}

func reported(cc ...*ddbtypes.ConsumedCapacity) float64 {
	s := 0.0
	for _, c := range cc {
		if c != nil {
			s += aws.ToFloat64(c.CapacityUnits)
		}
	}
	return s
}

// write is one item write (Put, Update or Delete) resolved against the shadow.
type write struct {
	t        *table
	key      ddbexpr.Item
	old, new ddbexpr.Item // new is nil for a delete
	known    bool
	check    bool // a ConditionCheck: nothing is written
}

func (w write) size() int { return max(ddbexpr.ItemSize(w.old), ddbexpr.ItemSize(w.new)) }

func (c *Counter) put(name string, item ddbexpr.Item) write {
	t := c.tables[name]
	old, known := t.prior(item)
	return write{t: t, key: item, old: old, new: item, known: known}
}

func (c *Counter) update(name string, key ddbexpr.Item, expr *string, names map[string]string, values map[string]ddbtypes.AttributeValue) write {
	t := c.tables[name]
	old, known := t.prior(key)
	nw, err := ddbexpr.Update(aws.ToString(expr), old, key, ddbexpr.Env{Names: names, Values: values})
	if err != nil {
		nw, known = old, false
	}
	return write{t: t, key: key, old: old, new: nw, known: known}
}

func (c *Counter) del(name string, key ddbexpr.Item) write {
	t := c.tables[name]
	old, known := t.prior(key)
	return write{t: t, key: key, old: old, known: known}
}

func (w write) apply() {
	switch {
	case w.check:
	case w.new == nil:
		w.t.del(w.old)
	default:
		w.t.set(w.new)
	}
}

// dynamo counts one DynamoDB operation's capacity units and keeps the item shadow up to date.
func (c *Counter) dynamo(params, result any, err error) {
	units := &c.u.DynamoDB
	switch p := params.(type) {
	case *dynamodb.CreateTableInput:
		c.countCreateTable(p, err)
	case *dynamodb.GetItemInput:
		c.countGetItem(p, result, err)
	case *dynamodb.BatchGetItemInput:
		c.countBatchGetItem(p, result, err)
	case *dynamodb.QueryInput:
		c.countQuery(p, result, err)
	case *dynamodb.PutItemInput:
		c.countSingleWrite(aws.ToString(p.TableName), c.put(aws.ToString(p.TableName), p.Item), err)
		if o, ok := result.(*dynamodb.PutItemOutput); ok && o != nil {
			units.Reported += reported(o.ConsumedCapacity)
		}
	case *dynamodb.UpdateItemInput:
		c.countSingleWrite(aws.ToString(p.TableName), c.update(aws.ToString(p.TableName), p.Key, p.UpdateExpression, p.ExpressionAttributeNames, p.ExpressionAttributeValues), err)
		if o, ok := result.(*dynamodb.UpdateItemOutput); ok && o != nil {
			units.Reported += reported(o.ConsumedCapacity)
		}
	case *dynamodb.DeleteItemInput:
		c.countSingleWrite(aws.ToString(p.TableName), c.del(aws.ToString(p.TableName), p.Key), err)
	case *dynamodb.TransactWriteItemsInput:
		c.countTransactWrite(p, result, err)
	case *dynamodb.DescribeTableInput, *dynamodb.ListTablesInput, *dynamodb.UpdateTimeToLiveInput,
		*dynamodb.DeleteTableInput, *dynamodb.DescribeTimeToLiveInput, *dynamodb.UpdateContinuousBackupsInput:
		// Control plane: no capacity units.
	default:
		units.Estimated++ // Scan, batch and transactional reads are not on crmsync's per-event path
	}
}

// countCreateTable starts a complete shadow of a table created through the counter, with its
// key schema and global secondary indexes.
func (c *Counter) countCreateTable(p *dynamodb.CreateTableInput, err error) {
	if err != nil {
		return
	}
	t := &table{items: map[string]ddbexpr.Item{}, complete: true}
	t.hash, t.rng = keyAttributes(p.KeySchema)
	for _, gsi := range p.GlobalSecondaryIndexes {
		index := Index{Name: aws.ToString(gsi.IndexName), Projection: "ALL"}
		index.Hash, index.Range = keyAttributes(gsi.KeySchema)
		if gsi.Projection != nil {
			index.Projection = string(gsi.Projection.ProjectionType)
			index.Include = gsi.Projection.NonKeyAttributes
		}
		t.indexes = append(t.indexes, index)
	}
	c.tables[aws.ToString(p.TableName)] = t
}

// keyAttributes returns a key schema's hash and range attribute names (range "" when absent).
func keyAttributes(schema []ddbtypes.KeySchemaElement) (hash, rng string) {
	for _, element := range schema {
		if element.KeyType == ddbtypes.KeyTypeHash {
			hash = aws.ToString(element.AttributeName)
		} else {
			rng = aws.ToString(element.AttributeName)
		}
	}
	return hash, rng
}

// countGetItem counts a GetItem's read units and records what it read in the shadow (a whole
// item read, or its absence).
func (c *Counter) countGetItem(p *dynamodb.GetItemInput, result any, err error) {
	if err != nil {
		return
	}
	o, _ := result.(*dynamodb.GetItemOutput)
	if o == nil {
		return
	}
	units := &c.u.DynamoDB
	units.Read += ReadUnits(ddbexpr.ItemSize(o.Item), aws.ToBool(p.ConsistentRead))
	units.Reported += reported(o.ConsumedCapacity)
	if t := c.tables[aws.ToString(p.TableName)]; t != nil {
		if len(o.Item) > 0 && p.ProjectionExpression == nil {
			t.set(o.Item)
		} else if len(o.Item) == 0 {
			t.del(p.Key)
		}
	}
}

// countBatchGetItem counts a BatchGetItem's read units: each key read as a GetItem of it
// (each returned item rounded up to 4 KB, a key with no item the minimum), keys left
// unprocessed not at all; what it read goes into the shadow.
func (c *Counter) countBatchGetItem(p *dynamodb.BatchGetItemInput, result any, err error) {
	if err != nil {
		return
	}
	o, _ := result.(*dynamodb.BatchGetItemOutput)
	if o == nil {
		return
	}
	units := &c.u.DynamoDB
	for name, request := range p.RequestItems {
		consistent := aws.ToBool(request.ConsistentRead)
		t := c.tables[name]
		returned := map[string]bool{}
		for _, item := range o.Responses[name] {
			units.Read += ReadUnits(ddbexpr.ItemSize(item), consistent)
			if t != nil {
				returned[t.key(item)] = true
				if request.ProjectionExpression == nil {
					t.set(item)
				}
			}
		}
		unprocessed := map[string]bool{}
		if t != nil {
			for _, key := range o.UnprocessedKeys[name].Keys {
				unprocessed[t.key(key)] = true
			}
		}
		for _, key := range request.Keys {
			if t == nil {
				continue
			}
			if k := t.key(key); !returned[k] && !unprocessed[k] {
				units.Read += ReadUnits(0, consistent)
				t.del(key)
			}
		}
	}
	units.Reported += reported(ptrs(o.ConsumedCapacity)...)
}

// countQuery counts a Query's read units: the items its key condition selected, those its
// filter dropped included (sized from the shadow, or estimated).
func (c *Counter) countQuery(p *dynamodb.QueryInput, result any, err error) {
	if err != nil {
		return
	}
	o, _ := result.(*dynamodb.QueryOutput)
	if o == nil {
		return
	}
	units := &c.u.DynamoDB
	consistent := p.IndexName == nil && aws.ToBool(p.ConsistentRead)
	size := 0
	for _, it := range o.Items {
		size += ddbexpr.ItemSize(it)
	}
	if o.ScannedCount > o.Count {
		// The filter dropped items that were read all the same: size them from the shadow.
		if scannedSize, ok := c.scanned(p, int(o.ScannedCount)); ok {
			size = scannedSize
		} else {
			units.Estimated++
			if o.Count > 0 {
				size += size / int(o.Count) * int(o.ScannedCount-o.Count)
			}
		}
	}
	units.Read += ReadUnits(size, consistent)
	units.Reported += reported(o.ConsumedCapacity)
}

// countSingleWrite counts a PutItem, UpdateItem or DeleteItem on table name: its write units
// (charged even when its condition failed), its index writes, and applies it to the shadow when
// it succeeded.
func (c *Counter) countSingleWrite(name string, w write, err error) {
	units := &c.u.DynamoDB
	writeUnits := WriteUnits(w.size())
	units.Write += writeUnits
	if !w.known {
		units.Estimated++
	}
	var conditionFailed *ddbtypes.ConditionalCheckFailedException
	if errors.As(err, &conditionFailed) {
		units.ConditionFailures++
		c.traceWrite(name, w, writeUnits, 0, false)
		return
	}
	if err != nil {
		return
	}
	indexUnits := w.t.indexWrites(w.old, w.new)
	units.IndexWrite += indexUnits
	c.traceWrite(name, w, writeUnits, indexUnits, false)
	w.apply()
}

// countTransactWrite counts a TransactWriteItems: twice the write units of every item (charged
// even when the transaction was canceled), its index writes, and applies it to the shadow when
// it succeeded.
func (c *Counter) countTransactWrite(p *dynamodb.TransactWriteItemsInput, result any, err error) {
	units := &c.u.DynamoDB
	units.Transactions++
	units.TransactItems += len(p.TransactItems)
	writes, names := c.transactWrites(p.TransactItems)
	for _, w := range writes {
		units.Write += 2 * WriteUnits(w.size())
		if !w.known {
			units.Estimated++
		}
	}
	if err != nil {
		var canceled *ddbtypes.TransactionCanceledException
		if errors.As(err, &canceled) {
			units.CanceledTransactions++
		}
		return
	}
	for i, w := range writes {
		indexUnits := 0.0
		if !w.check {
			indexUnits = w.t.indexWrites(w.old, w.new)
			units.IndexWrite += indexUnits
		}
		c.traceWrite(names[i], w, 2*WriteUnits(w.size()), indexUnits, true)
		w.apply()
	}
	if o, ok := result.(*dynamodb.TransactWriteItemsOutput); ok && o != nil {
		units.Reported += reported(ptrs(o.ConsumedCapacity)...)
	}
}

// transactWrites resolves a transaction's items against the shadow, with each one's table name.
func (c *Counter) transactWrites(items []ddbtypes.TransactWriteItem) ([]write, []string) {
	var writes []write
	var names []string
	for _, item := range items {
		switch {
		case item.Put != nil:
			names = append(names, aws.ToString(item.Put.TableName))
			writes = append(writes, c.put(aws.ToString(item.Put.TableName), item.Put.Item))
		case item.Update != nil:
			update := item.Update
			names = append(names, aws.ToString(update.TableName))
			writes = append(writes, c.update(aws.ToString(update.TableName), update.Key, update.UpdateExpression, update.ExpressionAttributeNames, update.ExpressionAttributeValues))
		case item.Delete != nil:
			names = append(names, aws.ToString(item.Delete.TableName))
			writes = append(writes, c.del(aws.ToString(item.Delete.TableName), item.Delete.Key))
		case item.ConditionCheck != nil:
			w := c.del(aws.ToString(item.ConditionCheck.TableName), item.ConditionCheck.Key)
			w.check = true
			names = append(names, aws.ToString(item.ConditionCheck.TableName))
			writes = append(writes, w)
		}
	}
	return writes, names
}

func ptrs(cc []ddbtypes.ConsumedCapacity) []*ddbtypes.ConsumedCapacity {
	out := make([]*ddbtypes.ConsumedCapacity, len(cc))
	for i := range cc {
		out[i] = &cc[i]
	}
	return out
}

// scanned sizes the items a query's key condition selects, from the shadow; ok is false when the
// shadow cannot say (unknown table, or a count that does not match the endpoint's).
func (c *Counter) scanned(p *dynamodb.QueryInput, want int) (int, bool) {
	t := c.tables[aws.ToString(p.TableName)]
	if t == nil || !t.complete {
		return 0, false
	}
	var idx *Index
	if p.IndexName != nil {
		for i := range t.indexes {
			if t.indexes[i].Name == aws.ToString(p.IndexName) {
				idx = &t.indexes[i]
			}
		}
		if idx == nil {
			return 0, false
		}
	}
	env := ddbexpr.Env{Names: p.ExpressionAttributeNames, Values: p.ExpressionAttributeValues}
	n, count := 0, 0
	for _, it := range t.items {
		if idx != nil && !idx.has(it) {
			continue
		}
		ok, err := ddbexpr.Eval(aws.ToString(p.KeyConditionExpression), it, env)
		if err != nil {
			return 0, false
		}
		if ok {
			count++
			if idx != nil {
				n += t.entrySize(*idx, it)
			} else {
				n += ddbexpr.ItemSize(it)
			}
		}
	}
	return n, count == want
}

// ---------------------------------------------------------------------------- SQS

// SQSChunk is the payload size SQS bills as one request.
const SQSChunk = 64 * 1024

func sqsRequests(payload int) float64 { return math.Max(1, math.Ceil(float64(payload)/SQSChunk)) }

func (c *Counter) sqs(params, result any, err error) {
	switch p := params.(type) {
	case *sqs.SendMessageBatchInput:
		n := 0
		for _, e := range p.Entries {
			n += len(aws.ToString(e.MessageBody))
			for k, v := range e.MessageAttributes {
				n += len(k) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
			}
		}
		c.u.SQSRequests += sqsRequests(n)
		if err == nil {
			c.u.SQSMessagesSent += len(p.Entries)
		}
	case *sqs.SendMessageInput:
		c.u.SQSRequests += sqsRequests(len(aws.ToString(p.MessageBody)))
		if err == nil {
			c.u.SQSMessagesSent++
		}
	case *sqs.ReceiveMessageInput:
		c.u.SQSReceives++
		n, msgs := 0, 0
		if o, ok := result.(*sqs.ReceiveMessageOutput); ok && o != nil {
			msgs = len(o.Messages)
			for _, m := range o.Messages {
				n += len(aws.ToString(m.Body))
			}
		}
		if msgs == 0 {
			c.u.SQSEmptyReceives++
		}
		c.u.SQSMessagesReceived += msgs
		c.u.SQSRequests += sqsRequests(n)
	default:
		c.u.SQSRequests++
	}
}

// ItemOverhead is the bytes DynamoDB adds to every stored item, in a table and in each index
// entry, when it meters storage ("the total size of each item plus 100 bytes for indexing
// overhead").
const ItemOverhead = 100

// TTLAttribute is the attribute crmsync's tables name in their TimeToLiveSpecification.
const TTLAttribute = "expires_at"

// Stored is what a table holds, as DynamoDB meters it for storage, and for how long.
type Stored struct {
	// Items and Bytes are the table's items and their metered size (item size plus ItemOverhead).
	Items int
	Bytes int64
	// IndexBytes is the metered size of the table's global secondary indexes: each projected
	// entry plus ItemOverhead.
	IndexBytes int64
	// ByteMonths and IndexByteMonths weigh each item's metered bytes by how long it stays: until
	// its expires_at (TTL), at most the horizon; items without a TTL for the whole horizon.
	ByteMonths, IndexByteMonths float64
}

// Sub returns s minus prev (what was added between two readings).
func (s Stored) Sub(prev Stored) Stored {
	return Stored{Items: s.Items - prev.Items, Bytes: s.Bytes - prev.Bytes, IndexBytes: s.IndexBytes - prev.IndexBytes,
		ByteMonths: s.ByteMonths - prev.ByteMonths, IndexByteMonths: s.IndexByteMonths - prev.IndexByteMonths}
}

// month is the billing month DynamoDB and S3 storage prices use (730 hours).
const month = 730 * time.Hour

// Storage returns, per table the counter knows completely (created through it), what its shadow
// holds now, each item weighed by how long it stays from now (its TTL, at most horizon). Tables
// only registered are left out: their shadow holds only what was seen.
func (c *Counter) Storage(now time.Time, horizon time.Duration) map[string]Stored {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]Stored{}
	for name, t := range c.tables {
		if !t.complete {
			continue
		}
		var s Stored
		for _, it := range t.items {
			life := horizon
			if n, ok := it[TTLAttribute].(*ddbtypes.AttributeValueMemberN); ok {
				if secs, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
					life = min(horizon, max(0, time.Unix(secs, 0).Sub(now)))
				}
			}
			months := float64(life) / float64(month)
			size := int64(ddbexpr.ItemSize(it) + ItemOverhead)
			s.Items++
			s.Bytes += size
			s.ByteMonths += float64(size) * months
			for _, idx := range t.indexes {
				if idx.has(it) {
					entry := int64(t.entrySize(idx, it) + ItemOverhead)
					s.IndexBytes += entry
					s.IndexByteMonths += float64(entry) * months
				}
			}
		}
		out[name] = s
	}
	return out
}
