package awsproxy

import (
	"encoding/json"
	"hash/crc32"
	"net/http"
	"strconv"
	"time"
)

// partial answers a batch call having done only part of it (Kind Partial): a random share of
// its entries or keys — at least one — is held back and reported as not done, the rest is
// forwarded, and the endpoint's answer gains the held-back ones (SendMessageBatch: under Failed;
// BatchGetItem: under UnprocessedKeys, with the table's read settings). When nothing is left to
// forward, the proxy answers alone.
func (p *Proxy) partial(w http.ResponseWriter, r *http.Request, api string, body []byte) {
	var (
		forward []byte
		merge   func(answer []byte) ([]byte, error)
		alone   []byte
	)
	switch api {
	case "sqs.SendMessageBatch":
		forward, merge, alone = p.partialSend(body)
	case "dynamodb.BatchGetItem":
		forward, merge, alone = p.partialGet(body)
	}
	if merge == nil { // not a batch the proxy can split: pass it on whole
		forward = body
		merge = func(b []byte) ([]byte, error) { return b, nil }
	}
	status, header, answer := http.StatusOK, http.Header{}, alone
	if forward != nil {
		began := time.Now()
		var err error
		status, header, answer, err = p.forward(r, forward)
		if err != nil {
			hangUp(w)
			return
		}
		if p.observe != nil {
			p.observe(Exchange{API: api, Request: forward, Status: status, Response: answer, Header: header, Elapsed: time.Since(began), Fault: Partial})
		}
		if status == http.StatusOK {
			if merged, err := merge(answer); err == nil {
				answer = merged
			}
		}
	}
	for k, vs := range header {
		switch http.CanonicalHeaderKey(k) {
		case "Content-Length", "Connection", "Transfer-Encoding", "X-Amz-Crc32":
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	if api == "dynamodb.BatchGetItem" {
		w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE(answer)), 10))
	}
	w.WriteHeader(status)
	_, _ = w.Write(answer)
}

// holdBack picks which of n entries to hold back: each with probability one half, at least one.
func (p *Proxy) holdBack(n int) []bool {
	held := make([]bool, n)
	any := false
	for i := range held {
		if p.draw() < 0.5 {
			held[i], any = true, true
		}
	}
	if !any && n > 0 {
		held[int(p.draw()*float64(n))] = true
	}
	return held
}

// partialSend splits a SendMessageBatch: the request to forward (nil: none left), how to merge
// the endpoint's answer, and the answer when nothing is forwarded.
func (p *Proxy) partialSend(body []byte) (forward []byte, merge func([]byte) ([]byte, error), alone []byte) {
	var req map[string]json.RawMessage
	var entries []struct {
		ID string `json:"Id"`
	}
	var raw []json.RawMessage
	if json.Unmarshal(body, &req) != nil || json.Unmarshal(req["Entries"], &raw) != nil || json.Unmarshal(req["Entries"], &entries) != nil || len(raw) == 0 {
		return nil, nil, nil
	}
	held := p.holdBack(len(raw))
	var keep []json.RawMessage
	var failed []map[string]any
	for i, e := range raw {
		if held[i] {
			failed = append(failed, map[string]any{"Id": entries[i].ID, "Code": "InternalError",
				"Message": "We encountered an internal error. Please try again.", "SenderFault": false})
		} else {
			keep = append(keep, e)
		}
	}
	merge = func(answer []byte) ([]byte, error) {
		var out map[string]any
		if err := json.Unmarshal(answer, &out); err != nil {
			return nil, err
		}
		prior, _ := out["Failed"].([]any)
		for _, f := range failed {
			prior = append(prior, f)
		}
		out["Failed"] = prior
		if out["Successful"] == nil {
			out["Successful"] = []any{}
		}
		return json.Marshal(out)
	}
	if len(keep) == 0 {
		alone, _ = merge([]byte(`{"Successful":[]}`))
		return nil, merge, alone
	}
	req["Entries"], _ = json.Marshal(keep)
	forward, _ = json.Marshal(req)
	return forward, merge, nil
}

// partialGet splits a BatchGetItem as partialSend splits a SendMessageBatch: the keys held back
// come back under UnprocessedKeys with their table's read settings.
func (p *Proxy) partialGet(body []byte) (forward []byte, merge func([]byte) ([]byte, error), alone []byte) {
	var req map[string]json.RawMessage
	var items map[string]map[string]json.RawMessage // table -> KeysAndAttributes
	if json.Unmarshal(body, &req) != nil || json.Unmarshal(req["RequestItems"], &items) != nil || len(items) == 0 {
		return nil, nil, nil
	}
	type ref struct {
		table string
		key   json.RawMessage
	}
	var all []ref
	for table, ka := range items {
		var keys []json.RawMessage
		if json.Unmarshal(ka["Keys"], &keys) != nil {
			return nil, nil, nil
		}
		for _, k := range keys {
			all = append(all, ref{table, k})
		}
	}
	held := p.holdBack(len(all))
	keep, unprocessed := map[string][]json.RawMessage{}, map[string][]json.RawMessage{}
	for i, k := range all {
		if held[i] {
			unprocessed[k.table] = append(unprocessed[k.table], k.key)
		} else {
			keep[k.table] = append(keep[k.table], k.key)
		}
	}
	withKeys := func(table string, keys []json.RawMessage) map[string]json.RawMessage {
		ka := map[string]json.RawMessage{}
		for name, v := range items[table] {
			ka[name] = v
		}
		ka["Keys"], _ = json.Marshal(keys)
		return ka
	}
	merge = func(answer []byte) ([]byte, error) {
		var out map[string]json.RawMessage
		if err := json.Unmarshal(answer, &out); err != nil {
			return nil, err
		}
		prior := map[string]map[string]json.RawMessage{}
		if len(out["UnprocessedKeys"]) > 0 {
			if err := json.Unmarshal(out["UnprocessedKeys"], &prior); err != nil {
				return nil, err
			}
		}
		for table, keys := range unprocessed {
			if earlier, ok := prior[table]; ok {
				var more []json.RawMessage
				_ = json.Unmarshal(earlier["Keys"], &more)
				keys = append(more, keys...)
			}
			prior[table] = withKeys(table, keys)
		}
		out["UnprocessedKeys"], _ = json.Marshal(prior)
		if out["Responses"] == nil {
			out["Responses"] = json.RawMessage(`{}`)
		}
		return json.Marshal(out)
	}
	if len(keep) == 0 {
		alone, _ = merge([]byte(`{"Responses":{}}`))
		return nil, merge, alone
	}
	request := map[string]map[string]json.RawMessage{}
	for table, keys := range keep {
		request[table] = withKeys(table, keys)
	}
	req["RequestItems"], _ = json.Marshal(request)
	forward, _ = json.Marshal(req)
	return forward, merge, nil
}
