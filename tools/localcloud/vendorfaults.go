package localcloud

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// VendorFaults makes the vendor fakes fail hydration reads as the vendors do now and then: a
// server error, a rate limit, or no answer at all. Rates are per GET of a vendor object (under
// /msgraph/ or /meta-graph/, Graph subscriptions aside); the first kind whose draw hits wins.
type VendorFaults struct {
	// ServerError answers the vendor's documented transient server error (Graph 503
	// serviceNotAvailable with Retry-After, Meta 500 code 2 is_transient).
	ServerError float64
	// Throttle answers the vendor's rate limit (Graph 429 TooManyRequests with Retry-After, Meta
	// 400 code 4 "Application request limit reached").
	Throttle float64
	// Timeout holds the request for Hold, then closes the connection without an answer.
	Timeout float64
	// Hold is how long a Timeout holds (default 2s).
	Hold time.Duration
	// Seed seeds the draws.
	Seed uint64
}

// vendorFaulter draws and counts VendorFaults.
type vendorFaulter struct {
	cfg    VendorFaults
	mu     sync.Mutex
	rnd    *rand.Rand
	counts map[string]int // "<kind> <vendor>" -> injected; "get <vendor>" -> reads seen
}

// SetFaults turns vendor faults on (or off with a zero VendorFaults); counts start again.
func (v *VendorFakes) SetFaults(f VendorFaults) {
	if f.Hold <= 0 {
		f.Hold = 2 * time.Second
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.faults = &vendorFaulter{cfg: f, rnd: rand.New(rand.NewPCG(f.Seed, 0x7e4d)), counts: map[string]int{}}
}

// FaultCounts returns the vendor faults injected, by "<kind> <vendor>" (kinds server-error,
// throttle, timeout), and the hydration reads seen, by "get <vendor>".
func (v *VendorFakes) FaultCounts() map[string]int {
	v.mu.RLock()
	f := v.faults
	v.mu.RUnlock()
	out := map[string]int{}
	if f == nil {
		return out
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, n := range f.counts {
		out[k] = n
	}
	return out
}

// fault answers a hydration read with a drawn fault and reports whether it did.
func (v *VendorFakes) fault(w http.ResponseWriter, r *http.Request, k string) bool {
	vendor := ""
	switch {
	case strings.HasPrefix(k, "/msgraph/") && !strings.HasPrefix(k, "/msgraph/subscriptions"):
		vendor = "msgraph"
	case strings.HasPrefix(k, "/meta-graph/"):
		vendor = "meta-graph"
	default:
		return false
	}
	v.mu.RLock()
	f := v.faults
	v.mu.RUnlock()
	if f == nil {
		return false
	}
	f.mu.Lock()
	f.counts["get "+vendor]++
	kind := ""
	switch u := f.rnd.Float64(); {
	case u < f.cfg.ServerError:
		kind = "server-error"
	case u < f.cfg.ServerError+f.cfg.Throttle:
		kind = "throttle"
	case u < f.cfg.ServerError+f.cfg.Throttle+f.cfg.Timeout:
		kind = "timeout"
	}
	if kind != "" {
		f.counts[kind+" "+vendor]++
	}
	hold := f.cfg.Hold
	f.mu.Unlock()
	switch {
	case kind == "":
		return false
	case kind == "timeout":
		t := time.NewTimer(hold)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler)
	case vendor == "msgraph" && kind == "server-error":
		w.Header().Set("Retry-After", "1")
		graphError(w, http.StatusServiceUnavailable, "serviceNotAvailable", "The service is temporarily unavailable.")
	case vendor == "msgraph":
		w.Header().Set("Retry-After", "1")
		graphError(w, http.StatusTooManyRequests, "TooManyRequests", "Too many requests.")
	case kind == "server-error":
		writeRaw(w, http.StatusInternalServerError, []byte(`{"error":{"message":"An unexpected error has occurred. Please retry your request later.","type":"OAuthException","is_transient":true,"code":2,"fbtrace_id":"AbCdEfGh"}}`))
	default:
		writeRaw(w, http.StatusBadRequest, []byte(`{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","is_transient":true,"code":4,"fbtrace_id":"AbCdEfGh"}}`))
	}
	return true
}
