package worker

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Lanes join groups (indexes into groups, each a list of message indexes), each lane led by its
// earliest group, lanes in order of their leader.
func TestLaneSet(t *testing.T) {
	groups := [][]int{{0}, {1, 2}, {3}, {4}, {5}}
	for _, tc := range []struct {
		name  string
		joins [][2]int
		want  [][][]int
	}{
		{"none", nil, [][][]int{{{0}}, {{1, 2}}, {{3}}, {{4}}, {{5}}}},
		{"one pair", [][2]int{{3, 1}}, [][][]int{{{0}}, {{1, 2}, {4}}, {{3}}, {{5}}}},
		{"chain, led by the earliest", [][2]int{{4, 2}, {2, 1}}, [][][]int{{{0}}, {{1, 2}, {3}, {5}}, {{4}}}},
		{"two lanes joined", [][2]int{{0, 4}, {1, 3}, {3, 4}}, [][][]int{{{0}, {1, 2}, {4}, {5}}, {{3}}}},
	} {
		lanes := newLanes(len(groups))
		for _, j := range tc.joins {
			lanes.join(j[0], j[1])
		}
		if got := lanes.of(groups); !cmp.Equal(got, tc.want) {
			t.Errorf("%s: lanes = %v, want %v", tc.name, got, tc.want)
		}
	}
}
