package reconcile

import (
	"context"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/crmsync/crmsync/shared/reconcile/check"
	"github.com/crmsync/crmsync/shared/store"
)

// QuarantinePrefix is where the webhook functions keep quarantined payloads.
const QuarantinePrefix = "quarantine/"

// stuck adds the stuck-work counts every job reports: DLQ depth, quarantined payloads and the
// ingest backlog (messages waiting or in flight).
func (r *Runner) stuck(ctx context.Context, x *run) error {
	dlq, err := r.queueDepth(ctx, r.cfg.DLQURL)
	if err != nil {
		return err
	}
	x.rep.Counts["dlq_messages"] = dlq
	backlog, err := r.queueDepth(ctx, r.cfg.QueueURL)
	if err != nil {
		return err
	}
	x.rep.Counts["ingest_backlog"] = backlog
	q, err := r.quarantined(ctx)
	if err != nil {
		return err
	}
	x.rep.Counts["quarantined_payloads"] = q
	return nil
}

// queueDepth is a queue's visible plus in-flight messages (0 when no queue is configured).
func (r *Runner) queueDepth(ctx context.Context, url string) (int, error) {
	if url == "" {
		return 0, nil
	}
	out, err := r.d.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible}})
	if err != nil {
		return 0, fmt.Errorf("queue depth: %w", err)
	}
	a, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
	b, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return a + b, nil
}

// quarantined counts the payloads waiting in quarantine.
func (r *Runner) quarantined(ctx context.Context) (int, error) {
	if r.cfg.Bucket == "" {
		return 0, nil
	}
	n := 0
	p := s3.NewListObjectsV2Paginator(r.d.S3, &s3.ListObjectsV2Input{Bucket: aws.String(r.cfg.Bucket), Prefix: aws.String(QuarantinePrefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("count quarantine: %w", err)
		}
		n += len(page.Contents)
	}
	return n, nil
}

// unfinished adds the ledger items of the window that were seen but never finished: rejected
// events (a permanent failure: nothing was applied) and events flagged because a delivery with
// the same key carried another payload (that delivery was not applied). It reads the ledger's
// BySource index for every policy source.
func (r *Runner) unfinished(ctx context.Context, x *run) error {
	unfinished := expression.Name("outcome").Equal(expression.Value(store.Rejected)).Or(expression.Name("flagged").Equal(expression.Value(true)))
	return r.ledgerWindow(ctx, x.rep.Since, x.rep.Until, &unfinished, nil, func(it store.LedgerItem) error {
		if it.Outcome == store.Rejected {
			x.rep.Counts["rejected_events"]++
			x.add(check.Finding{Kind: check.KindRejectedEvent, Entity: "event", ID: it.Key, Source: it.Source, Detail: it.Reason,
				Repair: "crmsync events get " + it.Key + "; after a fix: crmsync replay " + it.Key + " --reason '...'"})
		}
		if it.Flagged {
			x.rep.Counts["flagged_events"]++
			x.add(check.Finding{Kind: check.KindFlaggedEvent, Entity: "event", ID: it.Key, Source: it.Source,
				Stored: it.PayloadHash, Expected: it.ConflictingHash,
				Detail: fmt.Sprintf("%d deliveries with this key carried another payload and were not applied", it.Conflicts),
				Repair: "crmsync events get " + it.Key + " (compare the payloads with the vendor)"})
		}
		return nil
	})
}
