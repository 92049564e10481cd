package moto_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/moto"
)

// With index lag, a Query of a global secondary index sees items as they were lag ago — a new
// item missing, a moved one still under its old index key — and marks such an answer; the table
// itself stays read-your-writes, and once the lag has passed the index agrees with it.
func TestPatchedIndexLag(t *testing.T) {
	ctx := context.Background()
	endpoint, err := moto.FreeEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	const lag = 700 * time.Millisecond
	server, err := moto.StartPatchedWithLag(ctx, endpoint, lag)
	if err != nil {
		t.Fatalf("local AWS (patched moto) unavailable: %v", err)
	}
	t.Cleanup(server.Stop)
	cfg, err := awsclient.Load(ctx, endpoint)
	if err != nil {
		t.Fatal(err)
	}
	db := dynamodb.NewFromConfig(cfg)
	s := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
	if _, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String("lagged"), BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("g"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema: []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{IndexName: aws.String("ByG"),
			KeySchema:  []types.KeySchemaElement{{AttributeName: aws.String("g"), KeyType: types.KeyTypeHash}},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll}}}}); err != nil {
		t.Fatal(err)
	}
	query := func(g string) (pks []string, lagged string) {
		t.Helper()
		out, err := db.Query(ctx, &dynamodb.QueryInput{TableName: aws.String("lagged"), IndexName: aws.String("ByG"),
			KeyConditionExpression: aws.String("g = :g"), ExpressionAttributeValues: map[string]types.AttributeValue{":g": s(g)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range out.Items {
			pks = append(pks, it["pk"].(*types.AttributeValueMemberS).Value)
		}
		if raw, ok := awsmiddleware.GetRawResponse(out.ResultMetadata).(*smithyhttp.Response); ok {
			lagged = raw.Header.Get(moto.LaggedHeader)
		}
		return pks, lagged
	}
	put := func(pk, g string) {
		t.Helper()
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("lagged"), Item: map[string]types.AttributeValue{"pk": s(pk), "g": s(g)}}); err != nil {
			t.Fatal(err)
		}
	}

	putOutside := func() { // an item outside the index (no g)
		t.Helper()
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("lagged"), Item: map[string]types.AttributeValue{"pk": s("z")}}); err != nil {
			t.Fatal(err)
		}
	}
	putOutside()
	put("a", "one")
	if pks, lagged := query("one"); len(pks) != 0 || lagged != "1" {
		t.Errorf("index right after the write: %v (lagged %q), want nothing, lagged 1", pks, lagged)
	}
	got, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("lagged"), Key: map[string]types.AttributeValue{"pk": s("a")}, ConsistentRead: aws.Bool(true)})
	if err != nil || got.Item == nil {
		t.Errorf("the table itself does not see its write: %v", err)
	}
	time.Sleep(lag + 100*time.Millisecond)
	// Rewritten inside the lag, the item outside the index is no answer's business (its image has
	// no g: the first version of the lag answered 500 here).
	putOutside()
	if pks, lagged := query("one"); len(pks) != 1 || lagged != "" {
		t.Errorf("index after the lag: %v (lagged %q), want [a], not lagged", pks, lagged)
	}
	put("a", "two") // moves a from one to two
	if pks, _ := query("one"); len(pks) != 1 {
		t.Errorf("old index key right after the move: %v, want [a] still", pks)
	}
	if pks, _ := query("two"); len(pks) != 0 {
		t.Errorf("new index key right after the move: %v, want nothing yet", pks)
	}
	time.Sleep(lag + 100*time.Millisecond)
	if one, two := func() ([]string, []string) { a, _ := query("one"); b, _ := query("two"); return a, b }(); len(one) != 0 || len(two) != 1 {
		t.Errorf("after the lag: one %v, two %v; want [] and [a]", one, two)
	}
}
