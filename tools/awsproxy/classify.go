package awsproxy

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Classify names a request "<service>.<API>" (see the package documentation); requests it
// cannot place are "<service or unknown>.<METHOD>".
func Classify(r *http.Request, body []byte) string {
	if strings.HasPrefix(r.URL.Path, "/moto-api") {
		return "moto." + strings.Trim(strings.TrimPrefix(r.URL.Path, "/moto-api"), "/")
	}
	svc := scopeService(r.Header.Get("Authorization"))
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		prefix, op, ok := strings.Cut(t, ".")
		if ok {
			if svc == "" {
				svc = targetService(prefix)
			}
			return svc + "." + op
		}
	}
	if svc == "" {
		svc = "unknown"
	}
	if svc == "s3" {
		return "s3." + s3API(r)
	}
	if a := r.URL.Query().Get("Action"); a != "" {
		return svc + "." + a
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if q, err := url.ParseQuery(string(body)); err == nil && q.Get("Action") != "" {
			return svc + "." + q.Get("Action")
		}
	}
	return svc + "." + r.Method
}

// scopeService reads the service from a SigV4 Authorization header's credential scope
// (Credential=<key>/<date>/<region>/<service>/aws4_request).
func scopeService(auth string) string {
	_, rest, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return ""
	}
	cred, _, _ := strings.Cut(rest, ",")
	parts := strings.Split(strings.TrimSpace(cred), "/")
	if len(parts) < 5 {
		return ""
	}
	return strings.ToLower(parts[len(parts)-2])
}

// targetService turns an X-Amz-Target prefix into a service name: DynamoDB_20120810 is dynamodb,
// AmazonSQS is sqs.
func targetService(prefix string) string {
	p := prefix
	if i := strings.IndexByte(p, '_'); i > 0 {
		p = p[:i]
	}
	for _, s := range []string{"Amazon", "AWS"} {
		if strings.HasPrefix(p, s) && len(p) > len(s) {
			p = p[len(s):]
		}
	}
	return strings.ToLower(p)
}

// s3API names a path-style S3 request from its method, path and sub-resource.
func s3API(r *http.Request) string {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)
	bucket := parts[0] != ""
	object := len(parts) == 2 && parts[1] != ""
	q := r.URL.Query()
	if !bucket {
		if r.Method == http.MethodGet {
			return "ListBuckets"
		}
		return r.Method
	}
	if !object {
		switch {
		case r.Method == http.MethodGet && q.Get("list-type") == "2":
			return "ListObjectsV2"
		case r.Method == http.MethodPost && q.Has("delete"):
			return "DeleteObjects"
		case len(q) > 0 && r.Method != http.MethodGet:
			return r.Method + "Bucket?" + firstKey(q)
		case len(q) > 0:
			return "GetBucket?" + firstKey(q)
		}
		switch r.Method {
		case http.MethodGet:
			return "ListObjects"
		case http.MethodPut:
			return "CreateBucket"
		case http.MethodHead:
			return "HeadBucket"
		case http.MethodDelete:
			return "DeleteBucket"
		}
		return r.Method + "Bucket"
	}
	switch r.Method {
	case http.MethodPut:
		if r.Header.Get("X-Amz-Copy-Source") != "" {
			return "CopyObject"
		}
		return "PutObject"
	case http.MethodGet:
		return "GetObject"
	case http.MethodHead:
		return "HeadObject"
	case http.MethodDelete:
		return "DeleteObject"
	}
	return r.Method + "Object"
}

func firstKey(q url.Values) string {
	best := ""
	for k := range q {
		if best == "" || k < best {
			best = k
		}
	}
	return best
}

// protocol is how a service encodes its errors.
type protocol int

const (
	protoJSON  protocol = iota // awsJson1.0/1.1 (X-Amz-Target)
	protoQuery                 // awsQuery (Action=...)
	protoS3                    // restXml
)

func protocolOf(api string) protocol {
	switch {
	case strings.HasPrefix(api, "s3."):
		return protoS3
	case strings.HasPrefix(api, "sns."), strings.HasPrefix(api, "sts."), strings.HasPrefix(api, "cloudformation."):
		return protoQuery
	}
	return protoJSON
}

// faultResponse returns the status, headers and body of a fault for a request named api; u in
// [0, 1) picks between equivalent answers (DynamoDB's two throttles, the conflicting item).
func faultResponse(api string, kind Kind, body []byte, u float64) (int, map[string]string, []byte) {
	svc, _, _ := strings.Cut(api, ".")
	reqID := fmt.Sprintf("FAULT%016X", uint64(u*(1<<53)))
	switch protocolOf(api) {
	case protoS3:
		code, msg, status := "InternalError", "We encountered an internal error. Please try again.", http.StatusInternalServerError
		if kind == Throttle {
			code, msg, status = "SlowDown", "Please reduce your request rate.", http.StatusServiceUnavailable
		}
		b := `<?xml version="1.0" encoding="UTF-8"?>` + "\n<Error><Code>" + code + "</Code><Message>" + msg +
			"</Message><RequestId>" + reqID + "</RequestId></Error>"
		return status, map[string]string{"Content-Type": "application/xml", "x-amz-request-id": reqID}, []byte(b)
	case protoQuery:
		code, typ, status := "InternalFailure", "Receiver", http.StatusInternalServerError
		if kind == Throttle {
			code, typ, status = "Throttling", "Sender", http.StatusBadRequest
		}
		b := "<ErrorResponse><Error><Type>" + typ + "</Type><Code>" + code + "</Code><Message>injected by awsproxy</Message></Error><RequestId>" +
			reqID + "</RequestId></ErrorResponse>"
		return status, map[string]string{"Content-Type": "text/xml", "x-amzn-RequestId": reqID}, []byte(b)
	}
	h := map[string]string{"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": reqID}
	var status int
	var doc map[string]any
	switch {
	case svc == "dynamodb" && kind == Conflict:
		status = http.StatusBadRequest
		n := transactItems(body)
		reasons := make([]map[string]string, n)
		at := int(u * float64(n))
		codes := make([]string, n)
		for i := range reasons {
			reasons[i] = map[string]string{"Code": "None"}
			codes[i] = "None"
		}
		reasons[at] = map[string]string{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
		codes[at] = "TransactionConflict"
		doc = map[string]any{"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
			"Message":             "Transaction cancelled, please refer cancellation reasons for specific reasons [" + strings.Join(codes, ", ") + "]",
			"CancellationReasons": reasons}
	case svc == "dynamodb" && kind == Throttle:
		status = http.StatusBadRequest
		if u < 0.5 {
			doc = map[string]any{"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
				"message": "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}
		} else {
			doc = map[string]any{"__type": "com.amazon.coral.availability#ThrottlingException",
				"message": "Rate of requests exceeds the allowed throughput."}
		}
	case svc == "dynamodb":
		status = http.StatusInternalServerError
		doc = map[string]any{"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "Internal server error"}
	case svc == "sqs" && kind == Throttle:
		// SQS speaks JSON but is awsQuery-compatible: the SDK reads the legacy code from
		// X-Amzn-Query-Error. RequestThrottled is modeled with HTTP 403.
		status = http.StatusForbidden
		h["x-amzn-query-error"] = "RequestThrottled;Sender"
		doc = map[string]any{"__type": "com.amazonaws.sqs#RequestThrottled", "message": "Request is throttled."}
	case svc == "sqs":
		status = http.StatusInternalServerError
		h["x-amzn-query-error"] = "InternalError;Receiver"
		doc = map[string]any{"__type": "com.amazonaws.sqs#InternalError", "message": "We encountered an internal error. Please try again."}
	case kind == Throttle:
		status = http.StatusBadRequest
		doc = map[string]any{"__type": "ThrottlingException", "message": "Rate exceeded"}
	default:
		status = http.StatusInternalServerError
		doc = map[string]any{"__type": "InternalServiceError", "message": "An error occurred on the server side."}
	}
	b, _ := json.Marshal(doc)
	h["Content-Length"] = strconv.Itoa(len(b))
	if svc == "dynamodb" {
		// DynamoDB signs every answer with a CRC32 the SDK checks.
		h["X-Amz-Crc32"] = strconv.FormatUint(uint64(crc32.ChecksumIEEE(b)), 10)
	}
	return status, h, b
}

// transactItems counts a TransactWriteItems request's items (at least 1).
func transactItems(body []byte) int {
	var req struct {
		TransactItems []json.RawMessage
	}
	if json.Unmarshal(body, &req) != nil || len(req.TransactItems) == 0 {
		return 1
	}
	return len(req.TransactItems)
}
