package awsproxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// A partial fault answers a batch 200 having done part of it, and the real SDK reads the answer as
// the service's: SendMessageBatch entries under Failed (not the sender's fault) were not enqueued
// and every Successful one was; BatchGetItem keys under UnprocessedKeys (with the request's read
// settings) were not read and every other one was.
func TestPartialBatchesAgainstMoto(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1, 100*time.Millisecond)
	if err := f.proxy.SetRules([]Rule{{Kind: Partial, Phase: After, Rate: 1}}); err != nil {
		t.Fatal(err)
	}

	var entries []sqstypes.SendMessageBatchRequestEntry
	for i := range 10 {
		entries = append(entries, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), MessageBody: aws.String(fmt.Sprint("m", i)),
			MessageGroupId: aws.String("g"), MessageDeduplicationId: aws.String(fmt.Sprint(f.name, i))})
	}
	sent, err := f.sqs.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(f.queue), Entries: entries})
	if err != nil {
		t.Fatalf("partial SendMessageBatch: %v", err)
	}
	if len(sent.Failed) == 0 || len(sent.Failed)+len(sent.Successful) != 10 {
		t.Fatalf("failed %d, successful %d: want some failed, 10 in all", len(sent.Failed), len(sent.Successful))
	}
	if err := f.proxy.SetRules(nil); err != nil {
		t.Fatal(err)
	}
	enqueued := map[string]bool{}
	for range 5 {
		out, err := f.sqsDirect.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(f.queue), MaxNumberOfMessages: 10})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			enqueued[aws.ToString(m.Body)] = true
			if _, err := f.sqsDirect.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(f.queue), ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, e := range sent.Failed {
		if aws.ToString(e.Code) != "InternalError" || e.SenderFault {
			t.Errorf("failed entry %+v: want InternalError, not the sender's fault", e)
		}
		if enqueued["m"+aws.ToString(e.Id)] {
			t.Errorf("entry %s reported failed, yet enqueued", aws.ToString(e.Id))
		}
	}
	for _, e := range sent.Successful {
		if !enqueued["m"+aws.ToString(e.Id)] {
			t.Errorf("entry %s reported successful, not enqueued", aws.ToString(e.Id))
		}
	}

	var keys []map[string]ddbtypes.AttributeValue
	for i := range 10 {
		pk := fmt.Sprint("partial-", i)
		if _, err := f.ddbDirect.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(f.table), Item: item(pk)}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, item(pk))
	}
	if err := f.proxy.SetRules([]Rule{{Kind: Partial, Phase: After, Rate: 1}}); err != nil {
		t.Fatal(err)
	}
	got, err := f.ddb.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]ddbtypes.KeysAndAttributes{
		f.table: {Keys: keys, ConsistentRead: aws.Bool(true)}}})
	if err != nil {
		t.Fatalf("partial BatchGetItem: %v", err)
	}
	unprocessed := got.UnprocessedKeys[f.table]
	if len(unprocessed.Keys) == 0 || len(unprocessed.Keys)+len(got.Responses[f.table]) != 10 {
		t.Fatalf("unprocessed %d, read %d: want some unprocessed, 10 in all", len(unprocessed.Keys), len(got.Responses[f.table]))
	}
	if !aws.ToBool(unprocessed.ConsistentRead) {
		t.Errorf("UnprocessedKeys lost the request's ConsistentRead")
	}
	if n := f.proxy.FaultsByAPI(); n[FaultKey(Partial, After, "sqs.SendMessageBatch")] != 1 || n[FaultKey(Partial, After, "dynamodb.BatchGetItem")] != 1 {
		t.Errorf("FaultsByAPI() = %v, want one partial answer each", n)
	}
}
