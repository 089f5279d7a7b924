package server

import "testing"

// The memory of applied releases, without sockets: a new seq is told apart by one
// comparison, a resend finds its fence, and one that fell out of the ring is
// "forgotten", never mistaken for one that was not applied.
func TestAnswerLogRemembersAppliedReleases(t *testing.T) {
	var a answerLog
	if !a.isNew(1) {
		t.Fatal("empty log: seq 1 not new")
	}
	for seq := uint64(1); seq <= answerMemory; seq++ {
		a.record(seq*2, 100+seq) // even seqs applied; odd ones never arrived
	}
	type want struct {
		isNew, applied, forgotten bool
		fence                     uint64
	}
	check := func(when string, cases map[uint64]want) {
		t.Helper()
		for seq, w := range cases {
			fence, applied, forgotten := a.recall(seq)
			if a.isNew(seq) != w.isNew || applied != w.applied || forgotten != w.forgotten || (applied && fence != w.fence) {
				t.Errorf("%s: seq %d: new %v applied %v (fence %d) forgotten %v; want %+v", when, seq, a.isNew(seq), applied, fence, forgotten, w)
			}
		}
	}
	check("full", map[uint64]want{
		2:                  {applied: true, fence: 101},
		3:                  {},
		2 * answerMemory:   {applied: true, fence: 100 + answerMemory},
		2*answerMemory + 1: {isNew: true},
		0:                  {},
	})
	a.record(2*answerMemory+2, 999) // overwrites seq 2
	a.record(0, 5)                  // not a request number: ignored
	check("after one more", map[uint64]want{
		1:                  {forgotten: true},
		2:                  {forgotten: true},
		3:                  {},
		4:                  {applied: true, fence: 102},
		2*answerMemory + 2: {applied: true, fence: 999},
		0:                  {},
	})
}
