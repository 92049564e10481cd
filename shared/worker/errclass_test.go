package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/crmsync/crmsync/shared/store"
)

// opErr wraps err as the SDK returns it from an operation.
func opErr(op string, err error) error {
	return &smithy.OperationError{ServiceID: "DynamoDB", OperationName: op, Err: err}
}

// canceledBy is a TransactionCanceledException with one reason per transaction item ("None" for
// an item that did not fail).
func canceledBy(codes ...string) error {
	reasons := make([]types.CancellationReason, len(codes))
	for i, code := range codes {
		reasons[i] = types.CancellationReason{Code: aws.String(code)}
		if code == "ValidationException" {
			reasons[i].Message = aws.String("Item size has exceeded the maximum allowed size")
		}
	}
	return opErr("TransactWriteItems", &types.TransactionCanceledException{
		Message: aws.String("Transaction cancelled"), CancellationReasons: reasons})
}

// Before the fix: the package did not compile (no classify); cancellation() called ThrottlingError
// and ValidationException reasons "not a conflict" alike, so both went back to SQS.
func TestErrorClassTable(t *testing.T) {
	status503 := &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 503}}, Err: errors.New("service unavailable")}}
	for _, row := range []struct {
		name   string
		err    error
		class  errClass
		code   string
		item   int
		ledger bool
	}{
		// Plain (non-transactional) errors, as the SDK's typed errors and smithy API errors.
		{"ConditionalCheckFailedException", opErr("PutItem", &types.ConditionalCheckFailedException{}), classRedecide, "ConditionalCheckFailedException", -1, false},
		// A no-op's ledger PutItem refused by its condition: as a transaction whose ledger item failed.
		{"no-op ledger put taken", fmt.Errorf("put ledger item: %w (%w)", errLedgerTaken, opErr("PutItem", &types.ConditionalCheckFailedException{})),
			classRedecide, "ConditionalCheckFailed", 0, true},
		{"TransactionConflictException", opErr("PutItem", &types.TransactionConflictException{}), classRedecide, "TransactionConflictException", -1, false},
		{"ThrottlingException", opErr("GetItem", &types.ThrottlingException{}), classBackoff, "ThrottlingException", -1, false},
		{"ProvisionedThroughputExceededException", opErr("Query", &types.ProvisionedThroughputExceededException{}), classBackoff, "ProvisionedThroughputExceededException", -1, false},
		{"RequestLimitExceeded", opErr("PutItem", &types.RequestLimitExceeded{}), classBackoff, "RequestLimitExceeded", -1, false},
		{"TransactionInProgressException", opErr("TransactWriteItems", &types.TransactionInProgressException{}), classBackoff, "TransactionInProgressException", -1, false},
		{"InternalServerError", opErr("GetItem", &types.InternalServerError{}), classBackoff, "InternalServerError", -1, false},
		{"ValidationException item size", opErr("TransactWriteItems", &smithy.GenericAPIError{Code: "ValidationException",
			Message: "Item size has exceeded the maximum allowed size"}), classPermanent, "ValidationException", -1, false},
		{"ValidationException transaction size", opErr("TransactWriteItems", &smithy.GenericAPIError{Code: "ValidationException",
			Message: "Transaction request cannot be larger than 4 MB"}), classPermanent, "ValidationException", -1, false},
		{"ItemCollectionSizeLimitExceededException", opErr("TransactWriteItems", &types.ItemCollectionSizeLimitExceededException{}), classPermanent, "ItemCollectionSizeLimitExceededException", -1, false},
		{"unknown server fault (5xx)", opErr("GetItem", &smithy.GenericAPIError{Code: "ServiceUnavailable", Fault: smithy.FaultServer}), classBackoff, "ServiceUnavailable", -1, false},
		{"unlisted server fault", opErr("GetItem", &smithy.GenericAPIError{Code: "SomethingBroke", Fault: smithy.FaultServer}), classBackoff, "SomethingBroke", -1, false},
		{"unlisted client error", opErr("GetItem", &smithy.GenericAPIError{Code: "AccessDeniedException", Fault: smithy.FaultClient}), classTransient, "AccessDeniedException", -1, false},
		{"HTTP 503 without a code", opErr("GetItem", status503), classBackoff, "HTTP503", -1, false},
		{"network error", opErr("GetItem", &smithyhttp.RequestSendError{Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}}), classBackoff, "NetworkError", -1, false},
		{"context deadline", opErr("GetItem", context.DeadlineExceeded), classTransient, "ContextDone", -1, false},
		{"unknown error", errors.New("injected crash after commit"), classTransient, "", -1, false},

		// TransactionCanceledException: decided by CancellationReasons[i].Code.
		{"reason ConditionalCheckFailed on the ledger", canceledBy("ConditionalCheckFailed", "None"), classRedecide, "ConditionalCheckFailed", 0, true},
		{"reason ConditionalCheckFailed on a record", canceledBy("None", "ConditionalCheckFailed"), classRedecide, "ConditionalCheckFailed", 1, false},
		{"reason TransactionConflict", canceledBy("None", "TransactionConflict"), classRedecide, "TransactionConflict", 1, false},
		{"reason ThrottlingError", canceledBy("None", "None", "ThrottlingError"), classBackoff, "ThrottlingError", 2, false},
		{"reason ProvisionedThroughputExceeded", canceledBy("None", "ProvisionedThroughputExceeded"), classBackoff, "ProvisionedThroughputExceeded", 1, false},
		{"reason RequestLimitExceeded", canceledBy("None", "RequestLimitExceeded"), classBackoff, "RequestLimitExceeded", 1, false},
		{"reason ValidationException (item size)", canceledBy("None", "None", "ValidationException"), classPermanent, "ValidationException", 2, false},
		{"reason ItemCollectionSizeLimitExceeded", canceledBy("None", "ItemCollectionSizeLimitExceeded"), classPermanent, "ItemCollectionSizeLimitExceeded", 1, false},
		{"permanent reason wins over a condition", canceledBy("ConditionalCheckFailed", "ValidationException"), classPermanent, "ValidationException", 1, false},
		{"condition wins over throttling", canceledBy("None", "ThrottlingError", "ConditionalCheckFailed"), classRedecide, "ConditionalCheckFailed", 2, false},
		{"unlisted reason", canceledBy("None", "SomethingNew"), classTransient, "SomethingNew", 1, false},
		{"no reasons", canceledBy(), classRedecide, "TransactionCanceledException", -1, false},
		{"wrapped once more", fmt.Errorf("transact write: %w", canceledBy("None", "ThrottlingError")), classBackoff, "ThrottlingError", 1, false},
	} {
		t.Run(row.name, func(t *testing.T) {
			got := classify(row.err)
			if got.Class != row.class || got.Code != row.code || got.Item != row.item || got.LedgerFailed != row.ledger {
				t.Errorf("classify(%v) = %s code %q item %d ledger %v, want %s code %q item %d ledger %v", row.err,
					got.Class, got.Code, got.Item, got.LedgerFailed, row.class, row.code, row.item, row.ledger)
			}
		})
	}
}

// The ledger reason of a permanent transaction error names the code, the item and DynamoDB's
// message, and the error still unwraps to the SDK's.
func TestPermanentReason(t *testing.T) {
	txErr := canceledBy("None", "None", "ValidationException")
	err := asPermanent("transact write", txErr)
	if !IsPermanent(err) {
		t.Fatalf("asPermanent(%v) is not permanent", txErr)
	}
	want := "permanent failure: transact write: ValidationException (transaction item 2): Item size has exceeded the maximum allowed size"
	if got := err.Error(); got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	var canceled *types.TransactionCanceledException
	if !errors.As(err, &canceled) {
		t.Error("the permanent error does not unwrap to the TransactionCanceledException")
	}
	if got := asPermanent("read ledger", opErr("GetItem", &types.ThrottlingException{})); IsPermanent(got) {
		t.Errorf("throttling marked permanent: %v", got)
	}
}

// throttleOnce cancels the first TransactWriteItems with a ThrottlingError reason on its second
// item (what DynamoDB returns when one item's partition is throttled), then passes calls through.
type throttleOnce struct {
	DynamoAPI
	done atomic.Bool
}

func (th *throttleOnce) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	if th.done.CompareAndSwap(false, true) {
		codes := make([]string, len(in.TransactItems))
		for i := range codes {
			codes[i] = "None"
		}
		codes[min(1, len(codes)-1)] = "ThrottlingError"
		return nil, canceledBy(codes...)
	}
	return th.DynamoAPI.TransactWriteItems(ctx, in, o...)
}

// A transaction canceled for throttling is retried in-process after a backoff and applied in the
// same invocation.
// Before the fix: "apply: transact write: operation error DynamoDB: TransactWriteItems, TransactionCanceledException: Transaction cancelled".
func TestThrottledTransactionRetriedInProcess(t *testing.T) {
	tb := provision(t)
	c := newClock(t0.Add(time.Hour))
	var waits atomic.Int32
	w := newWorker(t, tb, &throttleOnce{DynamoAPI: tb.ddb}, c, func(cfg *Config) {
		cfg.Sleep = func(context.Context, time.Duration) error { waits.Add(1); return nil }
	})
	res, err := w.Apply(context.Background(), lead("typeform:th1", "theo@acme.com", t0, map[string]string{"first_name": "Theo"}))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if res.Outcome != store.Applied || waits.Load() != 1 {
		t.Fatalf("result %+v after %d backoff waits, want APPLIED after one", res, waits.Load())
	}
	if v := getContact(t, w, ContactQuery{Email: "theo@acme.com"}); v.Contact.Version != 1 {
		t.Fatalf("contact = %+v", v.Contact)
	}
}
