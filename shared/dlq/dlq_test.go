package dlq

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/awsclient"
	"github.com/crmsync/crmsync/tools/moto"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

func fifo(t *testing.T, c *sqs.Client, name string) string {
	t.Helper()
	out, err := c.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(name + ".fifo"),
		Attributes: map[string]string{"FifoQueue": "true", "VisibilityTimeout": "30"}})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.QueueUrl)
}

func TestListAndRedrive(t *testing.T) {
	ctx := context.Background()
	cfg, err := awsclient.Load(ctx, moto.ForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	c := sqs.NewFromConfig(cfg)
	suffix := fmt.Sprint(time.Now().UnixNano() % 1e9)
	dlqURL, target := fifo(t, c, "dlq"+suffix), fifo(t, c, "ingest"+suffix)
	for i, g := range []string{"g1", "g1", "g2"} {
		body := fmt.Sprintf(`{"key":"k%d","source":"meta-leads"}`, i)
		if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(dlqURL), MessageBody: aws.String(body),
			MessageGroupId: aws.String(g), MessageDeduplicationId: aws.String(fmt.Sprint("d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	// The same bodies were just sent to the target with the original ids: a redrive that kept
	// them would be deduplicated away by SQS.
	for i, g := range []string{"g1", "g1", "g2"} {
		if _, err := c.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(target), MessageBody: aws.String("x"),
			MessageGroupId: aws.String(g), MessageDeduplicationId: aws.String(fmt.Sprint("d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	drainAll(t, c, target)

	listed, err := List(ctx, c, dlqURL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed.Messages) != 3 || listed.Moved != 0 || listed.Messages[0].Key != "k0" || listed.Messages[0].GroupID != "g1" ||
		listed.Messages[0].Source != "meta-leads" || listed.Messages[0].SentAt.IsZero() {
		t.Fatalf("listed = %+v", listed)
	}
	// Listing released the messages: a redrive sees them all.
	one, err := Redrive(ctx, c, dlqURL, target, Options{Max: 1})
	if err != nil || one.Moved != 1 || one.Messages[0].Key != "k0" {
		t.Fatalf("redrive max 1: %+v, %v", one, err)
	}
	rest, err := Redrive(ctx, c, dlqURL, target, Options{})
	if err != nil || rest.Moved != 2 {
		t.Fatalf("redrive rest: %+v, %v", rest, err)
	}
	got := drainAll(t, c, target)
	if len(got) != 3 {
		t.Fatalf("target received %d messages, want 3: %+v", len(got), got)
	}
	if got[0].Attributes[string(types.MessageSystemAttributeNameMessageGroupId)] != "g1" {
		t.Errorf("group not kept: %v", got[0].Attributes)
	}
	if left, _ := List(ctx, c, dlqURL, Options{}); len(left.Messages) != 0 {
		t.Errorf("DLQ still holds %d messages", len(left.Messages))
	}
}

func drainAll(t *testing.T, c *sqs.Client, url string) []types.Message {
	t.Helper()
	var out []types.Message
	for empty := 0; empty < 2; {
		r, err := c.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Messages) == 0 {
			empty++
			continue
		}
		for _, m := range r.Messages {
			out = append(out, m)
			if _, err := c.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}
