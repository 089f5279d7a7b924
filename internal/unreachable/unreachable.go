// Package unreachable remembers the servers whose last connect went unanswered, for
// a client's Config.Resolve and Config.Follow to avoid them a while: a dead leader
// goes on being named by the membership and by followers until the cluster has
// replaced it, and each connect to it costs a timeout. Both the worker binary and
// the chaos harness's worker use it.
package unreachable

import (
	"errors"
	"sync"
	"time"

	"github.com/baton-dev/baton"
)

// For is how long a server whose connect failed (it did not answer, or hung up) is
// avoided: about an election and the new leader's word reaching the membership, so
// that the connects made while the cluster replaces a dead leader go to the
// servers that will know the new one; and well within a TTL, as a live leader that
// failed one connect is refused for as long.
const For = 1500 * time.Millisecond

// Set remembers when a connect to each server last failed for want of an answer; a
// not_leader answer or a refusal is an answer. The zero Set is ready; it is safe
// for concurrent use.
type Set struct {
	mu sync.Mutex
	at map[string]time.Time
}

// Connected takes how a connect to server ended (Config.OnConnect's arguments);
// "" names no server.
func (u *Set) Connected(server string, err error, now time.Time) {
	if server == "" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err == nil || errors.Is(err, baton.ErrNotLeader) || errors.Is(err, baton.ErrRefused) {
		delete(u.at, server)
		return
	}
	if u.at == nil {
		u.at = map[string]time.Time{}
	}
	u.at[server] = now
}

// Recently says whether a connect to server failed unanswered less than For
// before now.
func (u *Set) Recently(server string, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	at, ok := u.at[server]
	return ok && now.Sub(at) < For
}
