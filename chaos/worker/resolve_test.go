package main

import (
	"context"
	"errors"
	"testing"
)

var errFailed = errors.New("connect failed")

// TestResolver: the resolver stays with a server that works, moves on after a
// failed connect, goes to the leader a follower named, and never lets the client
// follow past its proxies.
func TestResolver(t *testing.T) {
	routes, err := parseRoutes("127.0.0.1:7001=127.0.0.1:9001, 127.0.0.1:7002=127.0.0.1:9002,127.0.0.1:7003=127.0.0.1:9003")
	if err != nil {
		t.Fatal(err)
	}
	r := newResolver(routes, 1)
	ctx := context.Background()
	step := func(want string) {
		t.Helper()
		if got, _ := r.Resolve(ctx); got != want {
			t.Fatalf("Resolve = %s, want %s", got, want)
		}
	}
	step("127.0.0.1:9002") // the first server it was given
	r.connected("127.0.0.1:9002", nil)
	step("127.0.0.1:9002") // it worked: a reconnect goes there again
	r.connected("", errFailed)
	step("127.0.0.1:9003") // the next in turn
	r.connected("", errFailed)
	step("127.0.0.1:9001") // and round
	if r.Follow("127.0.0.1:7003") {
		t.Fatal("Follow approved: the client would dial past the proxy")
	}
	r.connected("", errFailed) // the not_leader fails the connect
	step("127.0.0.1:9003")     // the leader named, through its proxy
	r.Follow("10.0.0.1:7000")  // not one of the run's servers: ignored
	r.connected("", errFailed)
	step("127.0.0.1:9001")
	if _, err := parseRoutes(" , "); err == nil {
		t.Error("parseRoutes accepted no server")
	}
	if rs, err := parseRoutes("127.0.0.1:7000"); err != nil || rs[0].via != "127.0.0.1:7000" {
		t.Errorf("a bare address: %v, %v; want its own route", rs, err)
	}
}
