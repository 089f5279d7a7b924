package baton_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/testutil"
)

// Invariants 1 and 2 under contention: ten clients, forty critical sections each, on
// one token. Critical sections never overlap, fences strictly increase in the order
// sections begin, and at rest the counter (a read-modify-write by each holder)
// equals the releases the server accepted: no update was lost.
func TestMutualExclusionAndFencingUnderContention(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	const clients, rounds = 10, 40
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var inCS atomic.Int32
	var mu sync.Mutex // guards fences
	var fences []uint64
	var accepted atomic.Uint64
	var wg sync.WaitGroup
	for i := range clients {
		c := testutil.Dial(t, srv, fmt.Sprintf("client-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				l, err := c.Acquire(ctx, "counter")
				if err != nil {
					t.Errorf("acquire: %v", err)
					return
				}
				if n := inCS.Add(1); n != 1 {
					t.Errorf("two holders: %d clients in the critical section at fence %d", n, l.Fence)
				}
				mu.Lock()
				fences = append(fences, l.Fence)
				mu.Unlock()
				rec := l.Record
				rec.Counter++
				for range 3 {
					runtime.Gosched() // widen the section so that an overlap would show
				}
				inCS.Add(-1)
				if err := l.Release(ctx, rec); err != nil {
					t.Errorf("release fence %d: %v", l.Fence, err)
					continue
				}
				accepted.Add(1)
			}
		}()
	}
	wg.Wait()

	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			t.Fatalf("fence %d granted after fence %d: fences must strictly increase", fences[i], fences[i-1])
		}
	}
	st, err := srv.Status()
	if err != nil {
		t.Fatal(err)
	}
	tok := st.Tokens[0]
	if accepted.Load() != clients*rounds || tok.Releases != clients*rounds {
		t.Errorf("accepted releases: client saw %d, server %d, want %d", accepted.Load(), tok.Releases, clients*rounds)
	}
	if tok.Counter != tok.Releases {
		t.Errorf("counter %d != accepted releases %d: an update was lost", tok.Counter, tok.Releases)
	}
	if tok.Fence != clients*rounds || tok.Grants != clients*rounds {
		t.Errorf("fence %d grants %d, want %d each", tok.Fence, tok.Grants, clients*rounds)
	}
	if tok.Holder != "" || len(tok.Queue) != 0 {
		t.Errorf("at rest the token should be free with an empty queue: holder %q queue %v", tok.Holder, tok.Queue)
	}
	if st := testutil.Metric(t, srv.Reg, "baton_stale_releases_total", nil); st != 0 {
		t.Errorf("%v stale releases with no failures", st)
	}
}

// Invariant 4: waiters are served strictly in the order they queued.
func TestFIFOOrder(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := testutil.Dial(t, srv, "first")
	l, err := first.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 8
	order := make(chan int, waiters)
	for i := range waiters {
		c := testutil.Dial(t, srv, fmt.Sprintf("waiter-%d", i))
		go func() {
			wl, err := c.Acquire(ctx, "counter")
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				order <- -1
				return
			}
			order <- i
			_ = wl.Release(ctx, wl.Record)
		}()
		// Queue them one at a time so that the expected order is known.
		testutil.Eventually(t, 5*time.Second, fmt.Sprintf("waiter %d in the queue", i), func() bool {
			st, _ := srv.Status()
			return len(st.Tokens) == 1 && len(st.Tokens[0].Queue) == i+1
		})
	}
	if err := l.Release(ctx, l.Record); err != nil {
		t.Fatal(err)
	}
	for want := range waiters {
		if got := <-order; got != want {
			t.Fatalf("grant %d went to waiter %d, want waiter %d (FIFO)", want, got, want)
		}
	}
	st, _ := srv.Status()
	if w := st.Tokens[0].Waits; w != waiters {
		t.Errorf("waits = %d, want %d (each waiter found the token taken)", w, waiters)
	}
}

// A lease's Done closes when its client closes, and Release after that reports it.
func TestDoneClosesOnClose(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	c := testutil.Dial(t, srv, "closer")
	l, err := c.Acquire(context.Background(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case <-l.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("Done did not close when the client closed")
	}
	if err := l.Err(); err == nil {
		t.Fatal("Err is nil after Done closed")
	}
	if err := l.Release(context.Background(), l.Record); err == nil {
		t.Fatal("release after Close succeeded")
	}
	// Goodbye passed the token on at once.
	next := testutil.Dial(t, srv, "next")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l2, err := next.Acquire(ctx, "counter")
	if err != nil {
		t.Fatalf("token not free after its holder said goodbye: %v", err)
	}
	if l2.Fence != l.Fence+1 {
		t.Errorf("fence %d, want %d", l2.Fence, l.Fence+1)
	}
	if n := testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": "goodbye"}); n != 1 {
		t.Errorf("baton_reclaims_total{reason=goodbye} = %v, want 1: Close must say goodbye", n)
	}
	_ = baton.ErrClosed
}
