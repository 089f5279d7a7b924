package fsm

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/session"
	"github.com/baton-dev/baton/internal/token"
)

// saved is the whole state, for a snapshot: what a replica that restores it needs
// to apply the next command as the others do. Tokens and sessions are sorted, so
// that the same state always encodes the same way.
type saved struct {
	Epoch      uint64          `json:"epoch"`
	MaxTTL     time.Duration   `json:"max_ttl_ns"`
	LogVersion int             `json:"log_version,omitempty"`
	Tokens     []token.Saved   `json:"tokens"`
	Sessions   []session.Saved `json:"sessions"`
}

// Snapshot encodes the whole state.
func (st *State[C]) Snapshot() ([]byte, error) {
	sv := saved{Epoch: st.Epoch, MaxTTL: st.MaxTTL, LogVersion: st.LogVersion, Tokens: make([]token.Saved, 0, st.Tokens.Len()),
		Sessions: make([]session.Saved, 0, st.Sessions.Len())}
	st.Tokens.Each(func(t *token.Token) { sv.Tokens = append(sv.Tokens, t.Save()) })
	st.Sessions.Each(func(s *session.Session[C]) { sv.Sessions = append(sv.Sessions, s.Save()) })
	slices.SortFunc(sv.Tokens, func(a, b token.Saved) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(sv.Sessions, func(a, b session.Saved) int { return cmp.Compare(a.ID, b.ID) })
	return json.Marshal(&sv)
}

// Restore replaces the state with a snapshot's. Sessions come back alive until
// now + their TTL: their deadlines are not state (see session.Saved). The tables
// are new: a caller must not keep the old ones.
func (st *State[C]) Restore(b []byte, maxTokens int, now time.Time) error {
	var sv saved
	if err := json.Unmarshal(b, &sv); err != nil {
		return fmt.Errorf("fsm: snapshot: %w", err)
	}
	fresh := New[C](maxTokens)
	fresh.Epoch, fresh.MaxTTL, fresh.LogVersion = sv.Epoch, sv.MaxTTL, sv.LogVersion
	for _, t := range sv.Tokens {
		fresh.Tokens.Load(t)
	}
	for _, s := range sv.Sessions {
		fresh.Sessions.Load(s, now)
	}
	*st = *fresh
	return nil
}
