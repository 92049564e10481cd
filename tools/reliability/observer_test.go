package reliability

import (
	"fmt"
	"testing"

	"github.com/crmsync/crmsync/tools/awsproxy"
)

// The observer counts a transaction that puts an event's ledger item as a commit of that event,
// except a repeat of one already answered 200 with the same ClientRequestToken and items (DynamoDB
// answers it with success and writes nothing). Two commits under different tokens are still two:
// "applied twice" must not hide behind the dedupe.
func TestObserverCountsCommitsAsDynamoDBDoes(t *testing.T) {
	tx := func(token, key string) awsproxy.Exchange {
		body := fmt.Sprintf(`{"ClientRequestToken":%q,"TransactItems":[{"Put":{"TableName":"ledger","Item":{"pk":{"S":%q}}}}]}`, token, key)
		return awsproxy.Exchange{API: "dynamodb.TransactWriteItems", Status: 200, Request: []byte(body)}
	}
	tests := []struct {
		name      string
		exchanges []awsproxy.Exchange
		want      int
	}{
		{"one commit", []awsproxy.Exchange{tx("t1", "k")}, 1},
		{"a repeat of the same token and items", []awsproxy.Exchange{tx("t1", "k"), tx("t1", "k")}, 1},
		{"a repeat whose attribute maps were serialized in another order", []awsproxy.Exchange{tx("t1", "k"), {API: "dynamodb.TransactWriteItems", Status: 200,
			Request: []byte(`{"ClientRequestToken":"t1","TransactItems":[{"Put":{"Item":{"pk":{"S":"k"}},"TableName":"ledger"}}]}`)}}, 1},
		{"the same event committed under two tokens", []awsproxy.Exchange{tx("t1", "k"), tx("t2", "k")}, 2},
		{"an answer other than 200 commits nothing", []awsproxy.Exchange{{API: "dynamodb.TransactWriteItems", Status: 400,
			Request: tx("t1", "k").Request}}, 0},
	}
	for _, tt := range tests {
		o := newObserver()
		o.table = "ledger"
		for _, e := range tt.exchanges {
			o.observe(e)
		}
		if got := o.commits["k"]; got != tt.want {
			t.Errorf("%s: commits = %d, want %d", tt.name, got, tt.want)
		}
	}
}
