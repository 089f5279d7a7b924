package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/baton-dev/baton/internal/unreachable"
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
	mu          sync.Mutex // guards cur, failed
	routes      []route
	cur         int             // the route the last connect ended at
	failed      bool            // that connect failed
	unreachable unreachable.Set // servers whose connect failed unanswered lately, as the worker binary keeps
	now         func() time.Time
}

func newResolver(routes []route, first int) *resolver {
	return &resolver{routes: routes, cur: first % len(routes), now: time.Now}
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
// did not fail unanswered within unreachable.For.
func (r *resolver) Follow(addr string) bool {
	r.mu.Lock()
	known := r.index(addr) >= 0
	r.mu.Unlock()
	return known && !r.unreachable.Recently(addr, r.now())
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
	r.unreachable.Connected(server, err, r.now())
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = err != nil
	if i := r.index(server); i >= 0 {
		r.cur = i
	}
}
