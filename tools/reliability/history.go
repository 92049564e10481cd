package reliability

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/crmsync/crmsync/tools/awsproxy"
)

// A history is every read and committed write of a record profile (CRM table, sk PROFILE) the
// functions made, as the fault proxy saw the endpoint answer them, with the interval each was in
// flight. The worker writes a profile whole, conditioned on the version it read, so each write
// names the version it creates and the content it stores; a read names the version and content
// it observed. The history checker then verifies, per record:
//
//   - every version is committed at most once (two commits of one version: a lost update);
//   - every read observed a committed write: its version and content were written by a commit
//     that began before the read ended (none: a dirty or phantom read);
//   - a strongly consistent read never observes a version older than one whose commit ended
//     before the read began (a stale read);
//   - the record ends as its newest committed write left it (a value that disappeared without a
//     newer write explaining it).
//
// It judges what the emulator and the worker did together: the undo log of the suite's moto, a
// transaction canceled after it wrote, a read served halfway through a transaction would each
// show here.
type historyOp struct {
	// Kind is "read" or "write".
	Kind string `json:"kind"`
	// API is the request, e.g. dynamodb.TransactWriteItems.
	API string `json:"api"`
	// Record is the profile's pk; Version and Content (a hash of its fields) what was read or
	// written.
	Record  string `json:"record"`
	Version int64  `json:"version"`
	Content string `json:"content"`
	// Consistent marks a strongly consistent read.
	Consistent bool `json:"consistent,omitempty"`
	// Begin and End bound when the request was in flight at the endpoint.
	Begin time.Time `json:"begin"`
	End   time.Time `json:"end"`
}

// historian records the history from the proxy's exchanges.
type historian struct {
	table string // the CRM table
	mu    sync.Mutex
	ops   []historyOp
}

// attrs is a DynamoDB JSON item, its values left raw.
type attrs map[string]map[string]json.RawMessage

// profile reads a profile item's record, version and content hash; ok is false for any other item.
func profile(item attrs) (record string, version int64, content string, ok bool) {
	var pk, sk, v string
	_ = json.Unmarshal(item["pk"]["S"], &pk)
	_ = json.Unmarshal(item["sk"]["S"], &sk)
	if sk != "PROFILE" || pk == "" {
		return "", 0, "", false
	}
	_ = json.Unmarshal(item["version"]["N"], &v)
	version, _ = strconv.ParseInt(v, 10, 64)
	var fields string
	_ = json.Unmarshal(item["fields_z"]["B"], &fields)
	raw, _ := base64.StdEncoding.DecodeString(fields)
	sum := sha256.Sum256(raw)
	return pk, version, hex.EncodeToString(sum[:8]), true
}

// observe records what one exchange read or committed.
func (h *historian) observe(e awsproxy.Exchange) {
	if e.Status != 200 {
		return
	}
	end := time.Now()
	begin := end.Add(-e.Elapsed)
	var ops []historyOp
	add := func(kind string, item attrs, consistent bool) {
		if record, version, content, ok := profile(item); ok {
			ops = append(ops, historyOp{Kind: kind, API: e.API, Record: record, Version: version, Content: content, Consistent: consistent, Begin: begin, End: end})
		}
	}
	switch e.API {
	case "dynamodb.GetItem":
		var req struct {
			TableName      string
			ConsistentRead bool
		}
		var resp struct{ Item attrs }
		if json.Unmarshal(e.Request, &req) == nil && req.TableName == h.table && json.Unmarshal(e.Response, &resp) == nil && resp.Item != nil {
			add("read", resp.Item, req.ConsistentRead)
		}
	case "dynamodb.BatchGetItem":
		var req struct {
			RequestItems map[string]struct{ ConsistentRead bool }
		}
		var resp struct{ Responses map[string][]attrs }
		if json.Unmarshal(e.Request, &req) == nil && json.Unmarshal(e.Response, &resp) == nil {
			for _, item := range resp.Responses[h.table] {
				add("read", item, req.RequestItems[h.table].ConsistentRead)
			}
		}
	case "dynamodb.PutItem":
		var req struct {
			TableName string
			Item      attrs
		}
		if json.Unmarshal(e.Request, &req) == nil && req.TableName == h.table {
			add("write", req.Item, false)
		}
	case "dynamodb.TransactWriteItems":
		var req struct {
			TransactItems []struct {
				Put *struct {
					TableName string
					Item      attrs
				}
			}
		}
		if json.Unmarshal(e.Request, &req) == nil {
			for _, it := range req.TransactItems {
				if it.Put != nil && it.Put.TableName == h.table {
					add("write", it.Put.Item, false)
				}
			}
		}
	}
	if len(ops) > 0 {
		h.mu.Lock()
		h.ops = append(h.ops, ops...)
		h.mu.Unlock()
	}
}

// history returns the operations recorded, by end time.
func (h *historian) history() []historyOp {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := append([]historyOp(nil), h.ops...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].End.Before(out[j].End) })
	return out
}

// writeHistory writes the history as JSON lines to path.
func writeHistory(path string, ops []historyOp) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// storedProfile is a record's profile as the run left it.
type storedProfile struct {
	Version int64
	Content string
}

// HistoryReport is what the history check found.
type HistoryReport struct {
	// Reads and Writes count the operations checked; Records the profiles they touched.
	Reads, Writes, Records int
	// Violations describe the first problems (at most 20); Count counts them all.
	Violations []string
	Count      int
}

// checkHistory checks a history against the profiles the run left (see historyOp).
func checkHistory(ops []historyOp, final map[string]storedProfile) HistoryReport {
	var rep HistoryReport
	violation := func(format string, args ...any) {
		rep.Count++
		if len(rep.Violations) < 20 {
			rep.Violations = append(rep.Violations, fmt.Sprintf(format, args...))
		}
	}
	commits := map[string]map[int64]historyOp{} // record -> version -> its commit
	for _, op := range ops {
		if op.Kind != "write" {
			continue
		}
		rep.Writes++
		if commits[op.Record] == nil {
			commits[op.Record] = map[int64]historyOp{}
		}
		if prior, twice := commits[op.Record][op.Version]; twice {
			// The same content again is one write repeated (DynamoDB answers a repeated
			// ClientRequestToken with success and writes nothing); other content is a lost update.
			if prior.Content != op.Content {
				violation("%s: version %d committed twice (%s and %s): a lost update", op.Record, op.Version, prior.Content, op.Content)
			}
			continue
		}
		commits[op.Record][op.Version] = op
	}
	rep.Records = len(commits)
	for _, op := range ops {
		if op.Kind != "read" {
			continue
		}
		rep.Reads++
		w, ok := commits[op.Record][op.Version]
		switch {
		case !ok || w.Content != op.Content:
			violation("%s: read version %d (%s) at %s, which no commit wrote", op.Record, op.Version, op.Content, op.End.Format(time.RFC3339Nano))
			continue
		case w.Begin.After(op.End):
			violation("%s: read version %d before its commit began", op.Record, op.Version)
		}
		if !op.Consistent {
			continue
		}
		for v, c := range commits[op.Record] {
			if v > op.Version && c.End.Before(op.Begin) {
				violation("%s: a strongly consistent read saw version %d after version %d had committed", op.Record, op.Version, v)
				break
			}
		}
	}
	for record, versions := range commits {
		newest := int64(-1)
		for v := range versions {
			newest = max(newest, v)
		}
		got, ok := final[record]
		switch {
		case !ok:
			violation("%s: committed up to version %d, gone at the end", record, newest)
		case got.Version != newest || got.Content != versions[newest].Content:
			violation("%s: ends at version %d (%s), but its newest commit wrote version %d (%s)", record, got.Version, got.Content, newest, versions[newest].Content)
		}
	}
	return rep
}
