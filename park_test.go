package baton_test

import (
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/wire"
)

func parked(t *testing.T, srv *testutil.Server) float64 {
	return testutil.Metric(t, srv.Reg, "baton_connections_parked", nil)
}

// A connection quiet for 200 ms is parked: the server watches it without a
// goroutine. Frames wake it, grants reach it while parked, and a client that dies
// while parked still passes its token on at once.
func TestQuietConnectionsAreParkedAndWakeUp(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("connections are parked with epoll, on Linux only")
	}
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = 10 * time.Second })
	a := testutil.DialRaw(t, srv.TokenAddr(), "a")
	b := testutil.DialRaw(t, srv.TokenAddr(), "b")
	testutil.Eventually(t, 5*time.Second, "both quiet connections parked", func() bool { return parked(t, srv) == 2 })

	a.Acquire("counter")
	g := a.AwaitGrant("counter")
	b.Acquire("counter")
	waitQueue(t, srv, 1)
	testutil.Eventually(t, 5*time.Second, "holder and waiter parked again", func() bool { return parked(t, srv) == 2 })
	testutil.Expect(t, a.Release("counter", g.Fence, wire.Record{Counter: 1}), wire.OpReleased)
	gb := b.AwaitGrant("counter") // written to a parked connection
	if gb.Fence != g.Fence+1 || gb.Rec.Counter != 1 {
		t.Fatalf("waiter got %s counter %d, want fence %d counter 1", testutil.Describe(gb), gb.Rec.Counter, g.Fence+1)
	}

	a.Acquire("counter")
	waitQueue(t, srv, 1)
	testutil.Eventually(t, 5*time.Second, "holder parked", func() bool { return parked(t, srv) == 2 })
	b.Conn.Close() // the holder's process dies while its connection is parked
	ga := a.AwaitGrant("counter")
	if ga.Fence != gb.Fence+1 {
		t.Fatalf("after the parked holder died: %s, want fence %d", testutil.Describe(ga), gb.Fence+1)
	}
	if n := testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": "disconnect"}); n != 1 {
		t.Errorf("baton_reclaims_total{reason=disconnect} = %v, want 1", n)
	}
}

// A parked connection silent past its idle limit (twice its TTL and a second) is
// closed by the server.
func TestSilentParkedConnectionIsClosed(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("connections are parked with epoll, on Linux only")
	}
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = 500 * time.Millisecond })
	silent := testutil.DialRaw(t, srv.TokenAddr(), "silent")
	testutil.Eventually(t, 5*time.Second, "the quiet connection parked", func() bool { return parked(t, srv) == 1 })
	start := time.Now()
	for {
		f, err := silent.TryNext(10 * time.Second)
		var ne net.Error
		switch {
		case errors.Is(err, io.EOF):
			t.Logf("closed %s after it parked (idle limit 2s)", time.Since(start).Round(100*time.Millisecond))
			if n := parked(t, srv); n != 0 {
				t.Errorf("%v connections still parked after the close", n)
			}
			return
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatal("a silent connection was still open 10s after it parked; its idle limit is 2s")
		case err != nil:
			t.Fatalf("reading from the silent connection: %v", err)
		case f.Op != wire.OpRevoked && f.Op != wire.OpError:
			t.Fatalf("unexpected %s", testutil.Describe(f))
		}
	}
}
