package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
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
// with no membership would: it dials the server that last worked; after a failed
// connect, the leader a follower named in its not_leader, else the next server in
// turn. It is the client's Resolve and Follow.
//
// Follow never approves: the client would dial the named address itself, past this
// worker's proxy, and a partition must cut the worker off from every server. It
// notes the leader instead, and the next Resolve (after the client's back-off,
// 50 ms at first) returns that leader's proxy. The client package's own following is
// tested in process (follow_test.go, replication_test.go).
type resolver struct {
	mu     sync.Mutex // guards cur, failed, hint
	routes []route
	cur    int  // the route Resolve returned last
	failed bool // the connect to cur failed
	hint   int  // a route named by a not_leader since; -1 if none
}

func newResolver(routes []route, first int) *resolver {
	return &resolver{routes: routes, cur: first % len(routes), hint: -1}
}

// Resolve is baton.Config.Resolve.
func (r *resolver) Resolve(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.hint >= 0:
		r.cur, r.hint = r.hint, -1
	case r.failed:
		r.cur = (r.cur + 1) % len(r.routes)
	}
	r.failed = false
	return r.routes[r.cur].via, nil
}

// Follow is baton.Config.Follow: it notes a leader named by a follower if it is
// one of the run's servers, and declines.
func (r *resolver) Follow(addr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, rt := range r.routes {
		if rt.real == addr {
			r.hint = i
		}
	}
	return false
}

// connected is baton.Config.OnConnect: after a failed connect, the next Resolve
// moves on.
func (r *resolver) connected(_ string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = err != nil
}
