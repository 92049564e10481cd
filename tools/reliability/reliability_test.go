package reliability

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/crmsync/crmsync/tools/awsproxy"
	"github.com/crmsync/crmsync/tools/moto"
)

func TestMain(m *testing.M) {
	code := m.Run()
	moto.Cleanup()
	os.Exit(code)
}

// The shortened reliability run of `make test`: about 1,000 events from every connector with
// every fault kind — AWS throttles, 500s, timeouts and transaction conflicts before and after the
// request reaches the endpoint, worker crashes after commit, SQS refusing the webhooks' sends —
// must lose nothing, apply nothing twice and end exactly where the oracle says.
func TestReliabilityShort(t *testing.T) {
	var log strings.Builder
	out := io.Writer(&log)
	if testing.Verbose() {
		out = io.MultiWriter(&log, os.Stdout)
	}
	o := ShortOptions("../..", 8)
	o.Log = out
	v, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	for _, k := range awsproxy.Kinds {
		if v.Faults[string(k)+"/before"] == 0 || v.Faults[string(k)+"/after"] == 0 {
			t.Errorf("no %s fault injected before and after forwarding (%v): the run proves nothing about it", k, v.Faults)
		}
	}
	if v.Faults["crash/after-commit"] == 0 {
		t.Errorf("no worker crash injected (%v)", v.Faults)
	}
	if refusals := v.Faults["server-error/before"]; refusals == 0 || v.VendorRetries == 0 {
		t.Errorf("SQS refusals %d, vendor retries %d: want the webhooks' 5xx path taken", refusals, v.VendorRetries)
	}
	partial := map[string]int{}
	for _, c := range v.FaultChecks {
		if c.Fault == "partial/after" {
			partial[c.API] = c.Got
		}
	}
	for _, api := range []string{"sqs.SendMessageBatch", "dynamodb.BatchGetItem"} {
		if partial[api] == 0 {
			t.Errorf("no %s answered partially (%v)", api, partial)
		}
	}
	if len(v.FaultChecks) == 0 {
		t.Errorf("no fault checks: the run asserts no minimum")
	}
	if v.Late == 0 || v.Duplicates == 0 || v.OutOfOrder == 0 {
		t.Errorf("duplicates %d (late %d), out of order %d: want some of each", v.Duplicates, v.Late, v.OutOfOrder)
	}
	if !v.Pass() {
		t.Errorf("%s\n\n%s", v.Summary(), v.Report())
	}
	t.Logf("%s (wall %s)\n%s", v.Summary(), v.Wall.Round(time.Second), v.FaultTable())
}
