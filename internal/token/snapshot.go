package token

import (
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// Saved is a token's whole state, for a snapshot of a replicated state machine: a
// table restored from it behaves as the one it was taken from.
type Saved struct {
	Name      string        `json:"name"`
	Fence     uint64        `json:"fence"`
	Holder    SessionID     `json:"holder,omitempty"`
	HolderSeq uint64        `json:"holder_seq,omitempty"`
	HeldSince time.Time     `json:"held_since,omitzero"`
	Rec       wire.Record   `json:"rec"`
	Grants    uint64        `json:"grants"`
	Releases  uint64        `json:"releases"`
	NotBefore time.Time     `json:"not_before,omitzero"`
	Queue     []SavedWaiter `json:"queue,omitempty"`
}

// SavedWaiter is a queued acquire in a Saved token.
type SavedWaiter struct {
	Session SessionID `json:"session"`
	Seq     uint64    `json:"seq"`
	Since   time.Time `json:"since"`
}

// Save returns t's whole state.
func (t *Token) Save() Saved {
	s := Saved{Name: t.Name, Fence: t.Fence, Holder: t.Holder, HolderSeq: t.HolderSeq, HeldSince: t.HeldSince,
		Rec: t.Rec, Grants: t.Grants, Releases: t.Releases, NotBefore: t.NotBefore}
	for _, w := range t.queue[t.head:] {
		s.Queue = append(s.Queue, SavedWaiter{Session: w.session, Seq: w.seq, Since: w.since})
	}
	return s
}

// Load puts a saved token back, replacing any of that name.
func (tb *Table) Load(s Saved) {
	t := &Token{Name: s.Name, Fence: s.Fence, Holder: s.Holder, HolderSeq: s.HolderSeq, HeldSince: s.HeldSince,
		Rec: s.Rec, Grants: s.Grants, Releases: s.Releases, NotBefore: s.NotBefore}
	for _, w := range s.Queue {
		t.push(waiter{session: w.Session, seq: w.Seq, since: w.Since})
	}
	tb.tokens[s.Name] = t
}
