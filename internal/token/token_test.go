package token

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

var t0 = time.Unix(1_700_000_000, 0)

func TestFIFOAndFencesStrictlyIncrease(t *testing.T) {
	tb := NewTable(10)
	g, ok, _, err := tb.Acquire(1, 1, "x", t0)
	if err != nil || !ok || g.Fence != 1 {
		t.Fatalf("first acquire: grant %+v ok %v err %v, want fence 1 at once", g, ok, err)
	}
	for s := SessionID(2); s <= 5; s++ {
		_, ok, pos, err := tb.Acquire(s, 1, "x", t0)
		if err != nil || ok || pos != int(s-1) {
			t.Fatalf("session %d: ok %v pos %d err %v, want queued at %d", s, ok, pos, err, s-1)
		}
	}
	holder, fence := SessionID(1), g.Fence
	for want := SessionID(2); want <= 5; want++ {
		_, next, ok, err := tb.Release(holder, "x", fence, wire.Record{Counter: uint64(want - 1)}, t0)
		if err != nil || !ok {
			t.Fatalf("release by %d: ok %v err %v", holder, ok, err)
		}
		if next.Session != want {
			t.Fatalf("granted to %d, want %d (FIFO)", next.Session, want)
		}
		if next.Fence != fence+1 {
			t.Fatalf("fence %d after %d, want +1", next.Fence, fence)
		}
		if next.Rec.Counter != uint64(want-1) {
			t.Fatalf("next holder sees counter %d, want %d", next.Rec.Counter, want-1)
		}
		holder, fence = next.Session, next.Fence
	}
	if got := tb.Get("x").Rec.Waits; got != 4 {
		t.Errorf("waits %d, want 4 (four acquires queued)", got)
	}
}

func TestStaleReleaseChangesNothing(t *testing.T) {
	tb := NewTable(10)
	g1, _, _, _ := tb.Acquire(1, 1, "x", t0)
	tb.Acquire(2, 1, "x", t0)
	// Session 1's hold is taken back (its session ended); 2 holds fence 2.
	d := tb.Drop(1, 0, "x", t0)
	if !d.WasHolder || d.Fence != g1.Fence || !d.Granted || d.Next.Session != 2 {
		t.Fatalf("drop: %+v", d)
	}
	before := *tb.Get("x")
	_, _, _, err := tb.Release(1, "x", g1.Fence, wire.Record{Counter: 1000}, t0)
	if !errors.Is(err, ErrStaleFence) {
		t.Fatalf("late release: %v, want ErrStaleFence", err)
	}
	after := *tb.Get("x")
	if after.Rec != before.Rec || after.Fence != before.Fence || after.Holder != before.Holder || after.Releases != before.Releases {
		t.Fatalf("stale release changed the token: %+v → %+v", before, after)
	}
	// A session that is not the holder but quotes the current fence is refused too.
	if _, _, _, err := tb.Release(3, "x", after.Fence, wire.Record{}, t0); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("release by a non-holder: %v, want ErrNotHeld", err)
	}
}

// A token restored after a crash has no holder: a release quoting its current fence
// comes from a session the new process does not know. It is not stale (nobody was
// granted since) and changes nothing: ErrNotHeld.
func TestReleaseUnderCurrentFenceWithoutHolderIsNotHeld(t *testing.T) {
	tb := NewTable(10)
	tb.Restore("x", 7, wire.Record{Counter: 3}, 7, 3, time.Time{})
	if _, _, _, err := tb.Release(1, "x", 7, wire.Record{Counter: 1000}, t0); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("release at the current fence by an unknown session: %v, want ErrNotHeld", err)
	}
	if _, _, _, err := tb.Release(1, "x", 6, wire.Record{Counter: 1000}, t0); !errors.Is(err, ErrStaleFence) {
		t.Fatalf("release at an older fence: %v, want ErrStaleFence", err)
	}
	if tk := tb.Get("x"); tk.Rec.Counter != 3 || tk.Releases != 3 || tk.Fence != 7 {
		t.Fatalf("refused releases changed the token: %+v", tk)
	}
}

func TestDropBySeqIgnoresOtherRequests(t *testing.T) {
	tb := NewTable(10)
	tb.Acquire(1, 7, "x", t0)
	if d := tb.Drop(1, 6, "x", t0); d.Found {
		t.Fatalf("a cancel of request 6 dropped request 7: %+v", d)
	}
	if d := tb.Drop(1, 7, "x", t0); !d.WasHolder {
		t.Fatalf("cancel of request 7: %+v", d)
	}
	tb.Acquire(2, 1, "x", t0)
	tb.Acquire(3, 1, "x", t0)
	if d := tb.Drop(3, 1, "x", t0); !d.Found || d.WasHolder {
		t.Fatalf("drop waiter: %+v", d)
	}
	if got := tb.Get("x").QueueLen(); got != 0 {
		t.Fatalf("queue %d after the only waiter left, want 0", got)
	}
}

func TestDuplicateAndLimits(t *testing.T) {
	tb := NewTable(1)
	tb.Acquire(1, 1, "x", t0)
	if _, _, _, err := tb.Acquire(1, 2, "x", t0); !errors.Is(err, ErrDuplicate) {
		t.Errorf("second acquire by the holder: %v, want ErrDuplicate", err)
	}
	if _, _, _, err := tb.Acquire(1, 3, "y", t0); !errors.Is(err, ErrTooMany) {
		t.Errorf("token beyond the limit: %v, want ErrTooMany", err)
	}
	if _, _, _, err := tb.Acquire(1, 4, "", t0); !errors.Is(err, ErrBadName) {
		t.Errorf("empty name: %v, want ErrBadName", err)
	}
}

func TestNotBeforeHoldsGrantsUntilUnblock(t *testing.T) {
	tb := NewTable(10)
	tb.Restore("x", 41, wire.Record{Counter: 40}, 41, 40, t0.Add(time.Second))
	if _, ok, pos, _ := tb.Acquire(1, 1, "x", t0); ok || pos != 1 {
		t.Fatalf("granted during the grace period (ok %v pos %d)", ok, pos)
	}
	var got []Grant
	tb.Unblock(t0.Add(500*time.Millisecond), func(g Grant) { got = append(got, g) })
	if len(got) != 0 {
		t.Fatalf("unblocked early: %+v", got)
	}
	tb.Unblock(t0.Add(time.Second), func(g Grant) { got = append(got, g) })
	if len(got) != 1 || got[0].Fence != 42 {
		t.Fatalf("after the grace: %+v, want one grant with fence 42", got)
	}
}

// The hot path, release then the next waiter's acquire, allocates nothing once the
// token and its queue exist, and a queue that never empties (every holder queues
// again at once, as Requeue does) keeps its size: with a short queue, scanned, and a
// long one, indexed.
func TestHandoffDoesNotAllocate(t *testing.T) {
	for _, sessions := range []SessionID{4, 512} {
		tb := NewTable(10)
		for s := SessionID(1); s <= sessions; s++ {
			tb.Acquire(s, 1, "x", t0)
		}
		holder, fence, seq := SessionID(1), uint64(1), uint64(1)
		allocs := testing.AllocsPerRun(100000, func() {
			seq++
			_, next, _, err := tb.Release(holder, "x", fence, wire.Record{}, t0)
			if err != nil {
				t.Fatal(err)
			}
			tb.Acquire(holder, seq, "x", t0)
			holder, fence = next.Session, next.Fence
		})
		if allocs != 0 {
			t.Errorf("%d sessions: %.3f allocations per handoff, want 0", sessions, allocs)
		}
		if tok := tb.Get("x"); cap(tok.queue) > 4*int(sessions) {
			t.Errorf("queue array of %d for %d waiters after 100000 handoffs: the popped prefix is kept", cap(tok.queue), tok.QueueLen())
		}
	}
}

// A long queue is indexed: duplicates are still refused, a waiter dropped from the
// middle may queue again (at the back), order holds, and the index goes with the
// queue.
func TestLongQueueRefusesDuplicatesAndKeepsOrder(t *testing.T) {
	tb := NewTable(10)
	const n = 3 * indexFrom
	for s := SessionID(1); s <= n; s++ {
		tb.Acquire(s, uint64(s), "x", t0)
	}
	for _, s := range []SessionID{1, 2, n / 2, n} {
		if _, _, _, err := tb.Acquire(s, 1000, "x", t0); !errors.Is(err, ErrDuplicate) {
			t.Errorf("session %d acquired again while holding or waiting: %v, want ErrDuplicate", s, err)
		}
	}
	if d := tb.Drop(n/2, n/2, "x", t0); !d.Found || d.WasHolder {
		t.Fatalf("drop of waiter %d: %+v", n/2, d)
	}
	if _, _, pos, err := tb.Acquire(n/2, 1000, "x", t0); err != nil || pos != n-1 {
		t.Fatalf("dropped waiter queues again: pos %d err %v, want pos %d", pos, err, n-1)
	}
	want := []SessionID{}
	for s := SessionID(2); s <= n; s++ {
		if s != n/2 {
			want = append(want, s)
		}
	}
	want = append(want, n/2)
	holder, fence := SessionID(1), uint64(1)
	for i, w := range want {
		_, next, ok, err := tb.Release(holder, "x", fence, wire.Record{}, t0)
		if err != nil || !ok || next.Session != w {
			t.Fatalf("grant %d went to %d (ok %v, err %v), want %d", i, next.Session, ok, err, w)
		}
		holder, fence = next.Session, next.Fence
	}
	if tok := tb.Get("x"); tok.QueueLen() != 0 || tok.queued != nil {
		t.Errorf("emptied queue: %d waiting, index %v, want none", tok.QueueLen(), tok.queued)
	}
	if _, _, _, err := tb.Acquire(holder, 2000, "x", t0); !errors.Is(err, ErrDuplicate) {
		t.Errorf("holder acquired again: %v, want ErrDuplicate", err)
	}
}

func BenchmarkHandoff(b *testing.B) {
	for _, sessions := range []SessionID{8, 512} {
		b.Run(fmt.Sprintf("waiters=%d", sessions-1), func(b *testing.B) {
			tb := NewTable(10)
			for s := SessionID(1); s <= sessions; s++ {
				tb.Acquire(s, 1, "x", t0)
			}
			holder, fence := SessionID(1), uint64(1)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				_, next, _, _ := tb.Release(holder, "x", fence, wire.Record{}, t0)
				tb.Acquire(holder, uint64(i+2), "x", t0)
				holder, fence = next.Session, next.Fence
			}
		})
	}
}
