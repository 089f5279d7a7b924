package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/unreachable"
)

var errFailed = errors.New("connect failed")

// TestResolver: the resolver stays with a server that works, moves on after a
// failed connect, follows a follower's not_leader to one of the run's servers
// unless a connect to it failed unanswered lately, and reaches a server only
// through its proxy.
func TestResolver(t *testing.T) {
	routes, err := parseRoutes("127.0.0.1:7001=127.0.0.1:9001, 127.0.0.1:7002=127.0.0.1:9002,127.0.0.1:7003=127.0.0.1:9003")
	if err != nil {
		t.Fatal(err)
	}
	r := newResolver(routes, 1)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	step := func(want string) {
		t.Helper()
		if got, _ := r.Resolve(ctx); got != want {
			t.Fatalf("Resolve = %s, want %s", got, want)
		}
	}
	notLeader := fmt.Errorf("%w: 127.0.0.1:7002 knows no leader", baton.ErrNotLeader)
	step("127.0.0.1:7002") // the first server it was given
	r.connected("127.0.0.1:7002", nil)
	step("127.0.0.1:7002") // it worked: a reconnect goes there again
	r.connected("127.0.0.1:7002", notLeader)
	step("127.0.0.1:7003") // the next in turn
	r.connected("127.0.0.1:7003", errFailed)
	step("127.0.0.1:7001") // and round
	if r.Follow("127.0.0.1:7003") {
		t.Error("Follow approved a server whose connect failed unanswered just now")
	}
	if !r.Follow("127.0.0.1:7002") {
		t.Error("Follow refused a server that answered not_leader: that is an answer")
	}
	if r.Follow("10.0.0.1:7000") {
		t.Error("Follow approved a server that is not the run's")
	}
	now = now.Add(unreachable.For)
	if !r.Follow("127.0.0.1:7003") {
		t.Errorf("Follow still refuses a server %s after its failed connect", unreachable.For)
	}
	r.connected("127.0.0.1:7003", nil) // followed there, welcomed
	step("127.0.0.1:7003")             // where the last connect ended
	r.connected("", errFailed)         // Resolve's answer was not dialled: no server to blame
	step("127.0.0.1:7001")
	if _, err := parseRoutes(" , "); err == nil {
		t.Error("parseRoutes accepted no server")
	}
	if rs, err := parseRoutes("127.0.0.1:7000"); err != nil || rs[0].via != "127.0.0.1:7000" {
		t.Errorf("a bare address: %v, %v; want its own route", rs, err)
	}
}

// TestResolverDialsThroughTheProxy: Dial reaches a server's proxy, never the
// address asked for, and refuses an address that is not one of the run's servers.
func TestResolverDialsThroughTheProxy(t *testing.T) {
	proxy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	r := newResolver([]route{{real: "127.0.0.1:1", via: proxy.Addr().String()}}, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.Dial(ctx, "127.0.0.1:1") // nothing listens on port 1
	if err != nil {
		t.Fatalf("Dial of a run's server: %v, want its proxy reached", err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != proxy.Addr().String() {
		t.Errorf("connected to %s, want the proxy %s", got, proxy.Addr())
	}
	if c, err := r.Dial(ctx, proxy.Addr().String()); err == nil {
		c.Close()
		t.Error("Dial of an address that is not a server's succeeded")
	}
}
