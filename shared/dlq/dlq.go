// Package dlq owns inspecting and redriving crmsync's ingest dead-letter queue: the messages the
// worker failed maxReceiveCount times (transient failures that never cleared). Redrive moves
// them back to the ingest queue with plain SQS calls (receive, send, delete) — SQS's own
// StartMessageMoveTask is not available everywhere (moto lacks it) — keeping each message's
// group so per-person order holds. `crmsync dlq list|redrive` and the local alarm rehearsal use
// it.
package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// SQSAPI is the part of the SQS client the package uses (*sqs.Client satisfies it).
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, optFns ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// Message is one dead-lettered message as the CLI shows it.
type Message struct {
	// MessageID is the DLQ's id of the message.
	MessageID string `json:"message_id"`
	// Key is the canonical event's key, read from the body ("" when unreadable).
	Key string `json:"key,omitempty"`
	// Source is the canonical event's source.
	Source string `json:"source,omitempty"`
	// GroupID is the FIFO MessageGroupId the message was sent with.
	GroupID string `json:"group_id,omitempty"`
	// DedupID is its MessageDeduplicationId.
	DedupID string `json:"dedup_id,omitempty"`
	// SentAt is when the message was first sent (to the ingest queue: SQS keeps the original
	// SentTimestamp when it dead-letters a message).
	SentAt time.Time `json:"sent_at"`
	// Receives is how often it was received (ApproximateReceiveCount).
	Receives int `json:"receives"`
}

// Options tune List and Redrive.
type Options struct {
	// Max bounds how many messages are handled; 0 = all.
	Max int
	// DryRun (Redrive) lists what would move and moves nothing.
	DryRun bool
	// WaitSeconds is the long-poll wait of each receive (0: 1 second). Redrive stops after two
	// receives in a row return nothing.
	WaitSeconds int32
	// Hold is how long received messages stay invisible while handled (default 60 s). List and
	// dry runs make them visible again when done.
	Hold time.Duration
}

// Result is what Redrive (or List) did.
type Result struct {
	// Messages are the messages handled, in the order received.
	Messages []Message `json:"messages"`
	// Moved counts the messages sent to the target and deleted from the DLQ.
	Moved int `json:"moved"`
	// DryRun is set when nothing was moved on purpose.
	DryRun bool `json:"dry_run,omitempty"`
}

// List returns the messages waiting in the DLQ without consuming them (each is received, then
// made visible again).
func List(ctx context.Context, client SQSAPI, dlqURL string, opts Options) (Result, error) {
	opts.DryRun = true
	return Redrive(ctx, client, dlqURL, "", opts)
}

// Redrive moves dead-lettered messages from dlqURL to targetURL (the ingest queue), oldest first
// as SQS hands them out: each is sent with its MessageGroupId (so a person's events stay in
// order) and its message attributes, then deleted from the DLQ. The deduplication id is derived
// from the original one and the DLQ message id: the original id may still be inside SQS's
// 5-minute deduplication window (a message that failed fast), where reusing it would make SQS
// accept and silently drop the redriven copy; the derived id is stable, so repeating an
// interrupted redrive within 5 minutes sends each message once. The worker's ledger
// deduplicates events whatever SQS does. A send failure stops the redrive with the message
// left in the DLQ.
func Redrive(ctx context.Context, client SQSAPI, dlqURL, targetURL string, opts Options) (Result, error) {
	res := Result{DryRun: opts.DryRun}
	if dlqURL == "" || (!opts.DryRun && targetURL == "") {
		return res, errors.New("dlq: the DLQ and the target queue URLs are required")
	}
	wait := opts.WaitSeconds
	if wait <= 0 {
		wait = 1
	}
	hold := opts.Hold
	if hold <= 0 {
		hold = 60 * time.Second
	}
	var held []string // receipt handles to release (list, dry run)
	defer func() {
		for _, h := range held {
			_, _ = client.ChangeMessageVisibility(context.WithoutCancel(ctx), &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(dlqURL),
				ReceiptHandle: aws.String(h), VisibilityTimeout: 0})
		}
	}()
	seen := map[string]bool{}
	for empty := 0; empty < 2 && (opts.Max <= 0 || len(res.Messages) < opts.Max); {
		n := int32(10)
		if opts.Max > 0 {
			n = int32(min(10, opts.Max-len(res.Messages)))
		}
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(dlqURL), MaxNumberOfMessages: n,
			WaitTimeSeconds: wait, VisibilityTimeout: int32(hold / time.Second),
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
			MessageAttributeNames:       []string{"All"}})
		if err != nil {
			return res, fmt.Errorf("dlq: receive: %w", err)
		}
		if len(out.Messages) == 0 {
			empty++
			continue
		}
		empty = 0
		for _, m := range out.Messages {
			id := aws.ToString(m.MessageId)
			if seen[id] {
				held = append(held, aws.ToString(m.ReceiptHandle))
				continue
			}
			seen[id] = true
			msg := describe(m)
			if opts.DryRun {
				held = append(held, aws.ToString(m.ReceiptHandle))
				res.Messages = append(res.Messages, msg)
				continue
			}
			in := &sqs.SendMessageInput{QueueUrl: aws.String(targetURL), MessageBody: m.Body, MessageAttributes: m.MessageAttributes}
			if msg.GroupID != "" {
				in.MessageGroupId = aws.String(msg.GroupID)
				in.MessageDeduplicationId = aws.String(RedriveDedupID(msg.DedupID, id))
			}
			if _, err := client.SendMessage(ctx, in); err != nil {
				held = append(held, aws.ToString(m.ReceiptHandle))
				return res, fmt.Errorf("dlq: send %s to the target: %w", id, err)
			}
			if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(dlqURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
				return res, fmt.Errorf("dlq: delete %s after sending it: %w (it may be redriven twice; the ledger deduplicates)", id, err)
			}
			res.Messages = append(res.Messages, msg)
			res.Moved++
		}
	}
	return res, nil
}

// RedriveDedupID is the deduplication id a redriven message is sent with: the hex sha256 of
// its original deduplication id and its DLQ message id.
func RedriveDedupID(original, dlqMessageID string) string {
	sum := sha256.Sum256([]byte("redrive\x00" + original + "\x00" + dlqMessageID))
	return hex.EncodeToString(sum[:])
}

func describe(m types.Message) Message {
	msg := Message{MessageID: aws.ToString(m.MessageId), GroupID: m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)],
		DedupID: m.Attributes[string(types.MessageSystemAttributeNameMessageDeduplicationId)]}
	if ms, err := strconv.ParseInt(m.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
		msg.SentAt = time.UnixMilli(ms).UTC()
	}
	msg.Receives, _ = strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	var ev struct {
		Key    string `json:"key"`
		Source string `json:"source"`
	}
	if json.Unmarshal([]byte(aws.ToString(m.Body)), &ev) == nil {
		msg.Key, msg.Source = ev.Key, ev.Source
	}
	return msg
}
