package baton_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/wire"
)

// Requeue gives the token back and rejoins the queue in one step, so clients that
// loop on it are never out of the queue: after every client has held the token once,
// turns go round in a fixed order. Exclusion, fences and the record hold as with
// Release.
func TestRequeueTurnsGoRoundInFIFOOrder(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	const clients, turns = 4, 60
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var inCS atomic.Int32
	var mu sync.Mutex // guards holders
	holders := map[uint64]int{}
	var wg sync.WaitGroup
	// Client 0 holds the token until the others are in line, so that all start
	// together.
	first, err := testutil.Dial(t, srv, "client-0").Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	go1 := make(chan struct{})
	for i := range clients {
		var c *baton.Client
		if i > 0 {
			c = testutil.Dial(t, srv, fmt.Sprintf("client-%d", i))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var l *baton.Lease
			var err error
			if i == 0 {
				<-go1
				l = first
			} else {
				l, err = c.Acquire(ctx, "counter")
			}
			for n := 0; err == nil; n++ {
				if k := inCS.Add(1); k != 1 {
					t.Errorf("two holders: %d clients in the critical section at fence %d", k, l.Fence)
				}
				mu.Lock()
				holders[l.Fence] = i
				mu.Unlock()
				inCS.Add(-1)
				rec := baton.Record{Counter: l.Record.Counter + 1}
				if n == turns-1 {
					err = l.Release(ctx, rec)
					break
				}
				l, err = l.Requeue(ctx, rec)
			}
			if err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	waitQueue(t, srv, clients-1)
	close(go1)
	wg.Wait()

	st, err := srv.Status()
	if err != nil {
		t.Fatal(err)
	}
	tok := st.Tokens[0]
	if tok.Fence != clients*turns || len(holders) != clients*turns {
		t.Fatalf("fence %d with %d distinct fences granted, want %d each", tok.Fence, len(holders), clients*turns)
	}
	if tok.Counter != clients*turns || tok.Releases != clients*turns {
		t.Errorf("counter %d, releases %d, want %d each: an update was lost", tok.Counter, tok.Releases, clients*turns)
	}
	if tok.Holder != "" || len(tok.Queue) != 0 {
		t.Errorf("at rest the token should be free with an empty queue: holder %q queue %v", tok.Holder, tok.Queue)
	}
	// From the grant at which every client has had a turn until the first client
	// leaves with Release, all four are always in line: each turn goes to the client
	// of four turns before.
	seen, start := map[int]bool{}, uint64(0)
	for f := uint64(1); len(seen) < clients; f++ {
		seen[holders[f]] = true
		start = f
	}
	lastTurn := map[int]uint64{}
	for f, i := range holders {
		lastTurn[i] = max(lastTurn[i], f)
	}
	firstLeave := uint64(clients * turns)
	for _, f := range lastTurn {
		firstLeave = min(firstLeave, f)
	}
	for f := start + clients; f <= firstLeave+clients-1; f++ {
		if holders[f] != holders[f-clients] {
			t.Fatalf("fence %d went to client %d, want client %d, which held fence %d: requeued clients must take turns in order",
				f, holders[f], holders[f-clients], f-clients)
		}
	}
	t.Logf("turns went round in order from fence %d to %d", start+clients, firstLeave+clients-1)
}

// The server answers a requeue's release with the next grant of that request, not
// at once: one write per handoff. A waiter is served first, and the requester's next
// frames are Released then Grant.
func TestRequeueAnswerRidesWithTheNextGrant(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	a := testutil.DialRaw(t, srv.TokenAddr(), "a")
	b := testutil.DialRaw(t, srv.TokenAddr(), "b")
	a.Acquire("counter")
	g1 := a.AwaitGrant("counter")
	b.Acquire("counter")
	waitQueue(t, srv, 1)

	a.Send(wire.Frame{Op: wire.OpRequeue, Seq: 100, Token: "counter", Fence: g1.Fence, Rec: wire.Record{Counter: 7}})
	g2 := b.AwaitGrant("counter")
	if g2.Fence != g1.Fence+1 || g2.Rec.Counter != 7 {
		t.Fatalf("waiter got %s counter %d, want fence %d counter 7", testutil.Describe(g2), g2.Rec.Counter, g1.Fence+1)
	}
	if f, err := a.TryNext(200 * time.Millisecond); err == nil {
		t.Fatalf("requester got %s while it waits in line; its answer should wait for its grant", testutil.Describe(f))
	}
	waitQueue(t, srv, 1) // the requester is in line behind the new holder
	testutil.Expect(t, b.Release("counter", g2.Fence, wire.Record{Counter: 8}), wire.OpReleased)
	rel := a.Next()
	if rel.Op != wire.OpReleased || rel.Seq != 100 || rel.Fence != g1.Fence {
		t.Fatalf("first frame after the requeue: %s, want released seq=100 fence=%d", testutil.Describe(rel), g1.Fence)
	}
	g3 := a.Next()
	if g3.Op != wire.OpGrant || g3.Seq != 100 || g3.Fence != g2.Fence+1 || g3.Rec.Counter != 8 {
		t.Fatalf("second frame: %s counter %d, want grant seq=100 fence=%d counter 8", testutil.Describe(g3), g3.Rec.Counter, g2.Fence+1)
	}
}

// A requeue whose release is refused queues nothing: the error comes back at once,
// the token and its queue are as they were.
func TestRefusedRequeueQueuesNothing(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	a := testutil.DialRaw(t, srv.TokenAddr(), "a")
	a.Acquire("counter")
	g := a.AwaitGrant("counter")
	a.Send(wire.Frame{Op: wire.OpRequeue, Seq: 50, Token: "counter", Fence: g.Fence + 9, Rec: wire.Record{Counter: 99}})
	e := a.Next()
	if e.Op != wire.OpError || e.Seq != 50 || e.Code != wire.CodeStaleFence {
		t.Fatalf("got %s code %s, want error seq=50 code stale_fence", testutil.Describe(e), e.Code)
	}
	st, err := srv.Status()
	if err != nil {
		t.Fatal(err)
	}
	tok := st.Tokens[0]
	if tok.Holder != "a" || len(tok.Queue) != 0 || tok.Counter != 0 || tok.Releases != 0 || tok.Fence != g.Fence {
		t.Fatalf("after a refused requeue: holder %q queue %v counter %d releases %d fence %d; want a, empty, 0, 0, %d",
			tok.Holder, tok.Queue, tok.Counter, tok.Releases, tok.Fence, g.Fence)
	}
}

// A holder cut off past its TTL lost its lease; Requeue then reports the refusal
// and queues nothing, and the client can acquire again afterwards.
func TestRequeueOfALostLeaseIsRefused(t *testing.T) {
	h := startCutOffHolder(t, 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ol *baton.Lease
	select {
	case g := <-h.next:
		ol = g.lease
	case <-ctx.Done():
		t.Fatal("the other client never got the token")
	}
	<-h.lease.Done()
	h.proxy.Heal()

	next, err := h.lease.Requeue(ctx, baton.Record{Counter: 1000})
	if !errors.Is(err, baton.ErrStaleFence) && !errors.Is(err, baton.ErrLeaseLost) {
		t.Fatalf("requeue of a lost lease: lease %v, err %v; want ErrStaleFence or ErrLeaseLost", next, err)
	}
	st, _ := h.srv.Status()
	if tok := st.Tokens[0]; tok.Holder != "other" || len(tok.Queue) != 0 || tok.Counter == 1000 {
		t.Fatalf("after the refused requeue: holder %q queue %v counter %d; want other, empty, untouched", tok.Holder, tok.Queue, tok.Counter)
	}
	if err := ol.Release(ctx, ol.Record); err != nil {
		t.Fatal(err)
	}
	again, err := h.client.Acquire(ctx, "counter")
	if err != nil {
		t.Fatalf("acquire after the refused requeue: %v", err)
	}
	if again.Fence != ol.Fence+1 {
		t.Errorf("fence %d, want %d", again.Fence, ol.Fence+1)
	}
}

// requeueLine is a requeue waiting in line: a held the token and requeued it with
// the record's counter set; b holds it now.
type requeueLine struct {
	requeuer *baton.Client // a
	holder   *baton.Lease  // b's lease
	requeued chan requeueResult
}

type requeueResult struct {
	lease *baton.Lease
	err   error
}

// requeueBehind has client a take the token, b queue for it, and a requeue with
// counter, so that b holds the token and a waits behind it, its release's answer
// still to come (the server sends it with a's next grant).
func requeueBehind(t *testing.T, ctx context.Context, srv *testutil.Server, counter uint64) requeueLine {
	t.Helper()
	a := testutil.Dial(t, srv, "a")
	b := testutil.Dial(t, srv, "b")
	la, err := a.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	taken := make(chan *baton.Lease, 1)
	go func() {
		lb, err := b.Acquire(ctx, "counter")
		if err != nil {
			t.Errorf("b: %v", err)
		}
		taken <- lb
	}()
	waitQueue(t, srv, 1)
	line := requeueLine{requeuer: a, requeued: make(chan requeueResult, 1)}
	go func() {
		next, err := la.Requeue(ctx, baton.Record{Counter: counter})
		line.requeued <- requeueResult{next, err}
	}()
	line.holder = <-taken
	waitQueue(t, srv, 1) // a waits behind b
	return line
}

// A requeue waiting in line survives an in-place restart: the client resumes its
// session, learns from the welcome that its release was applied and that it is
// still in line, and gets the next grant.
func TestRequeueWaitingInLineSurvivesARestart(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	line := requeueBehind(t, ctx, srv, 41)
	lb := line.holder
	if lb == nil || lb.Record.Counter != 41 {
		t.Fatalf("b got %+v, want the record a left (counter 41)", lb)
	}
	if _, err := srv.Restart("test"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "both clients back on a session", func() bool {
		st, _ := srv.Status()
		connected := 0
		for _, s := range st.Sessions {
			if s.Connected {
				connected++
			}
		}
		return connected == 2 && len(st.Tokens[0].Queue) == 1
	})
	if err := lb.Release(ctx, baton.Record{Counter: 42}); err != nil {
		t.Fatalf("b release after the restart: %v", err)
	}
	select {
	case r := <-line.requeued:
		if next := r.lease; r.err != nil || next == nil || next.Fence != lb.Fence+1 || next.Record.Counter != 42 {
			t.Fatalf("a's requeue gave %+v (err %v), want fence %d counter 42", r.lease, r.err, lb.Fence+1)
		}
	case <-ctx.Done():
		t.Fatal("a's requeue never got its grant after the restart")
	}
}

// Close while a requeue waits in line (its release answer is deferred by the server,
// so the release is still outstanding here): Close returns, the requeue returns
// ErrClosed, and the session's place passes on.
func TestCloseWhileRequeueWaitsInLine(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	line := requeueBehind(t, ctx, srv, 1)
	a, lb := line.requeuer, line.holder
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not return while a requeue waited in line")
	}
	select {
	case r := <-line.requeued:
		if !errors.Is(r.err, baton.ErrClosed) {
			t.Fatalf("requeue after Close: %v, want ErrClosed", r.err)
		}
	case <-ctx.Done():
		t.Fatal("the requeue never returned after Close")
	}
	waitQueue(t, srv, 0)
	if err := lb.Release(ctx, baton.Record{Counter: 2}); err != nil {
		t.Fatalf("b release: %v", err)
	}
}

// A loop of requeues keeps its memory flat: each turn's request holds the lease it
// gives back until the server answers the release, and no longer, so the turns do
// not chain into a list the collector cannot free.
func TestRequeueLoopKeepsMemoryFlat(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	c := testutil.Dial(t, srv, "looper")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := c.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	turns := func(n int) {
		for range n {
			if l, err = l.Requeue(ctx, baton.Record{Counter: l.Record.Counter + 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	turns(2000)
	before := heap()
	turns(20000)
	after := heap()
	// A leak of one request per turn would be 20,000 × 192 B, about 4 MB.
	if after > before+1<<20 {
		t.Fatalf("heap grew from %d to %d bytes over 20,000 requeues", before, after)
	}
}

// One session taking a free token in a loop over real TCP, server and client in this
// process: a turn's round trip, and its allocations (the client's; the server's
// steady path allocates nothing).
func BenchmarkRequeueTurn(b *testing.B) {
	srv := testutil.StartServer(b, nil)
	c := testutil.Dial(b, srv, "looper")
	ctx := context.Background()
	l, err := c.Acquire(ctx, "counter")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if l, err = l.Requeue(ctx, baton.Record{Counter: l.Record.Counter + 1}); err != nil {
			b.Fatal(err)
		}
	}
}
