package moto

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Serializer is a reverse proxy in front of moto that passes DynamoDB requests to it one at a
// time (every other request goes straight through, concurrently).
//
// Why: moto's TransactWriteItems is neither isolated nor atomic under concurrent requests. It
// deep-copies the tables involved, applies the items one by one and, when a condition fails,
// puts the copies back — discarding every write other requests made to those tables meanwhile —
// and two concurrent transactions can both pass the same version condition. Real DynamoDB
// serializes conflicting transactions (one is canceled with TransactionConflict). Code that runs
// concurrent transactions against moto (the worker's event source mapping, with several pollers
// and message groups in parallel) therefore loses writes at random unless DynamoDB calls are
// serialized; serialized, every transaction is atomic and isolated, as in AWS.
type Serializer struct {
	// URL is the proxy's endpoint (http://127.0.0.1:<port>).
	URL string
	srv *http.Server
}

// Serialize starts a Serializer in front of endpoint.
func Serialize(endpoint string) (*Serializer, error) {
	target, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("moto endpoint %q: %w", endpoint, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_") {
			mu.Lock()
			defer mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	})
	s := &Serializer{URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the proxy.
func (s *Serializer) Close() { _ = s.srv.Close() }

// SerializedForTest is ForTest behind a Serializer (closed when the test ends): use it for tests
// that run concurrent DynamoDB transactions, such as a local stack with the worker running.
func SerializedForTest(t TB) string {
	t.Helper()
	s, err := Serialize(ForTest(t))
	if err != nil {
		t.Fatalf("serialize moto: %v", err)
	}
	t.Cleanup(s.Close)
	return s.URL
}
