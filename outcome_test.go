package baton_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/wire"
)

// A release's outcome is the truth: nil when the server applied it, ErrStaleFence or
// ErrLeaseLost when it changed nothing, ErrOutcomeUnknown when the answer was lost
// with the session. A release the server applied is never reported refused, so a
// caller that retries on a refusal never applies its update twice.

// The server remembers the releases a session applied: one sent again (its client
// lost the connection before the answer) gets its first answer and is not judged
// again against a fence that has moved; a requeue sent again is not queued twice;
// one fallen out of the memory is answered "outcome unknown", never "stale".
func TestReleaseSentAgainGetsItsFirstAnswer(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	a := testutil.DialRaw(t, srv.TokenAddr(), "a")
	b := testutil.DialRaw(t, srv.TokenAddr(), "b")
	a.Acquire("counter")
	g := a.AwaitGrant("counter")
	b.Acquire("counter")
	waitQueue(t, srv, 1)

	a.Send(wire.Frame{Op: wire.OpRelease, Seq: 10, Token: "counter", Fence: g.Fence, Rec: wire.Record{Counter: 1}})
	testutil.Expect(t, a.Next(), wire.OpReleased)
	gb := b.AwaitGrant("counter") // the token moved on: g.Fence is stale now
	a.Send(wire.Frame{Op: wire.OpRelease, Seq: 10, Token: "counter", Fence: g.Fence, Rec: wire.Record{Counter: 1}})
	if f := a.Next(); f.Op != wire.OpReleased || f.Seq != 10 || f.Fence != g.Fence {
		t.Fatalf("release sent again answered %s (code %s: %s), want released seq=10 fence=%d", testutil.Describe(f), f.Code, f.Text, g.Fence)
	}

	// A requeue sent again: answered, and its acquire stays queued once.
	a.Acquire("counter")
	waitQueue(t, srv, 1)
	testutil.Expect(t, b.Release("counter", gb.Fence, wire.Record{Counter: 2}), wire.OpReleased)
	ga := a.AwaitGrant("counter")
	b.Acquire("counter")
	waitQueue(t, srv, 1)
	a.Send(wire.Frame{Op: wire.OpRequeue, Seq: 20, Token: "counter", Fence: ga.Fence, Rec: wire.Record{Counter: 3}})
	b.AwaitGrant("counter")
	a.Send(wire.Frame{Op: wire.OpRequeue, Seq: 20, Token: "counter", Fence: ga.Fence, Rec: wire.Record{Counter: 3}})
	if f := a.Next(); f.Op != wire.OpReleased || f.Seq != 20 {
		t.Fatalf("requeue's release: %s (code %s: %s), want released seq=20", testutil.Describe(f), f.Code, f.Text)
	}
	if f := a.Next(); f.Op != wire.OpReleased || f.Seq != 20 {
		t.Fatalf("requeue sent again: %s (code %s: %s), want released seq=20", testutil.Describe(f), f.Code, f.Text)
	}
	tok := tokenStatus(t, srv, "counter")
	if tok.Counter != 3 || tok.Releases != 3 || len(tok.Queue) != 1 || tok.Holder != "b" {
		t.Fatalf("after resends: counter %d releases %d queue %v holder %q; want 3, 3, [a], b", tok.Counter, tok.Releases, tok.Queue, tok.Holder)
	}

	// Fill the memory with other releases (a token each), then send seq 10 again.
	for i := range 20 {
		name := "t" + string(rune('a'+i))
		a.Acquire(name)
		gi := a.AwaitGrant(name)
		testutil.Expect(t, a.Release(name, gi.Fence, wire.Record{}), wire.OpReleased)
	}
	a.Send(wire.Frame{Op: wire.OpRelease, Seq: 10, Token: "counter", Fence: g.Fence, Rec: wire.Record{Counter: 1}})
	if f := a.Next(); f.Op != wire.OpError || f.Code != wire.CodeOutcomeUnknown {
		t.Fatalf("a forgotten release sent again: %s (code %s), want error %s", testutil.Describe(f), f.Code, wire.CodeOutcomeUnknown)
	}
	if n := testutil.Metric(t, srv.Reg, "baton_stale_releases_total", nil); n != 0 {
		t.Errorf("baton_stale_releases_total = %v, want 0: no release here was stale", n)
	}
	if n := testutil.Metric(t, srv.Reg, "baton_refused_releases_total", map[string]string{"reason": "outcome_unknown"}); n != 1 {
		t.Errorf(`baton_refused_releases_total{reason="outcome_unknown"} = %v, want 1`, n)
	}
}

// A server crash with a Requeue queued: the server applied the release and the
// token moved on, then the process died before the answer left. With a state
// directory the session lives in the raft log, so the client resumes it on the new
// process, sends the release again and gets its true answer from the session's
// memory; the requeue's place in line survived too, and its grant comes. Never
// ErrStaleFence, and the release applied once.
func TestServerCrashWithRequeueQueuedGetsItsTrueAnswer(t *testing.T) {
	dir := t.TempDir()
	withState := func(c *server.Config) { c.StateDir = dir; c.SessionTTL = 300 * time.Millisecond }
	s1 := testutil.StartServer(t, withState)
	p1 := testutil.StartProxy(t, s1.TokenAddr())
	var addr atomic.Pointer[string]
	addr.Store(new(p1.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := baton.Dial(ctx, baton.Config{Node: "a", Logger: testutil.Logger(t).With("node", "a"),
		Resolve: func(context.Context) (string, error) { return *addr.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	la, err := a.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	b := testutil.DialRaw(t, s1.TokenAddr(), "b")
	b.Acquire("counter")
	waitQueue(t, s1, 1)
	// From here nothing of s1 reaches a: the requeue's deferred answer could
	// otherwise ride on a keepalive's before the crash.
	p1.PartitionReplies()
	session := a.Info().Session
	type result struct {
		next *baton.Lease
		err  error
	}
	requeued := make(chan result, 1)
	go func() {
		next, err := la.Requeue(ctx, baton.Record{Counter: la.Record.Counter + 1})
		requeued <- result{next, err}
	}()
	gb := b.AwaitGrant("counter")
	if gb.Rec.Counter != la.Record.Counter+1 {
		t.Fatalf("b got counter %d, want %d: a's release applied", gb.Rec.Counter, la.Record.Counter+1)
	}
	// The crash: nothing more from s1 reaches a (its deferred answer is held by the
	// partition), and s1 is gone when a reconnects.
	p1.Partition()
	s1.Close()
	s2 := testutil.StartServer(t, withState)
	addr.Store(new(s2.TokenAddr()))
	p1.Close()

	var r result
	select {
	case r = <-requeued:
	case <-ctx.Done():
		t.Fatal("Requeue never returned after the crash")
	}
	if r.err != nil {
		t.Fatalf("Requeue after the crash: %v, want its next lease (the release was applied, the session survived)", r.err)
	}
	if r.next.Fence <= gb.Fence || r.next.Record.Counter != la.Record.Counter+1 {
		t.Errorf("next lease fence %d counter %d, want above %d and %d", r.next.Fence, r.next.Record.Counter, gb.Fence, la.Record.Counter+1)
	}
	if got := a.Info().Session; got != session {
		t.Errorf("session %x after the crash, want %x resumed", got, session)
	}
	if tok := tokenStatus(t, s2, "counter"); tok.Releases != gb.Rec.Counter {
		t.Errorf("releases %d after the crash, want %d: the release applied once", tok.Releases, gb.Rec.Counter)
	}
}

// releaseInFlight is a holder, a, that reaches the server through a proxy and has
// sent a release the server applied, with the answer held back by the proxy; b,
// a raw peer, was granted the token next.
type releaseInFlight struct {
	srv      *testutil.Server
	proxy    *testutil.Proxy
	a        *baton.Client
	session  uint64
	released chan error // a's Release returns here
	next     wire.Frame // b's grant
}

func startReleaseInFlight(t *testing.T, ctx context.Context, ttl time.Duration, counter uint64) *releaseInFlight {
	t.Helper()
	h := &releaseInFlight{released: make(chan error, 1)}
	h.srv = testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = ttl })
	h.proxy = testutil.StartProxy(t, h.srv.TokenAddr())
	var err error
	h.a, err = baton.Dial(ctx, baton.Config{Addr: h.proxy.Addr(), Node: "a", Logger: testutil.Logger(t).With("node", "a")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.a.Close() })
	la, err := h.a.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	h.session = h.a.Info().Session
	b := testutil.DialRaw(t, h.srv.TokenAddr(), "b")
	b.Acquire("counter")
	waitQueue(t, h.srv, 1)
	h.proxy.PartitionReplies()
	go func() { h.released <- la.Release(ctx, baton.Record{Counter: counter}) }()
	if h.next = b.AwaitGrant("counter"); h.next.Rec.Counter != counter {
		t.Fatalf("b got counter %d, want %d: a's release applied", h.next.Rec.Counter, counter)
	}
	return h
}

func (h *releaseInFlight) result(t *testing.T, ctx context.Context) error {
	t.Helper()
	select {
	case err := <-h.released:
		return err
	case <-ctx.Done():
		t.Fatal("Release never returned")
		return nil
	}
}

// Session expiry during a partition with a release unanswered: the server applied
// the release, its answer was held back by the partition, and the session expired
// before the client could reconnect. Release says the outcome is unknown.
func TestSessionExpiryWithReleaseUnansweredIsNotReportedStale(t *testing.T) {
	const ttl = 400 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := startReleaseInFlight(t, ctx, ttl, 7)
	h.proxy.Partition()
	testutil.Eventually(t, 10*ttl, "a's session to expire at the server and a to give up its connection", func() bool {
		st, err := h.srv.Status()
		if err != nil || h.a.Info().Connected {
			return false
		}
		for _, s := range st.Sessions {
			if s.Node == "a" {
				return false
			}
		}
		return true
	})
	h.proxy.Heal()
	if err := h.result(t, ctx); !errors.Is(err, baton.ErrOutcomeUnknown) {
		t.Fatalf("Release whose answer was lost with its session: %v, want ErrOutcomeUnknown", err)
	}
	if info := h.a.Info(); info.Session == h.session {
		t.Errorf("session %x resumed; the test wanted it expired", h.session)
	}
	if tok := tokenStatus(t, h.srv, "counter"); tok.Counter != 7 || tok.Releases != 1 {
		t.Errorf("counter %d releases %d, want 7 and 1", tok.Counter, tok.Releases)
	}
}

// A connection lost while a release's answer was on its way, and the session
// resumed: the release goes out again and the server answers it as it first did.
// Release returns nil, and the record was changed once.
func TestResumedSessionGetsTheTrueAnswerOfAReleaseSentAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := startReleaseInFlight(t, ctx, 2*time.Second, 9)
	h.proxy.Sever() // a's connection dies with the answer in it; the server keeps the session
	h.proxy.Heal()
	if err := h.result(t, ctx); err != nil {
		t.Fatalf("Release sent again on the resumed session: %v, want nil (the server applied it)", err)
	}
	if info := h.a.Info(); info.Session != h.session {
		t.Errorf("session %x after reconnecting, want %x resumed", info.Session, h.session)
	}
	if tok := tokenStatus(t, h.srv, "counter"); tok.Counter != 9 || tok.Releases != 1 || tok.Fence != h.next.Fence {
		t.Errorf("counter %d releases %d fence %d, want 9, 1, %d", tok.Counter, tok.Releases, tok.Fence, h.next.Fence)
	}
}

// After a crash, a release from a session the new process does not know, quoting the
// fence that is still current (nobody was granted since), is refused as a lost lease
// with a reason of its own: it is not a stale fence, and the stale-release alert
// stays quiet.
func TestReleaseFromAnUnknownSessionIsNotCountedStale(t *testing.T) {
	dir := t.TempDir()
	withState := func(c *server.Config) { c.StateDir = dir; c.SessionTTL = 200 * time.Millisecond }
	s1 := testutil.StartServer(t, withState)
	holder := testutil.DialRaw(t, s1.TokenAddr(), "holder")
	holder.Acquire("counter")
	g := holder.AwaitGrant("counter")
	s1.Close()
	s2 := testutil.StartServer(t, withState)
	again := testutil.DialRaw(t, s2.TokenAddr(), "holder")
	f := again.Release("counter", g.Fence, wire.Record{Counter: 1000})
	if f.Op != wire.OpError || f.Code != wire.CodeNotHeld {
		t.Fatalf("release under the current fence from an unknown session: %s (code %s), want error %s", testutil.Describe(f), f.Code, wire.CodeNotHeld)
	}
	if n := testutil.Metric(t, s2.Reg, "baton_stale_releases_total", nil); n != 0 {
		t.Errorf("baton_stale_releases_total = %v, want 0", n)
	}
	if n := testutil.Metric(t, s2.Reg, "baton_refused_releases_total", map[string]string{"reason": "lease_lost"}); n != 1 {
		t.Errorf(`baton_refused_releases_total{reason="lease_lost"} = %v, want 1`, n)
	}
	if tok := tokenStatus(t, s2, "counter"); tok.Counter != 0 || tok.Fence != g.Fence {
		t.Errorf("counter %d fence %d after the refused release, want 0 and %d", tok.Counter, tok.Fence, g.Fence)
	}
}
