package samtemplate_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/crmsync/crmsync/shared/store"
	"github.com/crmsync/crmsync/tools/samtemplate"
)

// indexKeyWriters are the hash key attributes of template.yaml's global secondary indexes whose
// values crmsync derives (rather than taking a natural key from the data): each writes item i
// of a day's workload the way the worker and restore write it.
var indexKeyWriters = map[string]func(i int, day time.Time) string{
	"unassoc": func(i int, _ time.Time) string {
		activity := store.ActivityItem{ActivityID: fmt.Sprintf("call:twilio:CA%032d", i)}
		activity.Park()
		return activity.Unassoc
	},
}

// indexNaturalKeys are hash key attributes that are a natural key of the data, with why that key
// spreads the index's writes.
var indexNaturalKeys = map[string]string{
	"group_key":  "one value per identity or contact (email:…, phone:…, contact:…)",
	"account_id": "one value per account",
	"source":     "one value per connector (seven keys, not one constant or one per day)",
}

// TestNoIndexHasAConstantOrPerDayHashKey reads every global secondary index of template.yaml and
// fails on one whose hash key would put a whole day's writes (or all of them) on one partition:
// a day's workload written through store's own writers must spread over at least IndexShards
// hash keys. An index whose hash attribute is in neither table above fails too, so a new index
// must say how its key spreads.
func TestNoIndexHasAConstantOrPerDayHashKey(t *testing.T) {
	tpl, err := samtemplate.Load(filepath.Join("..", "..", "template.yaml"), samtemplate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	indexes := 0
	for _, id := range tpl.OfType("AWS::DynamoDB::Table") {
		gsis, _ := tpl.Resources[id].Properties["GlobalSecondaryIndexes"].([]any)
		for _, raw := range gsis {
			gsi, _ := raw.(map[string]any)
			name, hash := fmt.Sprint(gsi["IndexName"]), ""
			schema, _ := gsi["KeySchema"].([]any)
			for _, element := range schema {
				if e, _ := element.(map[string]any); e["KeyType"] == "HASH" {
					hash = fmt.Sprint(e["AttributeName"])
				}
			}
			indexes++
			if _, natural := indexNaturalKeys[hash]; natural {
				continue
			}
			write, ok := indexKeyWriters[hash]
			if !ok {
				t.Errorf("%s.%s: hash key %q is neither a known natural key nor written by a store writer this test exercises", id, name, hash)
				continue
			}
			seen := map[string]bool{}
			for i := range 2000 {
				seen[write(i, day)] = true
			}
			if got := len(seen); got < store.IndexShards {
				t.Errorf("%s.%s: a day's 2000 items use %d hash key value(s) of %q, want at least %d", id, name, got, hash, store.IndexShards)
			}
		}
	}
	if indexes == 0 {
		t.Fatal("template.yaml declares no global secondary index: the test read nothing")
	}
}
