package localcloud

import (
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// VendorFakes serves local stand-ins for the vendor REST APIs that hydration and listing call.
// A GET for /<vendor>/<path> answers with the fixture file <Dir>/<vendor>/<path>.json (the
// fixtures follow the vendors' documented response shapes); tests and rehearsals can also PUT a
// body at any path (and DELETE it) to change what the fake answers — with a header
// X-Fake-Status: <code> the fake answers that status with the body (e.g. 500 to rehearse a
// vendor outage) — and DELETE restores the fixture. Unknown paths get the vendor-style 404.
type VendorFakes struct {
	Dir string
	mu  sync.RWMutex
	set map[string]fakeAnswer
}

// FakeStatusHeader is the PUT header that sets the status the fake answers with.
const FakeStatusHeader = "X-Fake-Status"

type fakeAnswer struct {
	status int
	body   []byte
}

// BaseURLEnv maps the function environment variables that hold vendor API base URLs to the
// fake's vendor prefix.
var BaseURLEnv = map[string]string{
	"META_GRAPH_BASE_URL":   "meta-graph",
	"MSGRAPH_BASE_URL":      "msgraph",
	"TWILIO_API_BASE_URL":   "twilio",
	"CALENDLY_API_BASE_URL": "calendly",
	"TYPEFORM_API_BASE_URL": "typeform",
}

func (v *VendorFakes) key(p string) string { return path.Clean("/" + p) }

// ServeHTTP implements http.Handler.
func (v *VendorFakes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := v.key(r.URL.Path)
	switch r.Method {
	case http.MethodPut:
		b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		status := http.StatusOK
		if h := r.Header.Get(FakeStatusHeader); h != "" {
			n, err := strconv.Atoi(h)
			if err != nil || n < 100 || n > 599 {
				http.Error(w, "bad "+FakeStatusHeader, http.StatusBadRequest)
				return
			}
			status = n
		}
		v.mu.Lock()
		if v.set == nil {
			v.set = map[string]fakeAnswer{}
		}
		v.set[k] = fakeAnswer{status: status, body: b}
		v.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodDelete:
		v.mu.Lock()
		delete(v.set, k)
		v.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet:
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	v.mu.RLock()
	ans, ok := v.set[k]
	v.mu.RUnlock()
	body, status := ans.body, ans.status
	if !ok && v.Dir != "" && !strings.Contains(k, "..") {
		if b, err := os.ReadFile(filepath.Join(v.Dir, filepath.FromSlash(strings.TrimPrefix(k, "/"))+".json")); err == nil {
			body, status, ok = b, http.StatusOK, true
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"message":"not found","code":404}}`))
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
