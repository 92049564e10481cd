package ingest

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

func entriesOf(sizes ...int) []sqstypes.SendMessageBatchRequestEntry {
	var out []sqstypes.SendMessageBatchRequestEntry
	for i, n := range sizes {
		out = append(out, sqstypes.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: aws.String(strings.Repeat("x", n))})
	}
	return out
}

func repeat(n, size int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = size
	}
	return out
}

// Batches splits by count and by bytes as SQS counts them, keeping order: a batch never exceeds
// ten entries or 256 KiB, however the event sizes fall.
func TestBatches(t *testing.T) {
	const kib = 1024
	for _, c := range []struct {
		name  string
		sizes []int
		want  []int // entries per batch
	}{
		{"none", nil, nil},
		{"25 small", repeat(25, 200), []int{10, 10, 5}},
		{"100 KiB each", repeat(5, 100*kib), []int{2, 2, 1}},
		{"exactly the limit", []int{128 * kib, 128 * kib, 1}, []int{2, 1}},
		{"one full message", []int{MaxMessageBytes, 10, MaxMessageBytes}, []int{1, 1, 1}},
		{"mixed", []int{250 * kib, 5 * kib, 2 * kib, 200 * kib, 60 * kib}, []int{2, 2, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Batches(entriesOf(c.sizes...))
			var counts []int
			next := 0
			for _, b := range got {
				counts = append(counts, len(b))
				total := 0
				for _, e := range b {
					if aws.ToString(e.Id) != strconv.Itoa(next) {
						t.Errorf("entry %s out of order, want %d", aws.ToString(e.Id), next)
					}
					next++
					total += len(aws.ToString(e.MessageBody))
				}
				if len(b) > 10 || total > MaxMessageBytes {
					t.Errorf("batch of %d entries, %d bytes: over the SQS limits", len(b), total)
				}
			}
			if !slices.Equal(counts, c.want) {
				t.Errorf("batches = %v, want %v", counts, c.want)
			}
		})
	}
}
