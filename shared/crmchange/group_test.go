package crmchange

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/shared/canonical"
	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/shared/worker"
	"github.com/crmsync/crmsync/tools/moto"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

// All CRM edits of one contact share one FIFO group, however the CRM addresses the contact: an
// edit by email and one by phone of an existing contact both travel in contact:<id>, so they are
// applied in the order they were sent. Before, they went to email:<addr> and phone:<e164>, two
// groups with no order between them. A contact that does not exist yet keeps its identity's group.
func TestCrmEditsOfAContactShareOneGroup(t *testing.T) {
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	ddb, q := dynamodb.NewFromConfig(cfg), sqs.NewFromConfig(cfg)
	suffix := fmt.Sprint(time.Now().UnixNano())
	table := "crm-" + suffix
	if _, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: aws.String(table), BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema: []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: ddbtypes.KeyTypeRange}}}); err != nil {
		t.Fatal(err)
	}
	for _, pk := range []string{store.IdentEmailPK("ada@example.com"), store.IdentPhonePK("+14155550123")} {
		item, _ := attributevalue.MarshalMap(store.IdentityClaim{PK: pk, SK: store.SKIdent, ContactID: "c-ada", EventKey: "e", ClaimedAt: "x"})
		if _, err := ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	queue, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("ingest-" + suffix + ".fifo"),
		Attributes: map[string]string{"FifoQueue": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	h := New(Config{QueueURL: aws.ToString(queue.QueueUrl), CRMTable: table, Policy: testPolicy(t), Principals: testPrincipals(t,
		"principals: [{arn: \"arn:aws:iam::123456789012:user/crm\", roles: [revops]}]")},
		Deps{SQS: q, Identities: ddb, Now: func() time.Time { return now }})
	for _, c := range []struct {
		id      string
		contact string
		want    string
	}{
		{"g-1", `{"email":"Ada@Example.com"}`, worker.ContactGroupKey("c-ada")},
		{"g-2", `{"phone":"+1 415 555 0123"}`, worker.ContactGroupKey("c-ada")},
		{"g-3", `{"id":"c-ada"}`, worker.ContactGroupKey("c-ada")},
		{"g-4", `{"email":"new@example.com"}`, "email:new@example.com"},
	} {
		body := `{"change_id":"` + c.id + `","contact":` + c.contact + `,"actor":{"email":"alice@example.com","role":"revops"},"fields":{"first_name":"Ada"}}`
		resp, _ := h.Handle(ctx, request(body))
		if resp.StatusCode != 202 {
			t.Fatalf("%s: %d %s", c.id, resp.StatusCode, resp.Body)
		}
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: queue.QueueUrl, MaxNumberOfMessages: 1})
		if err != nil || len(out.Messages) != 1 {
			t.Fatalf("%s: receive: %v (%d messages)", c.id, err, len(out.Messages))
		}
		var ev canonical.Event
		if err := json.Unmarshal([]byte(aws.ToString(out.Messages[0].Body)), &ev); err != nil {
			t.Fatal(err)
		}
		if got := ev.GroupKey; got != c.want {
			t.Errorf("%s (contact %s): group key %q, want %q", c.id, c.contact, got, c.want)
		}
		if _, err := q.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: queue.QueueUrl, ReceiptHandle: out.Messages[0].ReceiptHandle}); err != nil {
			t.Fatal(err)
		}
	}
}
