package baton_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/wire"
)

// Invariant 3, process death: a holder whose socket closes without a release (what
// the kernel does for a killed process) loses the token within a round trip, well
// inside 1 s, though its session TTL is 10 s.
func TestHolderProcessDeathRegrantsWithinOneSecond(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = 10 * time.Second })
	holder := testutil.DialRaw(t, srv.TokenAddr(), "doomed")
	holder.Acquire("counter")
	g := holder.AwaitGrant("counter")

	next := testutil.Dial(t, srv, "next")
	got := make(chan time.Time, 1)
	go func() {
		defer close(got)
		l, err := next.Acquire(context.Background(), "counter")
		if err == nil && l.Fence == g.Fence+1 {
			got <- time.Now()
		}
	}()
	waitQueue(t, srv, 1)
	died := time.Now()
	holder.Conn.Close()
	select {
	case at, ok := <-got:
		if !ok {
			t.Fatal("the waiter was not granted the next fence")
		}
		t.Logf("next grant %s after the holder died", at.Sub(died))
		if at.Sub(died) > time.Second {
			t.Errorf("next grant took %s, want < 1s", at.Sub(died))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no grant within 3s of the holder's death (session TTL is 10s)")
	}
	if n := testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": "disconnect"}); n != 1 {
		t.Errorf("baton_reclaims_total{reason=disconnect} = %v, want 1", n)
	}
}

// Invariant 3, freeze: a holder that stops its keepalives but keeps its socket keeps
// the token until its session TTL has run out, never less; then the next waiter gets
// it, and the frozen holder's late release is rejected as stale and changes nothing.
func TestFrozenHolderLosesTokenOnlyAfterTTL(t *testing.T) {
	const ttl = 600 * time.Millisecond
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = ttl })
	helloSent := time.Now()
	frozen := testutil.DialRaw(t, srv.TokenAddr(), "frozen")
	frozen.Acquire("counter")
	g := frozen.AwaitGrant("counter")

	waiter := testutil.Dial(t, srv, "waiter")
	granted := make(chan time.Time, 1)
	go func() {
		l, err := waiter.Acquire(context.Background(), "counter")
		if err != nil {
			t.Errorf("waiter: %v", err)
			close(granted)
			return
		}
		if l.Fence != g.Fence+1 {
			t.Errorf("waiter got fence %d, want %d", l.Fence, g.Fence+1)
		}
		granted <- time.Now()
	}()
	var at time.Time
	select {
	case at = <-granted:
	case <-time.After(5 * ttl):
		t.Fatalf("no grant %s after the holder froze (TTL %s)", 5*ttl, ttl)
	}
	// The server's clock started the session no earlier than helloSent.
	if early := helloSent.Add(ttl).Sub(at); early > 0 {
		t.Fatalf("token re-granted %s before the frozen holder's TTL ran out", early)
	}
	t.Logf("re-granted %s after the hello (TTL %s)", at.Sub(helloSent), ttl)
	if n := testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": "expired"}); n != 1 {
		t.Errorf("baton_reclaims_total{reason=expired} = %v, want 1", n)
	}

	// The holder wakes up and writes: the fence stops it.
	before, _ := srv.Status()
	reply := frozen.Release("counter", g.Fence, wire.Record{Counter: 1000})
	if reply.Op != wire.OpError || reply.Code != wire.CodeStaleFence {
		t.Fatalf("late release answered %s, want error %s", testutil.Describe(reply), wire.CodeStaleFence)
	}
	after, _ := srv.Status()
	if after.Tokens[0].Counter != before.Tokens[0].Counter || after.Tokens[0].Releases != before.Tokens[0].Releases {
		t.Errorf("stale release changed the record: %+v → %+v", before.Tokens[0], after.Tokens[0])
	}
	if n := testutil.Metric(t, srv.Reg, "baton_stale_releases_total", map[string]string{"token": "counter"}); n != 1 {
		t.Errorf("baton_stale_releases_total = %v, want 1", n)
	}
}

// Invariant 2 under a partition: a holder cut off from the server (no FIN, no RST,
// just silence) stops trusting its lease by its own clock before the server hands
// the token to anyone else. Its Done closes first; the next grant comes after.
func TestPartitionedHolderStopsTrustingBeforeRegrant(t *testing.T) {
	const ttl = 500 * time.Millisecond
	h := startCutOffHolder(t, ttl)
	var doneAt, grantAt time.Time
	done := h.lease.Done()
	for doneAt.IsZero() || grantAt.IsZero() {
		select {
		case <-done:
			doneAt, done = time.Now(), nil
		case g := <-h.next:
			grantAt = g.at
		case <-time.After(5 * ttl):
			t.Fatalf("after %s: lease done at %v, next grant at %v", 5*ttl, doneAt, grantAt)
		}
	}
	t.Logf("holder stopped trusting %s before the server re-granted", grantAt.Sub(doneAt))
	if !doneAt.Before(grantAt) {
		t.Fatalf("server re-granted %s before the cut-off holder stopped trusting its lease", doneAt.Sub(grantAt))
	}
}

// cutOffHolder is a client that reaches the server through a proxy and holds
// "counter" when the proxy cuts it off, with another client queued behind it.
type cutOffHolder struct {
	srv    *testutil.Server
	proxy  *testutil.Proxy
	client *baton.Client
	lease  *baton.Lease
	next   chan grantAt // the other client's grant, once its session has expired
}

type grantAt struct {
	lease *baton.Lease
	at    time.Time
}

// startCutOffHolder sets the scene with a session TTL of ttl and cuts the holder off.
func startCutOffHolder(t *testing.T, ttl time.Duration) *cutOffHolder {
	t.Helper()
	h := &cutOffHolder{next: make(chan grantAt, 1)}
	h.srv = testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = ttl })
	h.proxy = testutil.StartProxy(t, h.srv.TokenAddr())
	ctx := context.Background()
	var err error
	h.client, err = baton.Dial(ctx, baton.Config{Addr: h.proxy.Addr(), Node: "cut-off", Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.client.Close() })
	if h.lease, err = h.client.Acquire(ctx, "counter"); err != nil {
		t.Fatal(err)
	}
	other := testutil.Dial(t, h.srv, "other")
	go func() {
		ol, err := other.Acquire(ctx, "counter")
		if err != nil {
			t.Errorf("other: %v", err)
			return
		}
		if ol.Fence != h.lease.Fence+1 {
			t.Errorf("other got fence %d, want %d", ol.Fence, h.lease.Fence+1)
		}
		h.next <- grantAt{lease: ol, at: time.Now()}
	}()
	waitQueue(t, h.srv, 1)
	h.proxy.Partition()
	return h
}

// The cancel-versus-grant race (x/sync/semaphore's go.dev/issue/63615): a waiter
// that gives up just as it is granted must pass the token on, never strand it.
// Raw peers force both interleavings; the client package is then hammered.
func TestCancelVersusGrantPassesTheTokenOn(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	for _, cancelFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel_reaches_server_first=%v", cancelFirst), func(t *testing.T) {
			a := testutil.DialRaw(t, srv.TokenAddr(), "a")
			a.Acquire("race")
			ga := a.AwaitGrant("race")
			b := testutil.DialRaw(t, srv.TokenAddr(), "b")
			bseq := b.Acquire("race")
			waitTokenQueue(t, srv, "race", 1)
			c := testutil.Dial(t, srv, "c")
			got := make(chan uint64, 1)
			go func() {
				l, err := c.Acquire(context.Background(), "race")
				if err != nil {
					t.Errorf("c: %v", err)
					close(got)
					return
				}
				got <- l.Fence
				_ = l.Release(context.Background(), l.Record)
			}()
			waitTokenQueue(t, srv, "race", 2)
			if cancelFirst {
				b.Send(wire.Frame{Op: wire.OpCancel, Seq: bseq, Token: "race"})
				testutil.Expect(t, b.Next(), wire.OpCancelled)
				testutil.Expect(t, a.Release("race", ga.Fence, ga.Rec), wire.OpReleased)
			} else {
				testutil.Expect(t, a.Release("race", ga.Fence, ga.Rec), wire.OpReleased)
				// b is granted now; it cancels without having read the grant.
				b.Send(wire.Frame{Op: wire.OpCancel, Seq: bseq, Token: "race"})
			}
			select {
			case f := <-got:
				if f == 0 {
					t.Fatal("c never got the token")
				}
			case <-time.After(2 * time.Second):
				t.Fatal("token stranded: c not granted after b withdrew")
			}
		})
	}
	if n := testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": "cancel"}); n != 1 {
		t.Errorf("baton_reclaims_total{reason=cancel} = %v, want 1 (the grant that crossed the cancel)", n)
	}

	// The client package, many times, cancelling at the moment of release.
	holder := testutil.Dial(t, srv, "holder")
	quitter := testutil.Dial(t, srv, "quitter")
	patient := testutil.Dial(t, srv, "patient")
	for i := range 100 {
		l, err := holder.Acquire(context.Background(), "hammer")
		if err != nil {
			t.Fatal(err)
		}
		qctx, qcancel := context.WithCancel(context.Background())
		qdone := make(chan struct{})
		go func() {
			defer close(qdone)
			if ql, err := quitter.Acquire(qctx, "hammer"); err == nil {
				_ = ql.Release(context.Background(), ql.Record)
			}
		}()
		waitTokenQueue(t, srv, "hammer", 1)
		pdone := make(chan error, 1)
		go func() {
			pl, err := patient.Acquire(context.Background(), "hammer")
			if err == nil {
				err = pl.Release(context.Background(), pl.Record)
			}
			pdone <- err
		}()
		waitTokenQueue(t, srv, "hammer", 2)
		go qcancel()
		if err := l.Release(context.Background(), l.Record); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-pdone:
			if err != nil {
				t.Fatalf("round %d: patient: %v", i, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("round %d: token stranded after a cancel raced the grant", i)
		}
		<-qdone
	}
	t.Logf("grants that crossed a cancel: %v", testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": "cancel"})-1)
}

// A node that comes back under its old name with a new boot id is a new process: its
// old session ends at once and what it held passes on.
func TestRebootedNodeLosesItsOldSession(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = 10 * time.Second })
	old := testutil.DialRawAs(t, srv.TokenAddr(), "worker-7", "boot-1")
	old.Acquire("counter")
	g := old.AwaitGrant("counter")
	waiter := testutil.Dial(t, srv, "waiter")
	got := make(chan uint64, 1)
	go func() {
		l, err := waiter.Acquire(context.Background(), "counter")
		if err == nil {
			got <- l.Fence
		}
	}()
	waitQueue(t, srv, 1)
	testutil.DialRawAs(t, srv.TokenAddr(), "worker-7", "boot-2")
	testutil.AwaitFence(t, got, g.Fence+1, 2*time.Second, "the old session's token reclaimed when its node rebooted")
	if n := testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": "reboot"}); n != 1 {
		t.Errorf("baton_reclaims_total{reason=reboot} = %v, want 1", n)
	}
}

func waitQueue(t *testing.T, srv *testutil.Server, n int) {
	t.Helper()
	waitTokenQueue(t, srv, "counter", n)
}

func waitTokenQueue(t *testing.T, srv *testutil.Server, token string, n int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("%d waiting for %q", n, token), func() bool {
		st, err := srv.Status()
		if err != nil {
			return false
		}
		for _, tk := range st.Tokens {
			if tk.Name == token {
				return len(tk.Queue) == n
			}
		}
		return false
	})
}
