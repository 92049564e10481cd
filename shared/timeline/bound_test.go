package timeline

import (
	"math/rand/v2"
	"testing"
)

// The entries bound keeps Merge a join: any delivery order, with redeliveries of updates
// already dropped, ends with the same newest MaxEntries entries.
func TestMergeBoundedOrderIndependent(t *testing.T) {
	const n = 3 * MaxEntries
	var evs []int
	for i := range n {
		evs = append(evs, i)
	}
	status := func(i int) string { return []string{"queued", "ringing", "in-progress"}[i%3] }
	inOrder := Activity{}
	for _, i := range evs {
		inOrder = Merge(&inOrder, call(i, status(i), i))
	}
	if len(inOrder.Entries) != MaxEntries || !inOrder.Truncated || inOrder.Entries[0].Key != call(n-MaxEntries, "", 0).Key {
		t.Fatalf("in order: %d entries (truncated %v), first %s", len(inOrder.Entries), inOrder.Truncated, inOrder.Entries[0].Key)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 5 {
		shuffled := Activity{}
		order := append(r.Perm(n), r.Perm(n)[:n/3]...) // with redeliveries
		for _, i := range order {
			shuffled = Merge(&shuffled, call(i, status(i), i))
		}
		if !Equal(inOrder, shuffled) {
			t.Fatalf("round %d: shuffled delivery differs", round)
		}
	}
	short := mergeAll(call(1, "ringing", 0), call(2, "completed", 9))
	if short.Truncated || len(short.Entries) != 2 {
		t.Fatalf("short activity: %+v", short)
	}
}
