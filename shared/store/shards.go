package store

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// IndexShards is how many hash keys each write-sharded index spreads its items over. An index
// whose hash key is one constant (every parked activity) puts all its writes on one partition,
// which DynamoDB caps at 1,000 write units a second; spread over IndexShards keys by a hash of
// the item's key, its writes use IndexShards partitions, and a reader queries every shard.
const IndexShards = 16

// LegacyUnassocKey is the Unassociated index's hash key of activities parked before the index
// was sharded; readers still query it, so a table written by older code keeps working.
const LegacyUnassocKey = "1"

// shard is the shard of an item key: a stable hash, so rewriting an item keeps its index key.
func shard(key string) int {
	sum := sha256.Sum256([]byte(key))
	return int(binary.BigEndian.Uint32(sum[:4]) % IndexShards)
}

// UnassocKey is the Unassociated index's hash key of a parked activity: "u" and its shard.
func UnassocKey(activityID string) string { return fmt.Sprintf("u%02d", shard(activityID)) }

// UnassocKeys lists every hash key the Unassociated index can hold: each shard's, then the
// legacy one.
func UnassocKeys() []string {
	keys := make([]string, 0, IndexShards+1)
	for n := range IndexShards {
		keys = append(keys, fmt.Sprintf("u%02d", n))
	}
	return append(keys, LegacyUnassocKey)
}

// Park stores the activity as waiting for a contact: under PKUnassociated, in its shard of the
// sparse Unassociated index, with no contact.
func (a *ActivityItem) Park() {
	a.PK, a.ContactID, a.Unassoc = PKUnassociated, "", UnassocKey(a.ActivityID)
}
