package awsproxy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/moto"
)

// With Contention, a write meeting an ongoing transaction on one of its items is answered as
// DynamoDB answers it, and the real SDK reads the answer as DynamoDB's: a transaction is canceled
// with TransactionConflict at the conflicting item, a single-item write fails with
// TransactionConflictException. Items of no ongoing transaction, and the same items once it is
// over, are written.
func TestContentionAnswersAsDynamoDB(t *testing.T) {
	ctx := context.Background()
	direct := moto.ForTest(t)
	table := fmt.Sprintf("ct%d", time.Now().UnixNano()%1e9)
	p, err := New(Config{Target: direct, Contention: map[string][]string{table: {"pk"}}})
	if err != nil {
		t.Fatal(err)
	}
	endpoint, err := p.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	cfg, err := awsclient.Load(ctx, endpoint, config.WithRetryMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	db := dynamodb.NewFromConfig(cfg)
	if _, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(table), BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}}}); err != nil {
		t.Fatal(err)
	}
	put := func(pk string) *ddbtypes.Put { return &ddbtypes.Put{TableName: aws.String(table), Item: item(pk)} }
	transact := func(pks ...string) error {
		var items []ddbtypes.TransactWriteItem
		for _, pk := range pks {
			items = append(items, ddbtypes.TransactWriteItem{Put: put(pk)})
		}
		_, err := db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		return err
	}

	// An ongoing transaction on "b" (begun, its answer not yet back).
	ongoing := fmt.Sprintf(`{"TransactItems":[{"Put":{"TableName":%q,"Item":{"pk":{"S":"b"},"n":{"N":"1"}}}}]}`, table)
	release, status, _, _ := p.contend.Load().begin("dynamodb.TransactWriteItems", []byte(ongoing))
	if release == nil {
		t.Fatalf("the first transaction was refused (%d)", status)
	}

	err = transact("a", "b", "c")
	var canceled *ddbtypes.TransactionCanceledException
	if !errors.As(err, &canceled) {
		t.Fatalf("overlapping transaction: %v, want TransactionCanceledException", err)
	}
	var codes []string
	for _, r := range canceled.CancellationReasons {
		codes = append(codes, aws.ToString(r.Code))
	}
	if got, want := fmt.Sprint(codes), "[None TransactionConflict None]"; got != want {
		t.Errorf("cancellation reasons = %s, want %s", got, want)
	}
	_, err = db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item("b")})
	var single *ddbtypes.TransactionConflictException
	if !errors.As(err, &single) {
		t.Errorf("PutItem of an item in an ongoing transaction: %v, want TransactionConflictException", err)
	}
	if err := transact("a", "c"); err != nil {
		t.Errorf("a transaction on other items: %v", err)
	}
	if got := p.NaturalConflicts(); got["dynamodb.TransactWriteItems"] != 1 || got["dynamodb.PutItem"] != 1 {
		t.Errorf("NaturalConflicts() = %v, want one TransactWriteItems and one PutItem", got)
	}

	release()
	if err := transact("a", "b", "c"); err != nil {
		t.Errorf("the transaction once the other is over: %v", err)
	}
	if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item("b")}); err != nil {
		t.Errorf("PutItem once the transaction is over: %v", err)
	}
}
