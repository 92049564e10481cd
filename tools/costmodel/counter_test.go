package costmodel

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/tools/ddbexpr"
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

// newTestCounter has one table (pk, sk) with a sparse index on unassoc.
func newTestCounter() *Counter {
	c := NewCounter()
	c.record(Op{"DynamoDB", "CreateTable"}, &dynamodb.CreateTableInput{
		TableName: aws.String("t"),
		KeySchema: []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}, {AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange}},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{IndexName: aws.String("U"),
			KeySchema:  []types.KeySchemaElement{{AttributeName: aws.String("unassoc"), KeyType: types.KeyTypeHash}},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll}}},
	}, &dynamodb.CreateTableOutput{}, nil)
	return c
}

func TestWriteUnitsFollowThePublishedRules(t *testing.T) {
	c := newTestCounter()
	big := strings.Repeat("x", 1500) // an item of about 1.5 KB: 2 units
	item := ddbexpr.Item{"pk": s("a"), "sk": s("b"), "doc": s(big)}
	c.record(Op{"DynamoDB", "PutItem"}, &dynamodb.PutItemInput{TableName: aws.String("t"), Item: item}, &dynamodb.PutItemOutput{}, nil)
	if d := c.Snapshot().DynamoDB; d.Write != 2 || d.IndexWrite != 0 || d.Estimated != 0 {
		t.Fatalf("put: %+v", d)
	}
	// Replacing it with a small item in a transaction costs the larger image, twice; the new
	// item enters the sparse index (1 unit).
	c.Reset()
	small := ddbexpr.Item{"pk": s("a"), "sk": s("b"), "unassoc": s("1")}
	c.record(Op{"DynamoDB", "TransactWriteItems"}, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Put: &types.Put{TableName: aws.String("t"), Item: small}},
		{ConditionCheck: &types.ConditionCheck{TableName: aws.String("t"), Key: ddbexpr.Item{"pk": s("x"), "sk": s("y")}}},
	}}, &dynamodb.TransactWriteItemsOutput{}, nil)
	if d := c.Snapshot().DynamoDB; d.Write != 2*2+2*1 || d.IndexWrite != 1 || d.TransactItems != 2 {
		t.Fatalf("transaction: %+v", d)
	}
	// A strongly consistent read of the 1.5 KB item's successor: 1 unit; an absent item: 1 unit.
	c.Reset()
	c.record(Op{"DynamoDB", "GetItem"}, &dynamodb.GetItemInput{TableName: aws.String("t"), ConsistentRead: aws.Bool(true)},
		&dynamodb.GetItemOutput{Item: small}, nil)
	c.record(Op{"DynamoDB", "GetItem"}, &dynamodb.GetItemInput{TableName: aws.String("t")}, &dynamodb.GetItemOutput{}, nil)
	if d := c.Snapshot().DynamoDB; d.Read != 1.5 {
		t.Fatalf("reads: %+v", d)
	}
}

// An index entry is written only when the index's key or a projected attribute changes
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html#GSI.Writes).
func TestIndexWritesOnlyWhenTheEntryChanges(t *testing.T) {
	key := func(name string, kt types.KeyType) types.KeySchemaElement {
		return types.KeySchemaElement{AttributeName: aws.String(name), KeyType: kt}
	}
	c := NewCounter()
	c.record(Op{"DynamoDB", "CreateTable"}, &dynamodb.CreateTableInput{
		TableName: aws.String("t"),
		KeySchema: []types.KeySchemaElement{key("pk", types.KeyTypeHash), key("sk", types.KeyTypeRange)},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{
			{IndexName: aws.String("Keys"), KeySchema: []types.KeySchemaElement{key("k", types.KeyTypeHash)},
				Projection: &types.Projection{ProjectionType: types.ProjectionTypeKeysOnly}},
			{IndexName: aws.String("Incl"), KeySchema: []types.KeySchemaElement{key("i", types.KeyTypeHash)},
				Projection: &types.Projection{ProjectionType: types.ProjectionTypeInclude, NonKeyAttributes: []string{"status"}}},
			{IndexName: aws.String("All"), KeySchema: []types.KeySchemaElement{key("a", types.KeyTypeHash)},
				Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll}},
		},
	}, &dynamodb.CreateTableOutput{}, nil)
	put := func(item ddbexpr.Item) float64 {
		c.Reset()
		c.record(Op{"DynamoDB", "PutItem"}, &dynamodb.PutItemInput{TableName: aws.String("t"), Item: item}, &dynamodb.PutItemOutput{}, nil)
		return c.Snapshot().DynamoDB.IndexWrite
	}
	item := func(k, i, a, status, doc string) ddbexpr.Item {
		it := ddbexpr.Item{"pk": s("p"), "sk": s("s"), "status": s(status), "doc": s(doc)}
		for name, v := range map[string]string{"k": k, "i": i, "a": a} {
			if v != "" {
				it[name] = s(v)
			}
		}
		return it
	}
	tests := []struct {
		name string
		item ddbexpr.Item
		want float64
	}{
		{"new item enters all three indexes", item("k1", "i1", "a1", "open", "x"), 3},
		{"same item again: no entry changes", item("k1", "i1", "a1", "open", "x"), 0},
		{"unprojected attribute changes: only ALL rewrites", item("k1", "i1", "a1", "open", "y"), 1},
		{"included attribute changes: INCLUDE and ALL rewrite", item("k1", "i1", "a1", "done", "y"), 2},
		{"KEYS_ONLY key changes: old entry deleted, new put; ALL projects k too", item("k2", "i1", "a1", "done", "y"), 2 + 1},
		{"leaves the INCLUDE index: one delete; ALL projects i too", item("k2", "", "a1", "done", "y"), 1 + 1},
	}
	for _, tt := range tests {
		if got := put(tt.item); got != tt.want {
			t.Errorf("%s: index units = %g, want %g", tt.name, got, tt.want)
		}
	}
}

// Storage meters each item at its size plus 100 bytes, in the table and in every index that
// holds it, and weighs it by how long it stays: to its TTL, or the whole horizon.
func TestStorageMetersItemsAndIndexEntriesForTheirLifetime(t *testing.T) {
	c := newTestCounter()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	expires := &types.AttributeValueMemberN{Value: strconv.FormatInt(now.Add(73*time.Hour).Unix(), 10)}
	forever := ddbexpr.Item{"pk": s("a"), "sk": s("b"), "unassoc": s("1")}
	shortLived := ddbexpr.Item{"pk": s("c"), "sk": s("d"), "expires_at": expires}
	for _, item := range []ddbexpr.Item{forever, shortLived} {
		c.record(Op{"DynamoDB", "PutItem"}, &dynamodb.PutItemInput{TableName: aws.String("t"), Item: item}, &dynamodb.PutItemOutput{}, nil)
	}
	got := c.Storage(now, 730*time.Hour)["t"]
	foreverBytes, shortBytes := int64(ddbexpr.ItemSize(forever)+100), int64(ddbexpr.ItemSize(shortLived)+100)
	want := Stored{Items: 2, Bytes: foreverBytes + shortBytes, IndexBytes: foreverBytes,
		ByteMonths: float64(foreverBytes) + float64(shortBytes)*0.1, IndexByteMonths: float64(foreverBytes)}
	if math.Abs(got.ByteMonths-want.ByteMonths) > 1e-9 {
		t.Errorf("byte-months = %g, want %g", got.ByteMonths, want.ByteMonths)
	}
	got.ByteMonths = want.ByteMonths
	if got != want {
		t.Errorf("storage = %+v, want %+v", got, want)
	}
	if _, ok := c.Storage(now, time.Hour)["unknown"]; ok {
		t.Error("a table the counter did not create is reported")
	}
}
