package moto_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/moto"
)

// The patched moto_server changes how moto runs requests (one lock, an undo log instead of
// table copies, partition maps for queries, short long-poll sleeps), never what it answers. A
// fixed workload of the calls crmsync makes — conditional puts, transactions that commit and
// that cancel with reasons, updates, table and index queries with paging, scans, deletes, and a
// FIFO queue's batches — gets the same answers from stock moto and from the patched server.
func TestPatchedMotoAnswersLikeStockMoto(t *testing.T) {
	ctx := context.Background()
	stockURL, err := moto.FreeEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	stock, err := moto.Start(ctx, stockURL)
	if err != nil {
		t.Fatalf("stock moto_server: %v (%s)", err, moto.InstallHint)
	}
	defer stock.Stop()
	patchedURL, err := moto.FreeEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	patched, err := moto.StartPatched(ctx, patchedURL)
	if err != nil {
		t.Fatalf("patched moto_server: %v", err)
	}
	defer patched.Stop()

	want := workload(t, stockURL)
	got := workload(t, patchedURL)
	if len(want) < 20 {
		t.Fatalf("the workload recorded %d answers; it should exercise more", len(want))
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("patched moto answers differently from stock moto %s (-stock +patched):\n%s", moto.Version, d)
	}
}

// workload runs the fixed workload against endpoint and returns each step's answer, normalised
// to what crmsync reads (items, counts, paging, error codes and cancellation reasons, message
// bodies) without ids or times.
func workload(t *testing.T, endpoint string) []string {
	t.Helper()
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ddb, q := dynamodb.NewFromConfig(cfg), sqs.NewFromConfig(cfg)
	var out []string
	note := func(step string, v any, err error) {
		var apiErr smithy.APIError
		var canceled *ddbtypes.TransactionCanceledException
		switch {
		case errors.As(err, &canceled):
			var reasons []string
			for _, r := range canceled.CancellationReasons {
				reasons = append(reasons, aws.ToString(r.Code))
			}
			out = append(out, fmt.Sprintf("%s: canceled %v", step, reasons))
		case errors.As(err, &apiErr):
			out = append(out, fmt.Sprintf("%s: error %s", step, apiErr.ErrorCode()))
		case err != nil:
			t.Fatalf("%s: %v", step, err)
		default:
			b, _ := json.Marshal(v)
			out = append(out, step+": "+string(b))
		}
	}
	s := func(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }
	n := func(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberN{Value: v} }
	key := func(pk, sk string) map[string]ddbtypes.AttributeValue {
		return map[string]ddbtypes.AttributeValue{"pk": s(pk), "sk": s(sk)}
	}
	items := func(in []map[string]ddbtypes.AttributeValue) []map[string]any {
		var rows []map[string]any
		for _, it := range in {
			var m map[string]any
			_ = attributevalue.UnmarshalMap(it, &m)
			rows = append(rows, m)
		}
		return rows
	}

	const table = "agree"
	_, err = ddb.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(table), BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: ddbtypes.ScalarAttributeTypeS}, {AttributeName: aws.String("g"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema: []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}, {AttributeName: aws.String("sk"), KeyType: ddbtypes.KeyTypeRange}},
		GlobalSecondaryIndexes: []ddbtypes.GlobalSecondaryIndex{{IndexName: aws.String("ByG"),
			KeySchema:  []ddbtypes.KeySchemaElement{{AttributeName: aws.String("g"), KeyType: ddbtypes.KeyTypeHash}, {AttributeName: aws.String("sk"), KeyType: ddbtypes.KeyTypeRange}},
			Projection: &ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeAll}}},
	})
	note("create table", nil, err)

	for i := range 6 {
		item := key("P#1", fmt.Sprintf("S#%d", i))
		item["v"], item["g"] = n(fmt.Sprint(i)), s([]string{"a", "b"}[i%2])
		_, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item, ConditionExpression: aws.String("attribute_not_exists(pk)")})
		note(fmt.Sprintf("put %d", i), nil, err)
	}
	_, err = ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: key("P#1", "S#0"), ConditionExpression: aws.String("attribute_not_exists(pk)")})
	note("conditional put on an existing item", nil, err)

	got, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key("P#1", "S#3"), ConsistentRead: aws.Bool(true)})
	if err == nil {
		note("get", items([]map[string]ddbtypes.AttributeValue{got.Item}), nil)
	} else {
		note("get", nil, err)
	}
	upd, err := ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table), Key: key("P#1", "S#3"),
		UpdateExpression: aws.String("SET v = v + :one ADD tags :t"), ConditionExpression: aws.String("v = :three"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":one": n("1"), ":three": n("3"), ":t": &ddbtypes.AttributeValueMemberSS{Value: []string{"x"}}},
		ReturnValues:              ddbtypes.ReturnValueAllNew})
	if err == nil {
		note("update", items([]map[string]ddbtypes.AttributeValue{upd.Attributes}), nil)
	} else {
		note("update", nil, err)
	}

	// A transaction that commits, then one canceled by its second item's condition (the first
	// item's effect must not be visible), then one naming an item twice.
	tx := func(step string, cond string) {
		_, err := ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
			{Put: &ddbtypes.Put{TableName: aws.String(table), Item: map[string]ddbtypes.AttributeValue{"pk": s("P#2"), "sk": s(step), "g": s("a")}}},
			{ConditionCheck: &ddbtypes.ConditionCheck{TableName: aws.String(table), Key: key("P#1", "S#0"), ConditionExpression: aws.String(cond)}},
			{Update: &ddbtypes.Update{TableName: aws.String(table), Key: key("P#1", "S#1"), UpdateExpression: aws.String("SET w = :w"),
				ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":w": s(step)}}},
		}})
		note(step, nil, err)
	}
	tx("tx commits", "attribute_exists(pk)")
	tx("tx canceled", "attribute_not_exists(pk)")
	_, err = ddb.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{
		{Put: &ddbtypes.Put{TableName: aws.String(table), Item: key("P#3", "S#0")}},
		{Delete: &ddbtypes.Delete{TableName: aws.String(table), Key: key("P#3", "S#0")}},
	}})
	note("tx naming one item twice", nil, err)

	// Queries: a partition with paging, an index partition, a begins_with range.
	var pages []any
	var start map[string]ddbtypes.AttributeValue
	for {
		page, err := ddb.Query(ctx, &dynamodb.QueryInput{TableName: aws.String(table), KeyConditionExpression: aws.String("pk = :p"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":p": s("P#1")}, Limit: aws.Int32(4), ExclusiveStartKey: start})
		if err != nil {
			note("query pages", nil, err)
			break
		}
		pages = append(pages, map[string]any{"items": items(page.Items), "count": page.Count, "more": len(page.LastEvaluatedKey) > 0})
		if start = page.LastEvaluatedKey; len(start) == 0 {
			note("query pages", pages, nil)
			break
		}
	}
	byG, err := ddb.Query(ctx, &dynamodb.QueryInput{TableName: aws.String(table), IndexName: aws.String("ByG"), KeyConditionExpression: aws.String("g = :g"),
		FilterExpression: aws.String("attribute_not_exists(w)"), ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":g": s("a")}})
	if err == nil {
		note("index query with filter", map[string]any{"items": items(byG.Items), "count": byG.Count, "scanned": byG.ScannedCount}, nil)
	} else {
		note("index query with filter", nil, err)
	}
	rng, err := ddb.Query(ctx, &dynamodb.QueryInput{TableName: aws.String(table), KeyConditionExpression: aws.String("pk = :p AND begins_with(sk, :s)"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":p": s("P#2"), ":s": s("tx")}, ScanIndexForward: aws.Bool(false)})
	if err == nil {
		note("range query, descending", items(rng.Items), nil)
	} else {
		note("range query, descending", nil, err)
	}
	var scanned []string
	start = nil
	for {
		page, err := ddb.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table), Limit: aws.Int32(3), ExclusiveStartKey: start})
		if err != nil {
			note("scan", nil, err)
			break
		}
		for _, it := range items(page.Items) {
			scanned = append(scanned, fmt.Sprint(it["pk"], "/", it["sk"]))
		}
		if start = page.LastEvaluatedKey; len(start) == 0 {
			sort.Strings(scanned) // scan order is the emulator's own
			note("scan (all pages)", scanned, nil)
			break
		}
	}
	_, err = ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: key("P#1", "S#5"), ConditionExpression: aws.String("v = :nine"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":nine": n("9")}})
	note("conditional delete refused", nil, err)

	// A FIFO queue: batches with deduplication, in group order.
	created, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("agree.fifo"),
		Attributes: map[string]string{"FifoQueue": "true", "DeduplicationScope": "messageGroup", "FifoThroughputLimit": "perMessageGroupId"}})
	note("create queue", nil, err)
	if err != nil {
		return out
	}
	send := func(step string, ids ...string) {
		var entries []sqstypes.SendMessageBatchRequestEntry
		for i, id := range ids {
			entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), MessageBody: aws.String("body " + id),
				MessageGroupId: aws.String("g" + id[:1]), MessageDeduplicationId: aws.String(id)})
		}
		res, err := q.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: created.QueueUrl, Entries: entries})
		if err == nil {
			note(step, map[string]int{"ok": len(res.Successful), "failed": len(res.Failed)}, nil)
		} else {
			note(step, nil, err)
		}
	}
	send("send batch", "1a", "1b", "2a", "1c")
	send("send batch again (deduplicated)", "1a", "2a")
	var bodies []string
	for range 3 {
		res, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: created.QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			note("receive", nil, err)
			break
		}
		var del []sqstypes.DeleteMessageBatchRequestEntry
		for i, m := range res.Messages {
			bodies = append(bodies, aws.ToString(m.Body))
			del = append(del, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
		}
		if len(del) > 0 {
			if _, err := q.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: created.QueueUrl, Entries: del}); err != nil {
				note("delete", nil, err)
			}
		}
	}
	sort.SliceStable(bodies, func(i, j int) bool { return bodies[i][:6] < bodies[j][:6] }) // groups may interleave; order within a group holds
	note("received, by group in order", strings.Join(bodies, ", "), nil)
	return out
}

// The one answer the patched server changes, to DynamoDB's: a TransactWriteItems repeating its
// ClientRequestToken (as the worker's in-process retry after a lost answer does: the SDK sets
// the token once per input) succeeds without writing again. Stock moto ignores the token, so
// the repeat fails its own condition; written before the patch, this test failed the same way
// on the patched server.
func TestPatchedMotoHonoursTransactionTokens(t *testing.T) {
	ctx := context.Background()
	answers := map[string]string{}
	type stopper interface{ Stop() }
	for _, start := range []struct {
		name string
		fn   func(context.Context, string) (stopper, error)
	}{
		{"stock", func(ctx context.Context, url string) (stopper, error) { return moto.Start(ctx, url) }},
		{"patched", func(ctx context.Context, url string) (stopper, error) { return moto.StartPatched(ctx, url) }},
	} {
		url, err := moto.FreeEndpoint()
		if err != nil {
			t.Fatal(err)
		}
		server, err := start.fn(ctx, url)
		if err != nil {
			t.Fatalf("%s moto_server: %v", start.name, err)
		}
		cfg, err := awsclient.Load(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		ddb := dynamodb.NewFromConfig(cfg)
		if _, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String("tok"), BillingMode: ddbtypes.BillingModePayPerRequest,
			AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
			KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}}}); err != nil {
			t.Fatal(err)
		}
		in := &dynamodb.TransactWriteItemsInput{TransactItems: []ddbtypes.TransactWriteItem{{Put: &ddbtypes.Put{TableName: aws.String("tok"),
			Item:                map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "ledger"}},
			ConditionExpression: aws.String("attribute_not_exists(pk)")}}}}
		if _, err := ddb.TransactWriteItems(ctx, in); err != nil {
			t.Fatalf("%s: first call: %v", start.name, err)
		}
		if in.ClientRequestToken == nil {
			t.Fatalf("%s: the SDK set no ClientRequestToken on the input", start.name)
		}
		_, err = ddb.TransactWriteItems(ctx, in) // the same input, token included: a retry
		var canceled *ddbtypes.TransactionCanceledException
		switch {
		case err == nil:
			answers[start.name] = "success"
		case errors.As(err, &canceled):
			answers[start.name] = "canceled"
		default:
			t.Fatalf("%s: repeat: %v", start.name, err)
		}
		server.Stop()
	}
	if answers["patched"] != "success" || answers["stock"] != "canceled" {
		t.Errorf("a repeated token: stock %s, patched %s; want stock canceled (moto ignores tokens), patched success (as DynamoDB)",
			answers["stock"], answers["patched"])
	}
}
