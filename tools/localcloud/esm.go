package localcloud

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// SQSAPI is the part of the SQS client the event source mapping uses.
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
}

// EventSourceMapping emulates Lambda's SQS event source mapping for one function: it long-polls
// the queue, invokes the function with batches of up to BatchSize records, deletes the messages
// that succeeded, and leaves the rest (reported batchItemFailures, or the whole batch when the
// invocation fails) to reappear after the queue's visibility timeout; the queue's redrive policy
// (applied by the SQS endpoint) moves a message to the DLQ after maxReceiveCount receives.
type EventSourceMapping struct {
	SQS        SQSAPI
	Invoker    Invoker
	Function   string
	QueueURL   string
	QueueARN   string
	Region     string
	BatchSize  int
	ReportFail bool // FunctionResponseTypes includes ReportBatchItemFailures
	// WaitSeconds is the long-poll wait (Lambda uses 20; locally shorter so shutdown is quick).
	WaitSeconds int32
	Log         *slog.Logger
}

// Run polls until ctx ends.
func (m *EventSourceMapping) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if _, err := m.PollOnce(ctx); err != nil && ctx.Err() == nil {
			m.Log.Warn("event source mapping poll failed", "function", m.Function, "error", err.Error())
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// PollResult says what one poll did.
type PollResult struct {
	Received int
	Deleted  int
	Failed   int
}

// PollOnce receives one batch, invokes the function and settles the batch.
func (m *EventSourceMapping) PollOnce(ctx context.Context) (PollResult, error) {
	var res PollResult
	size := m.BatchSize
	if size <= 0 || size > 10 {
		size = 10
	}
	out, err := m.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(m.QueueURL),
		MaxNumberOfMessages:         int32(size),
		WaitTimeSeconds:             m.WaitSeconds,
		MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
		MessageAttributeNames:       []string{"All"},
	})
	if err != nil {
		return res, fmt.Errorf("receive %s: %w", m.QueueURL, err)
	}
	if len(out.Messages) == 0 {
		return res, nil
	}
	res.Received = len(out.Messages)
	ev := events.SQSEvent{Records: make([]events.SQSMessage, 0, len(out.Messages))}
	handles := map[string]string{}
	for _, msg := range out.Messages {
		id := aws.ToString(msg.MessageId)
		handles[id] = aws.ToString(msg.ReceiptHandle)
		body := aws.ToString(msg.Body)
		sum := md5.Sum([]byte(body))
		rec := events.SQSMessage{
			MessageId: id, ReceiptHandle: aws.ToString(msg.ReceiptHandle), Body: body,
			Md5OfBody: hex.EncodeToString(sum[:]), Attributes: map[string]string{},
			MessageAttributes: map[string]events.SQSMessageAttribute{},
			EventSource:       "aws:sqs", EventSourceARN: m.QueueARN, AWSRegion: m.Region,
		}
		for k, v := range msg.Attributes {
			rec.Attributes[k] = v
		}
		for k, v := range msg.MessageAttributes {
			rec.MessageAttributes[k] = events.SQSMessageAttribute{StringValue: v.StringValue, BinaryValue: v.BinaryValue,
				DataType: aws.ToString(v.DataType)}
		}
		ev.Records = append(ev.Records, rec)
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return res, err
	}
	resp, invErr := m.Invoker.Invoke(ctx, m.Function, payload)
	if invErr != nil {
		// The whole batch returns to the queue after its visibility timeout.
		res.Failed = res.Received
		return res, nil
	}
	failed := map[string]bool{}
	if m.ReportFail && len(resp) > 0 {
		var r events.SQSEventResponse
		if err := json.Unmarshal(resp, &r); err == nil {
			for _, f := range r.BatchItemFailures {
				failed[f.ItemIdentifier] = true
			}
			// Lambda treats an identifier it did not send as a failure of the whole batch.
			for id := range failed {
				if _, ok := handles[id]; !ok {
					res.Failed = res.Received
					return res, nil
				}
			}
		}
	}
	var entries []sqstypes.DeleteMessageBatchRequestEntry
	for i, rec := range ev.Records {
		if failed[rec.MessageId] {
			res.Failed++
			continue
		}
		entries = append(entries, sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: aws.String(handles[rec.MessageId])})
	}
	if len(entries) > 0 {
		d, err := m.SQS.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(m.QueueURL), Entries: entries})
		if err != nil {
			return res, fmt.Errorf("delete batch: %w", err)
		}
		if len(d.Failed) > 0 {
			var msgs []string
			for _, f := range d.Failed {
				msgs = append(msgs, aws.ToString(f.Message))
			}
			return res, errors.New("delete batch: " + strings.Join(msgs, "; "))
		}
		res.Deleted = len(entries)
	}
	return res, nil
}
