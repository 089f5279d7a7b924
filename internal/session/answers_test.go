package session

import "testing"

// The memory of applied releases, without sockets: a new seq is told apart by one
// comparison, a resend finds its fence, and one that fell out of the ring is
// "forgotten", never mistaken for one that was not applied.
func TestAnswerLogRemembersAppliedReleases(t *testing.T) {
	var a Answers
	if !a.IsNew(1) {
		t.Fatal("empty log: seq 1 not new")
	}
	for seq := uint64(1); seq <= Memory; seq++ {
		a.Record(seq*2, 100+seq) // even seqs applied; odd ones never arrived
	}
	type want struct {
		isNew, applied, forgotten bool
		fence                     uint64
	}
	check := func(when string, cases map[uint64]want) {
		t.Helper()
		for seq, w := range cases {
			fence, applied, forgotten := a.Recall(seq)
			if a.IsNew(seq) != w.isNew || applied != w.applied || forgotten != w.forgotten || (applied && fence != w.fence) {
				t.Errorf("%s: seq %d: new %v applied %v (fence %d) forgotten %v; want %+v", when, seq, a.IsNew(seq), applied, fence, forgotten, w)
			}
		}
	}
	check("full", map[uint64]want{
		2:            {applied: true, fence: 101},
		3:            {},
		2 * Memory:   {applied: true, fence: 100 + Memory},
		2*Memory + 1: {isNew: true},
		0:            {},
	})
	a.Record(2*Memory+2, 999) // overwrites seq 2
	a.Record(0, 5)            // not a request number: ignored
	check("after one more", map[uint64]want{
		1:            {forgotten: true},
		2:            {forgotten: true},
		3:            {},
		4:            {applied: true, fence: 102},
		2*Memory + 2: {applied: true, fence: 999},
		0:            {},
	})
}
