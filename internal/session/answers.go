package session

// Answers is a session's memory of the releases it applied, by request seq, so
// that a release sent again after a lost connection gets the answer it first had and
// is never applied twice. A client numbers its requests in increasing order, so a
// seq above every one recorded is a new request and costs one comparison; only a
// resend looks further. The memory lives in the session and lasts as long as the
// session does (in-place restarts included). When a release falls out of it, its
// seq is at most forgot, and a resend of it is answered "outcome unknown" rather
// than judged again against a fence that has moved since.
type Answers struct {
	ring   [Memory]appliedRelease
	next   int    // the slot the next record overwrites
	top    uint64 // highest seq recorded
	forgot uint64 // highest seq overwritten
}

// Memory is how many applied releases a session remembers. A client resends
// only the releases still unanswered when its connection broke: one per lease it
// was giving back.
const Memory = 16

type appliedRelease struct{ seq, fence uint64 }

// Record notes that the release seq with fence was applied. Seq 0 is not a request
// number and is never recorded.
func (a *Answers) Record(seq, fence uint64) {
	if seq == 0 {
		return
	}
	slot := &a.ring[a.next]
	a.forgot = max(a.forgot, slot.seq)
	*slot = appliedRelease{seq: seq, fence: fence}
	a.next = (a.next + 1) % Memory
	a.top = max(a.top, seq)
}

// IsNew reports that no release with this seq or a later one has been applied: the
// hot path's check.
func (a *Answers) IsNew(seq uint64) bool { return seq > a.top }

// Recall looks up a release that is not new: applied says it was, with its fence;
// forgotten says it may have been, but has fallen out of the memory.
func (a *Answers) Recall(seq uint64) (fence uint64, applied, forgotten bool) {
	if seq == 0 {
		return 0, false, false
	}
	for _, r := range a.ring {
		if r.seq == seq {
			return r.fence, true, false
		}
	}
	return 0, false, seq <= a.forgot
}
