package localcloud

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
)

// maxLogRecords is how many of each function's latest log records Logs keeps.
const maxLogRecords = 1000

// Logs keeps each function's latest log records (the JSON lines its slog handler writes), as
// CloudWatch Logs keeps a deployed function's, and serves them at GET /_local/logs?function=<id>
// [&limit=N] as {"function": id, "records": [...]}, oldest first. The ops tool reads them
// (`crmsync verify`) where it reads CloudWatch Logs in AWS.
type Logs struct {
	mu      sync.Mutex
	records map[string][]json.RawMessage
}

// Writer returns a writer that records each JSON line written to it as one of fn's records.
func (l *Logs) Writer(fn string) *logWriter { return &logWriter{l: l, fn: fn} }

type logWriter struct {
	l   *Logs
	fn  string
	buf []byte
}

// Write records every complete JSON line of p.
func (w *logWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimSpace(w.buf[:i])
		w.buf = w.buf[i+1:]
		if len(line) == 0 || !json.Valid(line) {
			continue
		}
		if w.l.records == nil {
			w.l.records = map[string][]json.RawMessage{}
		}
		rs := append(w.l.records[w.fn], json.RawMessage(bytes.Clone(line)))
		if len(rs) > maxLogRecords {
			rs = rs[len(rs)-maxLogRecords:]
		}
		w.l.records[w.fn] = rs
	}
	return len(p), nil
}

// ServeHTTP answers GET /_local/logs?function=<logical id>[&limit=N].
func (l *Logs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fn := r.URL.Query().Get("function")
	if fn == "" {
		http.Error(w, "want ?function=<logical id>", http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	rs := append([]json.RawMessage{}, l.records[fn]...)
	l.mu.Unlock()
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 && n < len(rs) {
		rs = rs[len(rs)-n:]
	}
	w.Header().Set("content-type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"function": fn, "records": rs})
}
