package baton_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
)

// A caller that waits reads the connection itself (turn.go); when nobody waits, the
// background reader must still read: here a holder that took the turn for its last
// requeues then waits for nothing for six TTLs, and only keepalive answers read in
// the background keep its lease trusted.
func TestLeaseStaysTrustedWhileNobodyWaits(t *testing.T) {
	const ttl = 300 * time.Millisecond
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = ttl })
	c := testutil.Dial(t, srv, "holder")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := c.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if l, err = l.Requeue(ctx, baton.Record{Counter: l.Record.Counter + 1}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-l.Done():
		t.Fatalf("lease ended while held and kept alive: %v", l.Err())
	case <-time.After(6 * ttl): // the observation window: six TTLs of keepalives
	}
	if err := l.Release(ctx, l.Record); err != nil {
		t.Fatalf("release after six TTLs: %v", err)
	}
}

// A caller whose context ends while it reads the connection gives up at once, and
// the connection is left whole for the next caller: no frame lost, no reconnect.
func TestTimedOutReaderLeavesTheConnectionWhole(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	a := testutil.Dial(t, srv, "a")
	b := testutil.Dial(t, srv, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	la, err := a.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	session := b.Info().Session
	for range 20 {
		tctx, tcancel := context.WithTimeout(ctx, 20*time.Millisecond)
		start := time.Now()
		_, err := b.Acquire(tctx, "counter")
		tcancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("try-lock of a held token: %v, want context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("try-lock with a 20ms deadline returned after %s", took)
		}
	}
	waitQueue(t, srv, 0) // every withdrawal has reached the server
	if err := la.Release(ctx, la.Record); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, "counter")
	if err != nil {
		t.Fatalf("acquire after the timed-out tries: %v", err)
	}
	if lb.Fence != la.Fence+1 {
		t.Errorf("fence %d, want %d: a withdrawn try was granted", lb.Fence, la.Fence+1)
	}
	if info := b.Info(); !info.Connected || info.Session != session {
		t.Errorf("after the timed-out tries: connected %v, session %x, want the same session %x", info.Connected, info.Session, session)
	}
}
