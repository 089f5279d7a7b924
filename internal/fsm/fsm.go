// Package fsm is the baton server's state machine: every token (internal/token),
// every session (internal/session), the epoch. The state changes only through the
// operations here, which are deterministic: they read no clock, configuration or
// randomness, and take the time and any new id from their caller, the way a
// replicated log's entries carry the time and ids their leader gave them. They do
// no I/O: each appends what followed from it (grants, releases, refusals,
// reclaims, sessions opened and ended) to an ordered list of effects, which the
// server's core turns into replies, metrics and events.
//
// What is not state stays with the caller: which connection serves a session (the
// session's attachment, of type C) and when each session expires (its deadline,
// kept by the session table but moved only by the caller's keepalives and grace).
//
// Invariants kept here, besides those of internal/token and internal/session:
//   - a session's requests are exactly its holds and waits in the token table;
//   - a release is applied at most once per session and request seq: sent again,
//     it gets the answer it first had (session.Answers);
//   - a release changes nothing unless it comes from the holder's session with the
//     current fence, and every refusal says why.
package fsm

import (
	"cmp"
	"errors"
	"slices"
	"time"

	"github.com/baton-dev/baton/internal/session"
	"github.com/baton-dev/baton/internal/token"
	"github.com/baton-dev/baton/internal/wire"
)

// Kind says what an effect is.
type Kind uint8

const (
	// Granted: Session holds Token under Fence for its acquire Seq; Rec is the record
	// as the last holder left it, Waited how long the acquire queued.
	Granted Kind = iota + 1
	// Queued: Session's acquire Seq of Token waits at place Pos.
	Queued
	// AcquireRefused: Session's acquire Seq was refused: Err (token.ErrDuplicate,
	// ErrTooMany, ErrBadName).
	AcquireRefused
	// Released: Session's release Seq of Token at Fence was applied; Held is how long
	// the lease lasted. Requeue says the same seq now queues for the token again.
	Released
	// ReleasedBefore: Session's release Seq was applied earlier, and sent again: the
	// same answer, nothing changed now. Fence is the fence it released.
	ReleasedBefore
	// ReleaseRefused: Session's release Seq of Token at Fence changed nothing: Code
	// and Reason say why (stale_fence, lease_lost, session_expired, outcome_unknown,
	// not_held for a token that does not exist); Current is the token's fence.
	ReleaseRefused
	// Reclaimed: Session's hold of Token at Fence was taken back without a release,
	// for Reason (disconnect, expired, reboot, goodbye, cancel); Held is how long it
	// lasted. Revoke says the holder must be told.
	Reclaimed
	// Cancelled: Session's request Seq of Token left the queue (or its hold was given
	// back) at its own asking, or for Reason when the server dropped it (a member that
	// died or left).
	Cancelled
	// SessionOpened: Session was opened for Node.
	SessionOpened
	// SessionEnded: Session of Node ended for Reason.
	SessionEnded
)

// Effect is one thing that followed from an operation. Only the fields its Kind
// names are meaningful: a flat struct keeps the list free of allocation.
type Effect[C any] struct {
	Kind    Kind
	Session session.ID
	// S is the session the effect concerns, ended or not (its attachment says whom to
	// tell); nil for a session the state does not know.
	S       *session.Session[C]
	Seq     uint64
	Token   string
	Fence   uint64
	Current uint64
	Rec     wire.Record
	Pos     int
	Waited  time.Duration
	Held    time.Duration
	Requeue bool
	Revoke  bool
	Code    wire.Code
	Reason  string
	Node    string
	Err     error
}

// State is the whole state machine. C is the type of a session's attachment.
type State[C any] struct {
	Tokens   *token.Table
	Sessions *session.Table[C]
	Epoch    uint64
	// MaxTTL is the longest TTL any session got: how long a server that starts from
	// this state must hold back grants of tokens that were held (a lease of the
	// process before may still be trusted).
	MaxTTL time.Duration
	// LogVersion is the log every server of the cluster reads, as a leader found
	// and recorded it (OpLogVersion); it never goes back. From 2 on, leaders open
	// each batch with its term.
	LogVersion int

	fx []Effect[C]
}

// New returns an empty state that accepts at most maxTokens tokens.
func New[C any](maxTokens int) *State[C] {
	return &State[C]{Tokens: token.NewTable(maxTokens), Sessions: session.NewTable[C]()}
}

// Effects returns what followed from the operations since the last Reset, in order.
// The slice is reused: read it before the next operation.
func (st *State[C]) Effects() []Effect[C] { return st.fx }

// Reset forgets the effects, keeping their storage.
func (st *State[C]) Reset() {
	clear(st.fx)
	st.fx = st.fx[:0]
}

// add appends a zero effect of kind k and returns it, to be filled in where it lies.
func (st *State[C]) add(k Kind) *Effect[C] {
	if len(st.fx) < cap(st.fx) {
		st.fx = st.fx[:len(st.fx)+1]
	} else {
		st.fx = append(st.fx, Effect[C]{})
	}
	e := &st.fx[len(st.fx)-1]
	e.Kind = k
	return e
}

// Hello opens a session for node's process boot, or resumes session resume if it is
// that process's and still alive; a new session gets id newID. Any other session of
// the node ends first: a node that comes back with another boot id is a new process,
// and whatever its old one held passes on. ttl is the session's TTL from now on.
func (st *State[C]) Hello(node, boot string, resume, newID session.ID, ttl time.Duration, now time.Time) (s *session.Session[C], resumed bool) {
	var stale []*session.Session[C]
	st.Sessions.Each(func(old *session.Session[C]) {
		if old.Node == node && old.BootID != boot {
			stale = append(stale, old)
		}
	})
	// In id order: which of them ends first decides who is granted what.
	slices.SortFunc(stale, func(a, b *session.Session[C]) int { return cmp.Compare(a.ID, b.ID) })
	for _, old := range stale {
		st.EndSession(old.ID, "reboot", now)
	}
	st.MaxTTL = max(st.MaxTTL, ttl)
	if s = st.Sessions.Get(resume); resume != 0 && s != nil && s.Node == node && s.BootID == boot {
		st.Sessions.SetTTL(s, ttl)
		return s, true
	}
	s = st.Sessions.Open(newID, node, boot, ttl, now)
	e := st.add(SessionOpened)
	e.Session, e.S, e.Node = newID, s, node
	return s, false
}

// Acquire queues session id's request seq for token name, or grants it at once.
func (st *State[C]) Acquire(id session.ID, seq uint64, name string, now time.Time) {
	s := st.Sessions.Get(id)
	if s == nil {
		return
	}
	g, ok, pos, err := st.Tokens.Acquire(id, seq, name, now)
	switch {
	case err != nil:
		e := st.add(AcquireRefused)
		e.Session, e.S, e.Seq, e.Token, e.Err = id, s, seq, name, err
	case ok:
		s.Requests[name] = seq
		st.granted(&g)
	default:
		s.Requests[name] = seq
		s.Waited++
		e := st.add(Queued)
		e.Session, e.S, e.Seq, e.Token, e.Pos = id, s, seq, name, pos
	}
}

// granted records a grant, whichever way it came about.
func (st *State[C]) granted(g *token.Grant) {
	s := st.Sessions.Get(g.Session)
	if s != nil {
		s.Grants++
	}
	e := st.add(Granted)
	e.S = s
	e.Session, e.Seq, e.Token, e.Fence, e.Rec, e.Waited = g.Session, g.Seq, g.Token, g.Fence, g.Rec, g.Waited
}

// Release gives back session id's hold of token name at fence, storing rec.Counter,
// for its release seq; with requeue, the same seq then queues for the token again.
// A release the session had applied already is answered as it was then.
func (st *State[C]) Release(id session.ID, seq uint64, name string, fence uint64, rec wire.Record, requeue bool, now time.Time) {
	s := st.Sessions.Get(id)
	if s == nil {
		st.releaseAfterEnd(id, seq, name, fence)
		return
	}
	if !s.Answers.IsNew(seq) && st.releasedBefore(s, seq, name, fence, requeue, now) {
		return
	}
	held, next, ok, err := st.Tokens.Release(id, name, fence, rec, now)
	if err != nil {
		st.refuseRelease(id, seq, name, fence, err)
		return
	}
	s.Answers.Record(seq, fence)
	delete(s.Requests, name)
	e := st.add(Released)
	e.S = s
	e.Session, e.Seq, e.Token, e.Fence, e.Held, e.Requeue = id, seq, name, fence, held, requeue
	if ok {
		st.granted(&next)
	}
	if requeue {
		// After the handoff: the requester goes to the back of the queue.
		st.Acquire(id, seq, name, now)
	}
}

// releasedBefore answers a release that is not new: its client lost the connection
// before the answer came and sent it again on the resumed session. One the session
// applied gets the answer it had; false means it was never applied, and it is judged
// as a new one.
//
//go:noinline
func (st *State[C]) releasedBefore(s *session.Session[C], seq uint64, name string, fence uint64, requeue bool, now time.Time) bool {
	was, applied, forgotten := s.Answers.Recall(seq)
	switch {
	case applied:
	case seq != 0 && s.Requests[name] == seq:
		// A requeue's acquire is queued under its release's seq, and only once the
		// release was applied: its place in line is the proof.
		was = fence
	case forgotten && !st.holds(s.ID, name, fence):
		st.refused(s.ID, seq, name, fence, wire.CodeOutcomeUnknown, "outcome_unknown")
		return true
	default:
		return false
	}
	e := st.add(ReleasedBefore)
	e.S = s
	e.Session, e.Seq, e.Token, e.Fence = s.ID, seq, name, was
	if _, queued := s.Requests[name]; requeue && !queued {
		st.Acquire(s.ID, seq, name, now) // the requeue's place in line was given up since
	}
	return true
}

// holds reports that session id holds token name at fence: then no release of that
// lease has been applied (fences only grow), whatever the memory has forgotten.
func (st *State[C]) holds(id session.ID, name string, fence uint64) bool {
	t := st.Tokens.Get(name)
	return t != nil && t.Holder == id && t.Fence == fence
}

// releaseAfterEnd refuses a release from a session that has ended: stale if the
// token was granted since, else the session's expiry took the lease.
//
//go:noinline
func (st *State[C]) releaseAfterEnd(id session.ID, seq uint64, name string, fence uint64) {
	switch t := st.Tokens.Get(name); {
	case t == nil:
		st.refused(id, seq, name, fence, wire.CodeNotHeld, "not_held")
	case fence != t.Fence:
		st.refused(id, seq, name, fence, wire.CodeStaleFence, "stale_fence")
	default:
		st.refused(id, seq, name, fence, wire.CodeSessionExpired, "session_expired")
	}
}

// refuseRelease says why the token table refused a release.
//
//go:noinline
func (st *State[C]) refuseRelease(id session.ID, seq uint64, name string, fence uint64, err error) {
	switch {
	case st.Tokens.Get(name) == nil:
		st.refused(id, seq, name, fence, wire.CodeNotHeld, "not_held")
	case errors.Is(err, token.ErrStaleFence):
		st.refused(id, seq, name, fence, wire.CodeStaleFence, "stale_fence")
	default:
		st.refused(id, seq, name, fence, wire.CodeNotHeld, "lease_lost")
	}
}

func (st *State[C]) refused(id session.ID, seq uint64, name string, fence uint64, code wire.Code, reason string) {
	e := st.add(ReleaseRefused)
	e.Session, e.Seq, e.Token, e.Fence, e.Code, e.Reason = id, seq, name, fence, code, reason
	if t := st.Tokens.Get(name); t != nil {
		e.Current = t.Fence
	}
}

// Cancel withdraws session id's request seq of token name, held or waiting: a hold
// given back this way (the cancel crossed the grant, or the client stopped trusting
// its lease) passes on at once.
func (st *State[C]) Cancel(id session.ID, seq uint64, name string, now time.Time) {
	s := st.Sessions.Get(id)
	if s != nil {
		d := st.Tokens.Drop(id, seq, name, now)
		if d.Found {
			delete(s.Requests, name)
		}
		st.dropped(s, name, "cancel", false, &d)
	}
	e := st.add(Cancelled)
	e.Session, e.S, e.Seq, e.Token = id, s, seq, name
}

// dropped records what a Drop took away and the grant that followed.
func (st *State[C]) dropped(s *session.Session[C], name, reason string, revoke bool, d *token.Dropped) {
	if d.WasHolder {
		e := st.add(Reclaimed)
		e.S = s
		e.Session, e.Node, e.Token, e.Fence, e.Held, e.Reason, e.Revoke = s.ID, s.Node, name, d.Fence, d.Held, reason, revoke
	}
	if d.Granted {
		st.granted(&d.Next)
	}
}

// EndSession ends session id for reason: every token it holds passes to the next
// waiter (a reclaim), its waits leave their queues.
func (st *State[C]) EndSession(id session.ID, reason string, now time.Time) {
	s := st.Sessions.Get(id)
	if s == nil {
		return
	}
	st.Sessions.End(s)
	for _, name := range requestsInOrder(s) {
		d := st.Tokens.Drop(id, 0, name, now)
		st.dropped(s, name, reason, true, &d)
	}
	s.Requests = nil
	e := st.add(SessionEnded)
	e.Session, e.S, e.Node, e.Reason = id, s, s.Node, reason
}

// DropWaiters takes session id's waiting requests out of their queues, for reason
// (its member died or left); its holds stay until the session ends.
func (st *State[C]) DropWaiters(id session.ID, reason string, now time.Time) {
	s := st.Sessions.Get(id)
	if s == nil {
		return
	}
	for _, name := range requestsInOrder(s) {
		seq := s.Requests[name]
		if t := st.Tokens.Get(name); t.Holder == id {
			continue // a holder keeps its lease until its session ends
		}
		if st.Tokens.Drop(id, seq, name, now).Found {
			delete(s.Requests, name)
			e := st.add(Cancelled)
			e.Session, e.S, e.Seq, e.Token, e.Reason = id, s, seq, name, reason
		}
	}
}

// requestsInOrder is the tokens of s's requests by name: a map's order would make
// the effects' order differ from one replica to the next.
func requestsInOrder[C any](s *session.Session[C]) []string {
	names := make([]string, 0, len(s.Requests))
	for name := range s.Requests {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Restart starts a new epoch.
func (st *State[C]) Restart() { st.Epoch++ }

// Import puts back a token kept by an earlier version's state file: its fence, record
// and counts; one held when that server stopped is granted only from notBefore on
// (a lease of the old process may still be trusted until then).
func (st *State[C]) Import(name string, fence uint64, rec wire.Record, grants, releases uint64, notBefore time.Time) {
	st.Tokens.Restore(name, fence, rec, grants, releases, notBefore)
}

// Unblock grants the tokens whose grace after a crash has passed.
func (st *State[C]) Unblock(now time.Time) {
	st.Tokens.Unblock(now, func(g token.Grant) { st.granted(&g) })
}
