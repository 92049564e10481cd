package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/crmsync/crmsync/tools/localcloud"
)

// A Meta lead whose hydration answers Graph API error 190 (expired token) is recorded REJECTED
// with that reason and acknowledged — not retried until the DLQ — and `crmsync status` shows it
// with its reason, which is where the HydrationFailures runbook starts.
func TestMetaLeadWithExpiredTokenIsRejectedAndShownInStatus(t *testing.T) {
	s := startStack(t, true)
	req, _ := http.NewRequest(http.MethodPut, s.publicBase()+"/_vendor/meta-graph/918273645501234",
		strings.NewReader(`{"error":{"message":"Error validating access token: Session has expired.","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"AbCdEf"}}`))
	req.Header.Set(localcloud.FakeStatusHeader, "400")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if status, body := s.post(s.sample("meta-leads")); status != 200 {
		t.Fatalf("meta-leads delivery = %d %s", status, body)
	}
	e := s.waitLedger("meta-leads:918273645501234")
	if e.Outcome != "REJECTED" || !strings.Contains(e.Reason, "190") {
		t.Fatalf("ledger entry = %+v, want REJECTED naming code 190", e)
	}
	out, err := s.crmsync("status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "meta-leads:918273645501234") || !strings.Contains(out, "190") {
		t.Errorf("crmsync status does not show the rejected lead with its reason:\n%s", out)
	}
	js, err := s.crmsync("status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatal(err)
	}
	if st.DLQMessages != 0 || len(st.Rejected) == 0 || !strings.Contains(st.Rejected[0].Reason, "190") {
		t.Errorf("status --json: dlq %d, rejected %+v; want an empty DLQ and the lead's rejection", st.DLQMessages, st.Rejected)
	}
}
