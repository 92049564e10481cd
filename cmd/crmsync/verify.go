package main

// `crmsync verify <source> --last`: did the latest delivery to a connector verify, and if not,
// why. It reads what the webhook function already logs for every delivery: "webhook handled"
// (status, outcome) and, for a refused one, "authentication failed" (the check that failed, the
// public URL verified against, when it arrived; never a signature or a secret). In AWS those are
// the function's CloudWatch Logs; locally the dev stack keeps each function's latest records at
// GET /_local/logs.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/spf13/cobra"
)

// Log messages of the webhook function (shared/ingest) that verify reads.
const (
	msgHandled    = "webhook handled"
	msgAuthFailed = "authentication failed"
)

// logRecord is one structured log line of a webhook function (Lambda's JSON shape).
type logRecord struct {
	Timestamp  string `json:"timestamp"`
	Message    string `json:"message"`
	RequestID  string `json:"requestId"`
	Status     int    `json:"status"`
	Outcome    string `json:"outcome"`
	Reason     string `json:"reason"`
	PublicURL  string `json:"public_url"`
	ReceivedAt string `json:"received_at"`
}

// verifyReport is the --json document of `verify`.
type verifyReport struct {
	Schema    string `json:"schema"`
	Source    string `json:"source"`
	Function  string `json:"function"`
	Found     bool   `json:"found"`              // a delivery was recorded
	Verified  *bool  `json:"verified,omitempty"` // null when the delivery never reached verification
	At        string `json:"at,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Status    int    `json:"status,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
	// For a refused delivery: the check that failed, the URL it was verified against, when.
	Reason     string `json:"reason,omitempty"`
	PublicURL  string `json:"public_url,omitempty"`
	ReceivedAt string `json:"received_at,omitempty"`
	Scheme     string `json:"signature_scheme"`
	Hint       string `json:"hint,omitempty"`
}

const verifySchema = "crmsync.verify/v1"

// errNotVerified makes `verify` exit non-zero once it has reported a refused delivery.
var errNotVerified = errors.New("the latest delivery did not verify")

func newVerifyCmd() *cobra.Command {
	var last, asJSON bool
	var since string
	cmd := &cobra.Command{
		Use:   "verify <source> --last",
		Short: "Did the latest delivery to a connector verify? If not: which check failed, the URL tried, when, the signature scheme",
		Long: `Verify reads the connector's webhook function logs (CloudWatch Logs in AWS; the local stack's
GET /_local/logs) for the latest delivery and says whether it verified. For a refused one it
shows the check that failed, the public URL the signature was verified against, when it arrived
and the connector's signature scheme, with a hint. It exits 1 when the latest delivery was
refused. Signatures and secrets are never logged, so never shown.`,
		Example: "  crmsync verify twilio --last\n  crmsync verify calendly --last --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			source := args[0]
			g, err := guideFor(source)
			if err != nil {
				return err
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			ref, err := resolveStack(cmd)
			if err != nil {
				return err
			}
			fnID := "Webhook" + strings.TrimSuffix(secretLogicalID(source), "Secret") + "Function"
			var recs []logRecord
			if ref.Local {
				recs, err = localLogs(cmd.Context(), ref, fnID)
			} else {
				recs, err = cloudLogs(cmd.Context(), ref, fnID, from)
			}
			if err != nil {
				return err
			}
			rep := lastDelivery(recs)
			rep.Schema, rep.Source, rep.Function, rep.Scheme = verifySchema, source, fnID, g.Scheme
			if rep.Verified != nil && !*rep.Verified {
				rep.Hint = verifyHint(source, rep.Reason)
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printVerify(cmd.OutOrStdout(), rep)
			}
			if rep.Verified != nil && !*rep.Verified {
				return errNotVerified
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&last, "last", true, "the latest delivery (the only mode today)")
	cmd.Flags().StringVar(&since, "since", "24h", "in AWS, look this far back in the logs (a duration ago or an RFC 3339 time)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {schema: "`+verifySchema+`", source, function, found, verified, at, request_id, status, outcome, reason, public_url, received_at, signature_scheme, hint}`)
	return cmd
}

// lastDelivery finds the latest "webhook handled" record and, when it was refused, the
// "authentication failed" record of the same request.
func lastDelivery(recs []logRecord) verifyReport {
	var rep verifyReport
	idx := -1
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Message == msgHandled {
			idx = i
			break
		}
	}
	if idx < 0 {
		return rep
	}
	h := recs[idx]
	rep.Found, rep.At, rep.RequestID, rep.Status, rep.Outcome = true, h.Timestamp, h.RequestID, h.Status, h.Outcome
	switch h.Outcome {
	case "unauthenticated", "replay":
		v := false
		rep.Verified = &v
		for i := idx - 1; i >= 0; i-- {
			r := recs[i]
			if r.Message == msgAuthFailed && (r.RequestID == h.RequestID || h.RequestID == "" || r.RequestID == "") {
				rep.Reason, rep.PublicURL, rep.ReceivedAt = r.Reason, r.PublicURL, r.ReceivedAt
				break
			}
		}
	case "bad_base64", "too_large", "secret_error", "method", "content_type", "handshake":
		// Answered before verification.
	default:
		v := true
		rep.Verified = &v
	}
	return rep
}

// verifyHint says what usually causes a refusal with this reason.
func verifyHint(source, reason string) string {
	r := strings.ToLower(reason)
	switch {
	case strings.Contains(r, "no ") && strings.Contains(r, "configured"):
		return "the secret lacks the field named above: install it with `crmsync secrets rotate " + source + " --from-file new.json`"
	case strings.Contains(r, "missing"):
		return "the delivery carried no signature: check the vendor's webhook is configured with a secret (see `crmsync connect " + source + "`)"
	case strings.Contains(r, "timestamp") || strings.Contains(r, "too old") || strings.Contains(r, "future"):
		return "the signed timestamp is outside tolerance: a clock skew, a delayed retry, or a replayed delivery"
	case strings.Contains(r, "replayed"):
		return "a token already used with another body: a replay (refused on purpose)"
	case strings.Contains(r, "match") || strings.Contains(r, "mismatch"):
		if source == "twilio" {
			return "the auth token differs from Twilio's, or the URL Twilio calls differs from the URL above (scheme, host, port, query): the signature covers it"
		}
		return "the signing secret differs from the vendor's: compare them, or rotate with `crmsync secrets rotate " + source + "`"
	case strings.Contains(r, "malformed"):
		return "the signature header is not in the vendor's format: is the right connector's URL configured?"
	}
	return ""
}

func printVerify(w io.Writer, rep verifyReport) {
	if !rep.Found {
		fmt.Fprintf(w, "%s: no delivery recorded (function %s)\n", rep.Source, rep.Function)
		fmt.Fprintf(w, "  signature scheme: %s\n", rep.Scheme)
		return
	}
	switch {
	case rep.Verified == nil:
		fmt.Fprintf(w, "%s: the latest delivery (%s) was answered %d before verification: %s\n", rep.Source, rep.At, rep.Status, rep.Outcome)
	case *rep.Verified:
		fmt.Fprintf(w, "%s: the latest delivery (%s) verified: %d %s\n", rep.Source, rep.At, rep.Status, rep.Outcome)
	default:
		fmt.Fprintf(w, "%s: the latest delivery (%s) FAILED verification: %d %s\n", rep.Source, rep.At, rep.Status, rep.Outcome)
		fmt.Fprintf(w, "  check failed:      %s\n", rep.Reason)
		fmt.Fprintf(w, "  URL verified:      %s\n", rep.PublicURL)
		fmt.Fprintf(w, "  received at:       %s\n", rep.ReceivedAt)
	}
	if rep.RequestID != "" {
		fmt.Fprintf(w, "  request id:        %s\n", rep.RequestID)
	}
	fmt.Fprintf(w, "  signature scheme:  %s\n", rep.Scheme)
	if rep.Hint != "" {
		fmt.Fprintf(w, "  hint:              %s\n", rep.Hint)
	}
}

// localLogs reads the local stack's records of a function (GET /_local/logs), oldest first.
func localLogs(ctx context.Context, ref *stackRef, fnID string) ([]logRecord, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref.APIBase+"/_local/logs?function="+url.QueryEscape(fnID), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("local logs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("local logs: GET /_local/logs: %s (is the local stack older than this tool?)", resp.Status)
	}
	var v struct {
		Records []logRecord `json:"records"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, fmt.Errorf("local logs: %w", err)
	}
	return v.Records, nil
}

// cloudLogs reads the function's "webhook handled" and "authentication failed" records from
// CloudWatch Logs, oldest first, looking back in growing windows (15 minutes, 1 h, 6 h, then to
// from) and stopping at the first window with a delivery.
func cloudLogs(ctx context.Context, ref *stackRef, fnID string, from time.Time) ([]logRecord, error) {
	group := ref.Resources[fnID+"LogGroup"].Ref
	if group == "" {
		name, err := ref.Function(fnID)
		if err != nil {
			return nil, err
		}
		group = "/aws/lambda/" + name
	}
	client := cloudwatchlogs.NewFromConfig(ref.AWS)
	now := time.Now()
	pattern := fmt.Sprintf(`{ $.message = %q || $.message = %q }`, msgHandled, msgAuthFailed)
	for _, back := range []time.Duration{15 * time.Minute, time.Hour, 6 * time.Hour, now.Sub(from)} {
		start := now.Add(-back)
		if start.Before(from) {
			start = from
		}
		var recs []logRecord
		p := cloudwatchlogs.NewFilterLogEventsPaginator(client, &cloudwatchlogs.FilterLogEventsInput{LogGroupName: aws.String(group),
			StartTime: aws.Int64(start.UnixMilli()), EndTime: aws.Int64(now.UnixMilli()), FilterPattern: aws.String(pattern)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("read logs of %s: %w", group, err)
			}
			for _, e := range page.Events {
				var r logRecord
				if json.Unmarshal([]byte(aws.ToString(e.Message)), &r) == nil {
					recs = append(recs, r)
				}
			}
		}
		if lastDelivery(recs).Found || !start.After(from) {
			return recs, nil
		}
	}
	return nil, nil
}
