package localcloud

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// With vendor faults on, a hydration read gets the vendor's own transient answer — Graph's 503
// and 429 with Retry-After, Meta's code 2 and code 4 errors, or no answer — and each is counted;
// subscription calls and control requests are never faulted.
func TestVendorFaultsAnswerAsTheVendors(t *testing.T) {
	v := &VendorFakes{}
	srv := httptest.NewServer(v)
	defer srv.Close()
	put := func(path string) {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+path, strings.NewReader(`{"id":"x"}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("put %s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
	put("/msgraph/users/rep/messages/m1")
	put("/meta-graph/123")
	tests := []struct {
		faults     VendorFaults
		path       string
		status     int
		retryAfter bool
		body       string
		count      string
	}{
		{VendorFaults{ServerError: 1}, "/msgraph/users/rep/messages/m1", 503, true, "serviceNotAvailable", "server-error msgraph"},
		{VendorFaults{Throttle: 1}, "/msgraph/users/rep/messages/m1", 429, true, "TooManyRequests", "throttle msgraph"},
		{VendorFaults{ServerError: 1}, "/meta-graph/123", 500, false, `"code":2`, "server-error meta-graph"},
		{VendorFaults{Throttle: 1}, "/meta-graph/123", 400, false, `"code":4`, "throttle meta-graph"},
		{VendorFaults{Timeout: 1, Hold: 10 * time.Millisecond}, "/meta-graph/123", 0, false, "", "timeout meta-graph"},
		{VendorFaults{}, "/meta-graph/123", 200, false, `"id":"x"`, "get meta-graph"},
	}
	for _, tt := range tests {
		v.SetFaults(tt.faults)
		resp, err := http.Get(srv.URL + tt.path)
		if tt.status == 0 {
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s with %+v: answered %d, want no answer", tt.path, tt.faults, resp.StatusCode)
			}
		} else {
			if err != nil {
				t.Fatalf("%s: %v", tt.path, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.Contains(string(b), tt.body) || (resp.Header.Get("Retry-After") != "") != tt.retryAfter {
				t.Errorf("%s with %+v: %d %q (Retry-After %q), want %d containing %q", tt.path, tt.faults, resp.StatusCode, b,
					resp.Header.Get("Retry-After"), tt.status, tt.body)
			}
		}
		// Go's transport re-sends an idempotent GET whose connection closed without an answer once.
		if got := v.FaultCounts()[tt.count]; got != 1 && !(tt.status == 0 && got == 2) {
			t.Errorf("%+v: FaultCounts()[%q] = %d, want 1 (%v)", tt.faults, tt.count, got, v.FaultCounts())
		}
	}
	v.SetFaults(VendorFaults{ServerError: 1})
	put("/meta-graph/456") // control requests pass
	if resp, err := http.Get(srv.URL + "/msgraph/subscriptions"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable {
			t.Errorf("Graph subscriptions faulted: only hydration reads are")
		}
	}
}
