package localcloud

import (
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

// VendorFakes serves local stand-ins for the vendor REST APIs that hydration and listing call.
// A GET for /<vendor>/<path> answers with the fixture file <Dir>/<vendor>/<path>.json (the
// fixtures follow the vendors' documented response shapes); tests and rehearsals can also PUT a
// body at any path (and DELETE it) to change what the fake answers. Unknown paths get the
// vendor-style 404.
type VendorFakes struct {
	Dir string
	mu  sync.RWMutex
	set map[string][]byte
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
		v.mu.Lock()
		if v.set == nil {
			v.set = map[string][]byte{}
		}
		v.set[k] = b
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
	body, ok := v.set[k]
	v.mu.RUnlock()
	if !ok && v.Dir != "" && !strings.Contains(k, "..") {
		if b, err := os.ReadFile(filepath.Join(v.Dir, filepath.FromSlash(strings.TrimPrefix(k, "/"))+".json")); err == nil {
			body, ok = b, true
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"message":"not found","code":404}}`))
		return
	}
	_, _ = w.Write(body)
}
