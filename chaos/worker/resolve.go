package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/baton-dev/baton"
)

// route is one server as this worker reaches it: the server's own token address
// (what a follower's not_leader names) and the harness's proxy in front of it,
// which is the only way this worker may reach it (so that a partition cuts it off
// from every server).
type route struct{ real, via string }

// parseRoutes reads -servers: real=via pairs, comma-separated. A bare address is
// its own route (no proxy).
func parseRoutes(s string) ([]route, error) {
	var out []route
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		real, via, ok := strings.Cut(p, "=")
		if !ok {
			via = real
		}
		if real == "" || via == "" {
			return nil, fmt.Errorf("-servers: %q is not real=via", p)
		}
		out = append(out, route{real, via})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-servers: no server")
	}
	return out, nil
}

// resolver finds the leader from what the token protocol says, the way a client
// with a static list of servers would: it dials the server that last worked, after a
// failed connect the next one in turn, and follows a follower's not_leader to the
// leader it names when that is one of the run's servers (Follow), unless a connect
// to it failed lately (a dead leader goes on being named for a while). It is the
// client's Resolve, Follow, Dial and OnConnect.
//
// Every address the client sees is a server's own token address (what a
// not_leader names); Dial maps it to this worker's proxy to that server and refuses
// any other, so that the worker reaches a server only through its proxy, and a
// partition cuts it off from every server.
type resolver struct {
	mu       sync.Mutex // guards cur, failed, lastFail
	routes   []route
	cur      int               // the route the last connect ended at
	failed   bool              // that connect failed
	lastFail map[int]time.Time // when a connect to a route last failed unanswered (not a not_leader)
	now      func() time.Time
}

// unreachableFor is how long a server whose connect failed unanswered is not
// followed to, as the worker binary does (internal/worker): about an election and
// the new leader's word reaching the followers.
const unreachableFor = 1500 * time.Millisecond

func newResolver(routes []route, first int) *resolver {
	return &resolver{routes: routes, cur: first % len(routes), lastFail: map[int]time.Time{}, now: time.Now}
}

func (r *resolver) index(addr string) int {
	for i, rt := range r.routes {
		if rt.real == addr {
			return i
		}
	}
	return -1
}

// Resolve is baton.Config.Resolve: the server the last connect ended at, or the
// next in turn if it failed.
func (r *resolver) Resolve(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed {
		r.cur = (r.cur + 1) % len(r.routes)
	}
	r.failed = false
	return r.routes[r.cur].real, nil
}

// Follow is baton.Config.Follow: yes to one of the run's servers whose last connect
// did not fail unanswered within unreachableFor.
func (r *resolver) Follow(addr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.index(addr)
	if i < 0 {
		return false
	}
	t, ok := r.lastFail[i]
	return !ok || r.now().Sub(t) >= unreachableFor
}

// Dial is baton.Config.Dial: a server's token address is reached through this
// worker's proxy to it; any other address is refused.
func (r *resolver) Dial(ctx context.Context, addr string) (net.Conn, error) {
	r.mu.Lock()
	i := r.index(addr)
	r.mu.Unlock()
	if i < 0 {
		return nil, fmt.Errorf("%s is not one of the run's servers", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", r.routes[i].via)
}

// connected is baton.Config.OnConnect: the connect ended at server (the last one
// dialled, after any followed); after a failed one, the next Resolve moves on.
func (r *resolver) connected(server string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = err != nil
	i := r.index(server)
	if i < 0 {
		return
	}
	r.cur = i
	switch {
	case err == nil:
		delete(r.lastFail, i)
	case !errors.Is(err, baton.ErrNotLeader): // a not_leader is an answer
		r.lastFail[i] = r.now()
	}
}
