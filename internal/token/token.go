// Package token is the per-token state machine of the baton server: fence sequence,
// holder, FIFO queue of waiting sessions and the shared record. It does no I/O, keeps
// no clock of its own and is not safe for concurrent use: the server's core goroutine
// owns a Table and is the only caller.
//
// Invariants kept here:
//   - a token has at most one holder; a grant always carries fence = previous fence + 1;
//   - the record changes only through Release with the holder's current fence;
//   - waiters are granted strictly in arrival order (FIFO);
//   - a session appears at most once per token, as holder or as waiter.
package token

import (
	"errors"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// SessionID names a client session. Zero means none.
type SessionID uint64

// Errors returned by Table operations.
var (
	ErrStaleFence = errors.New("token: stale fence")
	ErrNotHeld    = errors.New("token: not held by this session")
	ErrDuplicate  = errors.New("token: session already holds or waits for this token")
	ErrTooMany    = errors.New("token: too many tokens")
	ErrBadName    = errors.New("token: bad token name")
)

// Grant is a token handed to a session: the server tells that session at once.
type Grant struct {
	Token   string
	Session SessionID
	Seq     uint64 // the acquire this grant answers
	Fence   uint64
	Rec     wire.Record
	Waited  time.Duration // from the acquire to this grant
}

// waiter is a queued acquire.
type waiter struct {
	session SessionID
	seq     uint64
	since   time.Time
}

// Token is one named token. Exported fields are read-only outside this package.
type Token struct {
	Name      string
	Fence     uint64 // the fence of the latest grant; the next grant gets Fence+1
	Holder    SessionID
	HolderSeq uint64
	HeldSince time.Time
	Rec       wire.Record
	Grants    uint64
	Releases  uint64 // releases accepted: with honest holders, equal to Rec.Counter
	// NotBefore holds back every grant until then: after a crash the server cannot
	// know which leases of the old process are still trusted, so it waits a TTL.
	NotBefore time.Time

	queue []waiter // FIFO; queue[head:] are waiting
	head  int
	// queued indexes the waiting sessions while the queue is long, so that the
	// duplicate check on every acquire does not scan hundreds of waiters; a short
	// queue is scanned, which costs less than keeping a map.
	queued map[SessionID]struct{}
}

// indexFrom is the queue length from which waiters are indexed; the index goes when
// the queue empties.
const indexFrom = 32

// QueueLen is the number of sessions waiting.
func (t *Token) QueueLen() int { return len(t.queue) - t.head }

// Waiters returns the waiting sessions in order.
func (t *Token) Waiters() []SessionID {
	out := make([]SessionID, 0, t.QueueLen())
	for _, w := range t.queue[t.head:] {
		out = append(out, w.session)
	}
	return out
}

func (t *Token) push(w waiter) {
	if t.head > 0 && len(t.queue) == cap(t.queue) && t.head >= len(t.queue)/2 {
		// Full at the back, at least half of it popped: slide the waiters down. A
		// queue that never empties (clients that requeue) would otherwise have append
		// copy the popped prefix into ever larger arrays.
		n := copy(t.queue, t.queue[t.head:])
		clear(t.queue[n:])
		t.queue, t.head = t.queue[:n], 0
	}
	t.queue = append(t.queue, w)
	switch {
	case t.queued != nil:
		t.queued[w.session] = struct{}{}
	case t.QueueLen() > indexFrom:
		t.queued = make(map[SessionID]struct{}, 2*t.QueueLen())
		for _, w := range t.queue[t.head:] {
			t.queued[w.session] = struct{}{}
		}
	}
}

func (t *Token) pop() waiter {
	w := t.queue[t.head]
	t.queue[t.head] = waiter{}
	t.head++
	if t.queued != nil {
		delete(t.queued, w.session)
	}
	t.resetIfEmpty()
	return w
}

// resetIfEmpty starts an emptied queue over at the front of its array, without an
// index.
func (t *Token) resetIfEmpty() {
	if t.head == len(t.queue) {
		t.queue, t.head, t.queued = t.queue[:0], 0, nil
	}
}

func (t *Token) waiting(s SessionID) bool {
	if t.queued != nil {
		_, ok := t.queued[s]
		return ok
	}
	for _, w := range t.queue[t.head:] {
		if w.session == s {
			return true
		}
	}
	return false
}

// grantNext hands the free token to the first waiter, if any and if allowed now.
func (t *Token) grantNext(now time.Time) (Grant, bool) {
	if t.Holder != 0 || t.QueueLen() == 0 || now.Before(t.NotBefore) {
		return Grant{}, false
	}
	w := t.pop()
	return t.grant(w, now), true
}

func (t *Token) grant(w waiter, now time.Time) Grant {
	t.Fence++
	t.Grants++
	t.Holder, t.HolderSeq, t.HeldSince = w.session, w.seq, now
	return Grant{Token: t.Name, Session: w.session, Seq: w.seq, Fence: t.Fence, Rec: t.Rec, Waited: now.Sub(w.since)}
}

// Table holds every token the server knows. Tokens are never forgotten: a fence,
// once issued, must keep growing.
type Table struct {
	tokens map[string]*Token
	max    int
}

// NewTable returns an empty table that accepts at most max tokens.
func NewTable(max int) *Table { return &Table{tokens: make(map[string]*Token), max: max} }

// Get returns the token named name, or nil.
func (tb *Table) Get(name string) *Token { return tb.tokens[name] }

// Len is the number of tokens.
func (tb *Table) Len() int { return len(tb.tokens) }

// Each calls fn for every token, in no particular order.
func (tb *Table) Each(fn func(*Token)) {
	for _, t := range tb.tokens {
		fn(t)
	}
}

// Restore puts a token back from persisted state, before any operation.
func (tb *Table) Restore(name string, fence uint64, rec wire.Record, grants, releases uint64, notBefore time.Time) {
	tb.tokens[name] = &Token{Name: name, Fence: fence, Rec: rec, Grants: grants, Releases: releases, NotBefore: notBefore}
}

func (tb *Table) lookup(name string, create bool) (*Token, error) {
	if t, ok := tb.tokens[name]; ok {
		return t, nil
	}
	if name == "" || len(name) > wire.MaxName {
		return nil, ErrBadName
	}
	if !create {
		return nil, ErrNotHeld
	}
	if len(tb.tokens) >= tb.max {
		return nil, ErrTooMany
	}
	t := &Token{Name: name}
	tb.tokens[name] = t
	return t, nil
}

// Acquire asks for the token on behalf of session s's request seq. If the token is
// free and nobody waits, it is granted at once; otherwise the request queues, counts
// as a wait, and pos is its 1-based place in the queue.
func (tb *Table) Acquire(s SessionID, seq uint64, name string, now time.Time) (g Grant, granted bool, pos int, err error) {
	t, err := tb.lookup(name, true)
	if err != nil {
		return Grant{}, false, 0, err
	}
	if t.Holder == s || t.waiting(s) {
		return Grant{}, false, 0, ErrDuplicate
	}
	w := waiter{session: s, seq: seq, since: now}
	if t.Holder == 0 && t.QueueLen() == 0 && !now.Before(t.NotBefore) {
		return t.grant(w, now), true, 0, nil
	}
	t.Rec.Waits++
	t.push(w)
	return Grant{}, false, t.QueueLen(), nil
}

// Release ends s's hold of the token if fence is current, stores rec.Counter (the
// server keeps Waits), and grants the token to the next waiter. A release changes
// nothing when its fence is not the current one (ErrStaleFence: the token was granted
// again since) or when s does not hold the token under the current fence (ErrNotHeld:
// the lease was taken back, or a server restarted from its state does not know the
// session, and nobody has been granted since).
func (tb *Table) Release(s SessionID, name string, fence uint64, rec wire.Record, now time.Time) (held time.Duration, next Grant, granted bool, err error) {
	t, err := tb.lookup(name, false)
	if err != nil {
		return 0, Grant{}, false, err
	}
	if fence != t.Fence {
		return 0, Grant{}, false, ErrStaleFence
	}
	if t.Holder != s || s == 0 {
		return 0, Grant{}, false, ErrNotHeld
	}
	t.Rec.Counter = rec.Counter
	t.Releases++
	held = now.Sub(t.HeldSince)
	t.Holder, t.HolderSeq = 0, 0
	next, granted = t.grantNext(now)
	return held, next, granted, nil
}

// Dropped says what Drop took away and what followed.
type Dropped struct {
	Found     bool          // the session held or waited for the token with that request
	WasHolder bool          // it held it: Fence and Held describe that lease
	Fence     uint64        // the fence of the lease taken away
	Held      time.Duration // how long it was held
	Next      Grant         // the grant that followed, if Granted
	Granted   bool
}

// Drop takes the token away from session s without touching the record, whether s
// holds it or waits for it: a cancel, a reclaim after the session ended, a waiter
// whose node died. A non-zero seq drops only that request, so a late cancel cannot
// touch a newer one.
func (tb *Table) Drop(s SessionID, seq uint64, name string, now time.Time) (d Dropped) {
	t := tb.tokens[name]
	if t == nil {
		return d
	}
	if t.Holder == s && (seq == 0 || t.HolderSeq == seq) {
		d.Found, d.WasHolder, d.Fence, d.Held = true, true, t.Fence, now.Sub(t.HeldSince)
		t.Holder, t.HolderSeq = 0, 0
		d.Next, d.Granted = t.grantNext(now)
		return d
	}
	for i := t.head; i < len(t.queue); i++ {
		if w := t.queue[i]; w.session == s && (seq == 0 || w.seq == seq) {
			copy(t.queue[i:], t.queue[i+1:])
			t.queue[len(t.queue)-1] = waiter{}
			t.queue = t.queue[:len(t.queue)-1]
			if t.queued != nil {
				delete(t.queued, s)
			}
			t.resetIfEmpty()
			d.Found = true
			return d
		}
	}
	return d
}

// Unblock grants tokens whose NotBefore has passed; fn gets each grant.
func (tb *Table) Unblock(now time.Time, fn func(Grant)) {
	for _, t := range tb.tokens {
		if g, ok := t.grantNext(now); ok {
			fn(g)
		}
	}
}
