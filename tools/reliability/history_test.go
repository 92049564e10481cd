package reliability

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crmsync/crmsync/tools/awsproxy"
)

// The history checker passes a clean history and fails each anomaly seeded into it.
func TestCheckHistory(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 12, 2, 17, 0, s, 0, time.UTC) }
	w := func(v int64, content string, b, e int) historyOp {
		return historyOp{Kind: "write", Record: "CONTACT#c1", Version: v, Content: content, Begin: at(b), End: at(e)}
	}
	r := func(v int64, content string, b, e int) historyOp {
		return historyOp{Kind: "read", Record: "CONTACT#c1", Version: v, Content: content, Consistent: true, Begin: at(b), End: at(e)}
	}
	clean := []historyOp{w(1, "a", 0, 1), r(1, "a", 2, 3), w(2, "b", 4, 5), r(2, "b", 6, 7)}
	final := map[string]storedProfile{"CONTACT#c1": {Version: 2, Content: "b"}}
	tests := []struct {
		name  string
		ops   []historyOp
		final map[string]storedProfile
		want  string // "" for no violation
	}{
		{"clean", clean, final, ""},
		{"a read overlapping the commit it saw", []historyOp{w(1, "a", 0, 3), r(1, "a", 2, 3)}, map[string]storedProfile{"CONTACT#c1": {1, "a"}}, ""},
		{"a version committed twice", append(clean, w(2, "c", 8, 9)), final, "committed twice"},
		{"one write repeated (an idempotent retry)", append(clean, w(2, "b", 8, 9)), final, ""},
		{"a read of what no commit wrote", append(clean, r(2, "z", 8, 9)), final, "which no commit wrote"},
		{"a stale strongly consistent read", append(clean, r(1, "a", 8, 9)), final, "after version 2 had committed"},
		{"a record ending behind its newest commit", clean, map[string]storedProfile{"CONTACT#c1": {1, "a"}}, "newest commit"},
		{"a record gone", clean, map[string]storedProfile{}, "gone at the end"},
	}
	for _, tt := range tests {
		rep := checkHistory(tt.ops, tt.final)
		switch {
		case tt.want == "" && rep.Count != 0:
			t.Errorf("%s: violations %v, want none", tt.name, rep.Violations)
		case tt.want != "" && (rep.Count != 1 || !strings.Contains(rep.Violations[0], tt.want)):
			t.Errorf("%s: violations %v, want one about %q", tt.name, rep.Violations, tt.want)
		}
	}
}

// The historian reads profiles out of the exchanges as DynamoDB's JSON protocol carries them:
// a transaction's Puts as writes (other tables and items aside), GetItem and BatchGetItem answers
// as reads, with their consistency.
func TestHistorianReadsExchanges(t *testing.T) {
	h := &historian{table: "crm"}
	fields := base64.StdEncoding.EncodeToString([]byte("packed"))
	profile := fmt.Sprintf(`{"pk":{"S":"CONTACT#c1"},"sk":{"S":"PROFILE"},"version":{"N":"3"},"fields_z":{"B":%q}}`, fields)
	h.observe(awsproxy.Exchange{API: "dynamodb.TransactWriteItems", Status: 200, Request: []byte(`{"TransactItems":[` +
		`{"Put":{"TableName":"ledger","Item":{"pk":{"S":"k"}}}},{"Put":{"TableName":"crm","Item":` + profile + `}},` +
		`{"Put":{"TableName":"crm","Item":{"pk":{"S":"CONTACT#c1"},"sk":{"S":"ACT#a"}}}}]}`)})
	h.observe(awsproxy.Exchange{API: "dynamodb.GetItem", Status: 200, Request: []byte(`{"TableName":"crm","ConsistentRead":true}`),
		Response: []byte(`{"Item":` + profile + `}`)})
	h.observe(awsproxy.Exchange{API: "dynamodb.BatchGetItem", Status: 200, Request: []byte(`{"RequestItems":{"crm":{"ConsistentRead":false}}}`),
		Response: []byte(`{"Responses":{"crm":[` + profile + `]}}`)})
	h.observe(awsproxy.Exchange{API: "dynamodb.TransactWriteItems", Status: 400, Request: []byte(`{"TransactItems":[{"Put":{"TableName":"crm","Item":` + profile + `}}]}`)})
	ops := h.history()
	if len(ops) != 3 {
		t.Fatalf("%d operations, want 3 (one write, two reads): %+v", len(ops), ops)
	}
	if ops[0].Kind != "write" || ops[1].Kind != "read" || !ops[1].Consistent || ops[2].Consistent || ops[0].Version != 3 || ops[0].Content != ops[1].Content {
		t.Errorf("operations = %+v", ops)
	}
}
