package worker

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// errClass is what the worker does about a failed DynamoDB call. It is the one place that
// decides it: the apply loop, the client's in-process backoff (deps.go) and reject all ask
// classify.
type errClass int

const (
	// classTransient: not retried in-process; the message is returned to SQS (a batch item
	// failure) and retried on its next receive. The context ended, or an error the table does
	// not know (a lost response, a vendor failure during hydration).
	classTransient errClass = iota
	// classBackoff: retry the same request after a jittered backoff, bounded by
	// Config.MaxAttempts; once exhausted it is transient. Throttling, server faults (5xx) and
	// network errors.
	classBackoff
	// classRedecide: a condition failed because of a concurrent write: re-read the ledger and
	// the records and plan again (bounded by Config.MaxAttempts).
	classRedecide
	// classPermanent: retrying cannot help. The event is recorded REJECTED with the reason,
	// counted (Processed{Outcome=REJECTED}) and alarmed, and acknowledged — never sent to the
	// DLQ; `crmsync replay` re-runs it after a fix.
	classPermanent
)

// String names the class for logs and tests.
func (c errClass) String() string {
	switch c {
	case classRedecide:
		return "re-decide"
	case classPermanent:
		return "permanent"
	case classBackoff:
		return "back off"
	default:
		return "transient"
	}
}

// errClasses maps DynamoDB error codes (smithy.APIError.ErrorCode) and TransactionCanceledException
// cancellation reason codes (CancellationReasons[i].Code) to their class. An API error whose code
// is not listed is classBackoff when it is a server fault (5xx), else classTransient.
var errClasses = map[string]errClass{
	// A condition failed: another writer got there first.
	"ConditionalCheckFailed":          classRedecide, // cancellation reason
	"ConditionalCheckFailedException": classRedecide,
	"TransactionConflict":             classRedecide, // cancellation reason: another transaction holds an item
	"TransactionConflictException":    classRedecide,

	// Capacity and rate limits: the same request succeeds later.
	"ThrottlingError":                        classBackoff, // cancellation reason
	"ThrottlingException":                    classBackoff,
	"ProvisionedThroughputExceeded":          classBackoff, // cancellation reason
	"ProvisionedThroughputExceededException": classBackoff,
	"RequestLimitExceeded":                   classBackoff,
	"TransactionInProgressException":         classBackoff,
	"InternalServerError":                    classBackoff,
	"ServiceUnavailable":                     classBackoff,

	// The request itself cannot be written: an item over 400 KB, a transaction over 4 MB, a key
	// over its size limit, two operations on one item, a malformed expression.
	"ValidationException": classPermanent, // also a cancellation reason
	// An item collection (a partition with a local secondary index) is over 10 GB.
	"ItemCollectionSizeLimitExceeded":          classPermanent, // cancellation reason
	"ItemCollectionSizeLimitExceededException": classPermanent,
}

// verdict is the classification of one error.
type verdict struct {
	// Class is what to do.
	Class errClass
	// Code is the error code or cancellation reason that decided (empty for a non-API error).
	Code string
	// Item is the index of the transaction item whose cancellation reason decided; -1 when the
	// error is not a cancellation.
	Item int
	// Message is the decisive reason's message as DynamoDB gave it (no item values).
	Message string
	// LedgerFailed is set for a cancellation whose first item's condition failed: that is the
	// ledger Put, so the event was recorded meanwhile and the next ledger read settles it.
	LedgerFailed bool
}

// Reason describes the verdict for a ledger reason or a log line.
func (v verdict) Reason() string {
	where := ""
	if v.Item >= 0 {
		where = fmt.Sprintf(" (transaction item %d)", v.Item)
	}
	if v.Message == "" {
		return v.Code + where
	}
	return v.Code + where + ": " + v.Message
}

// classify returns what the worker does about err. A TransactionCanceledException is decided by
// its cancellation reasons: permanent if any reason is, else re-decide if any condition failed
// or conflicted, else transient for a reason the table does not know, else back off. An empty
// reason list is a conflict (re-decide).
func classify(err error) verdict {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return verdict{Class: classTransient, Code: "ContextDone", Item: -1}
	}
	var canceled *types.TransactionCanceledException
	if errors.As(err, &canceled) {
		return classifyCancellation(canceled)
	}
	if errors.Is(err, errLedgerTaken) {
		return verdict{Class: classRedecide, Code: "ConditionalCheckFailed", Item: 0, LedgerFailed: true}
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		v := verdict{Class: classTransient, Code: apiErr.ErrorCode(), Item: -1, Message: apiErr.ErrorMessage()}
		if class, ok := errClasses[v.Code]; ok {
			v.Class = class
		} else if apiErr.ErrorFault() == smithy.FaultServer || httpStatus(err) >= 500 {
			v.Class = classBackoff
		}
		return v
	}
	if status := httpStatus(err); status >= 500 {
		return verdict{Class: classBackoff, Code: fmt.Sprintf("HTTP%d", status), Item: -1}
	}
	var sendErr *smithyhttp.RequestSendError
	var netErr net.Error
	if errors.As(err, &sendErr) || errors.As(err, &netErr) {
		return verdict{Class: classBackoff, Code: "NetworkError", Item: -1}
	}
	return verdict{Class: classTransient, Item: -1}
}

// httpStatus is the HTTP status of an AWS response error, 0 when err has none.
func httpStatus(err error) int {
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		return respErr.HTTPStatusCode()
	}
	return 0
}

// classifyCancellation decides a canceled transaction by its reasons.
func classifyCancellation(canceled *types.TransactionCanceledException) verdict {
	var permanentReason, redecideReason, backoffReason, transientReason *verdict
	ledgerFailed := false
	for i, reason := range canceled.CancellationReasons {
		code := aws.ToString(reason.Code)
		if code == "" || code == "None" {
			continue
		}
		v := verdict{Class: classTransient, Code: code, Item: i, Message: aws.ToString(reason.Message)}
		if class, ok := errClasses[code]; ok {
			v.Class = class
		}
		ledgerFailed = ledgerFailed || (i == 0 && code == "ConditionalCheckFailed")
		switch {
		case v.Class == classPermanent && permanentReason == nil:
			permanentReason = &v
		case v.Class == classRedecide && redecideReason == nil:
			redecideReason = &v
		case v.Class == classBackoff && backoffReason == nil:
			backoffReason = &v
		case v.Class == classTransient && transientReason == nil:
			transientReason = &v
		}
	}
	switch {
	case permanentReason != nil:
		return *permanentReason
	case redecideReason != nil:
		redecideReason.LedgerFailed = ledgerFailed
		return *redecideReason
	case transientReason != nil:
		return *transientReason
	case backoffReason != nil:
		return *backoffReason
	}
	return verdict{Class: classRedecide, Code: "TransactionCanceledException", Item: -1, Message: aws.ToString(canceled.Message)}
}
