package baton_test

import (
	"runtime"
	"testing"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/wire"
)

// The server's steady path allocates nothing: a keepalive round trip and a release
// and acquire round trip over real TCP, counted in this process's mallocs (the raw
// test client allocates nothing either). A small allowance covers the runtime and
// memberlist's timers running meanwhile.
func TestServerSteadyPathDoesNotAllocate(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	r := testutil.DialRaw(t, srv.TokenAddr(), "a")
	r.Acquire("x")
	g := r.AwaitGrant("x")
	turn := func() {
		r.Send(wire.Frame{Op: wire.OpKeepalive, Seq: 1})
		testutil.Expect(t, r.Next(), wire.OpKeepaliveAck)
		testutil.Expect(t, r.Release("x", g.Fence, wire.Record{Counter: g.Rec.Counter + 1}), wire.OpReleased)
		r.Acquire("x")
		g = r.AwaitGrant("x")
	}
	for range 100 { // warm up: buffers and maps reach their size
		turn()
	}
	const turns = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range turns {
		turn()
	}
	runtime.ReadMemStats(&after)
	if per := float64(after.Mallocs-before.Mallocs) / turns; per > 0.05 {
		t.Fatalf("%.2f allocations per keepalive + release + acquire round trip, want 0", per)
	}
}
