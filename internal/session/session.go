// Package session is the baton server's table of client sessions: who they are,
// which requests they have in the token queues, the releases they had applied, and
// when each expires. Like internal/token it does no I/O and keeps no clock: every
// operation that depends on time is given it, so that the same table can be driven
// by a single server's clock or, replicated, by times its leader puts in the log.
// It is not safe for concurrent use: the server's core owns it.
//
// Invariants kept here:
//   - a session is in the table from Open until End, and never comes back;
//   - its deadline only moves forward while it lives (Touch, Grace);
//   - Expired reports a session only once its deadline is at or before the time
//     given, never a session kept alive since.
//
// A session carries one value of the caller's type C, its attachment: the server
// keeps the connection that serves the session there. It is not part of the
// session's state.
package session

import (
	"container/heap"
	"time"

	"github.com/baton-dev/baton/internal/token"
)

// ID names a session; zero means none.
type ID = token.SessionID

// Session is a client session. It outlives connections: a client that reconnects in
// time resumes it. Fields other than Attached are read-only outside this package,
// except Requests and the counters, which the core keeps in step with the token
// table.
type Session[C any] struct {
	// What a grant, a release or a requeue touches first, in one cache line.
	ID       ID
	Attached C                 // the connection serving it, if any: the caller's
	Requests map[string]uint64 // token → seq of this session's acquire, held or waiting
	Grants   uint64            // tokens granted to this session
	Waited   uint64            // acquires that had to queue
	Ended    bool
	Node     string

	BootID   string
	TTL      time.Duration
	Deadline time.Time
	Answers  Answers // the releases it applied, for one sent again
	// Spared: kept alive by Spare since its last Touch, and not again until the
	// next. The server's memory only: not saved.
	Spared bool
}

// Table holds the live sessions and their deadlines.
type Table[C any] struct {
	byID   map[ID]*Session[C]
	expiry expiryHeap
}

// NewTable returns an empty table.
func NewTable[C any]() *Table[C] {
	return &Table[C]{byID: map[ID]*Session[C]{}}
}

// Get returns the live session id, or nil.
func (t *Table[C]) Get(id ID) *Session[C] { return t.byID[id] }

// Len is the number of live sessions.
func (t *Table[C]) Len() int { return len(t.byID) }

// Each calls fn for every live session, in no particular order. fn may End the
// session it is given.
func (t *Table[C]) Each(fn func(*Session[C])) {
	for _, s := range t.byID {
		fn(s)
	}
}

// Open adds a new session, alive until now + ttl unless touched. id must be new and
// non-zero.
func (t *Table[C]) Open(id ID, node, bootID string, ttl time.Duration, now time.Time) *Session[C] {
	s := &Session[C]{ID: id, Node: node, BootID: bootID, TTL: ttl, Requests: map[string]uint64{}}
	t.byID[id] = s
	t.Touch(s, now)
	return s
}

// Touch keeps s alive until now + its TTL: a keepalive, or a resume, received now.
// A deadline never moves back.
func (t *Table[C]) Touch(s *Session[C], now time.Time) {
	s.Spared = false
	d := now.Add(s.TTL)
	if !d.After(s.Deadline) {
		return
	}
	// The heap keeps the entry it has while one is there (Expired looks again at the
	// session's real deadline): a touch costs no heap operation.
	if s.Deadline.IsZero() {
		heap.Push(&t.expiry, expiryItem{id: s.ID, at: d})
	}
	s.Deadline = d
}

// SetTTL changes s's TTL from its next touch on.
func (t *Table[C]) SetTTL(s *Session[C], ttl time.Duration) { s.TTL = ttl }

// Grace keeps every session alive until at least now + its TTL: what a server that
// takes over must give the sessions it inherits before it expires any, since it
// cannot know when their last keepalives were acknowledged.
func (t *Table[C]) Grace(now time.Time) {
	for _, s := range t.byID {
		t.Touch(s, now)
	}
}

// Spare keeps alive until now + its TTL each session that a server could not
// hear from for late (its process frozen, its host stalled): one whose TTL is
// under four times late (its client sends a keepalive every third of its TTL, so
// a shorter silence costs it nothing). A session is spared once until its next
// Touch, so that silences that keep coming do not keep alive one whose client is
// gone. It returns how many it spared.
func (t *Table[C]) Spare(now time.Time, late time.Duration) int {
	n := 0
	for _, s := range t.byID {
		if s.Spared || late <= s.TTL/4 {
			continue
		}
		t.Touch(s, now)
		s.Spared = true
		n++
	}
	return n
}

// End removes s: it is over for good. What it held or waited for is the caller's to
// give up (the token table).
func (t *Table[C]) End(s *Session[C]) {
	if s.Ended {
		return
	}
	s.Ended = true
	delete(t.byID, s.ID)
	// An ended session's entry stays in the expiry order until Expired pops it; a
	// table nobody expires (a replica's) would keep them all. Rebuild it from the
	// live sessions once the dead entries outnumber them.
	if len(t.expiry) > 2*len(t.byID)+64 {
		t.expiry = t.expiry[:0]
		for _, live := range t.byID {
			t.expiry = append(t.expiry, expiryItem{id: live.ID, at: live.Deadline})
		}
		heap.Init(&t.expiry)
	}
}

// Expired calls fn for every live session whose deadline is at or before now, in
// deadline order; fn is expected to End it.
func (t *Table[C]) Expired(now time.Time, fn func(*Session[C])) {
	for len(t.expiry) > 0 && !t.expiry[0].at.After(now) {
		it := heap.Pop(&t.expiry).(expiryItem)
		s := t.byID[it.id]
		if s == nil || s.Ended {
			continue
		}
		if s.Deadline.After(now) { // kept alive since: look again at its new deadline
			heap.Push(&t.expiry, expiryItem{id: s.ID, at: s.Deadline})
			continue
		}
		fn(s)
		if !s.Ended { // not ended after all: it comes up again at the next look
			heap.Push(&t.expiry, expiryItem{id: s.ID, at: s.Deadline})
			return
		}
	}
}

// NextCheck is when Expired should next be called: the earliest deadline the table
// knows of, which may be earlier than a session's real one (kept alive since).
func (t *Table[C]) NextCheck() (time.Time, bool) {
	if len(t.expiry) == 0 {
		return time.Time{}, false
	}
	return t.expiry[0].at, true
}

// expiryHeap orders sessions by deadline. An entry may be out of date (the session
// was kept alive since); Expired checks and pushes it back.
type expiryItem struct {
	id ID
	at time.Time
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
