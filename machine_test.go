package baton

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// The session logic without sockets, timers or goroutines: each case feeds the
// machine requests, frames, clock ticks and dial results, and checks the frames it
// queues and the answers it gives. These are the interleavings that matter.

// rig is a machine with a hand-moved clock.
type rig struct {
	t   *testing.T
	m   *machine
	now time.Time
}

const rigTTL = time.Second

func newRig(t *testing.T) *rig {
	t0 := time.Now()
	c := &Client{cfg: Config{DriftBound: 0.01}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), base: t0}
	r := &rig{t: t, m: newMachine(c), now: t0}
	r.m.clock = func() time.Time { return r.now }
	return r
}

// connect feeds a welcome to session id (resumed if the server says so), with held
// and waiting requests as the server lists them.
func (r *rig) connect(id uint64, resumed bool, held []wire.Held, waiting []wire.Waiting) {
	r.m.welcome(&wire.Frame{Op: wire.OpWelcome, Session: id, TTLms: uint64(rigTTL / time.Millisecond), Epoch: 1,
		Resumed: resumed, Held: held, Waiting: waiting}, r.now, "server")
}

// sent returns the frames queued since the last call, as "op seq" pairs.
func (r *rig) sent() []wire.Frame {
	out := append([]wire.Frame(nil), r.m.out...)
	r.m.out = r.m.out[:0]
	return out
}

func (r *rig) expectSent(want ...wire.Op) []wire.Frame {
	r.t.Helper()
	got := r.sent()
	ops := make([]wire.Op, len(got))
	for i, f := range got {
		ops[i] = f.Op
	}
	if len(ops) != len(want) {
		r.t.Fatalf("sent %v, want %v", ops, want)
	}
	for i := range want {
		if ops[i] != want[i] {
			r.t.Fatalf("sent %v, want %v", ops, want)
		}
	}
	return got
}

func (r *rig) acquire(token string) *acquireOp {
	op := &acquireOp{token: token, res: make(chan acquireResult, 1)}
	r.m.request(op)
	return op
}

// hold acquires token and has the server grant it with fence.
func (r *rig) hold(token string, fence uint64) (*acquireOp, *Lease) {
	r.t.Helper()
	op := r.acquire(token)
	r.expectSent(wire.OpAcquire)
	r.m.frame(&wire.Frame{Op: wire.OpGrant, Seq: op.seq, Token: token, Fence: fence})
	res := answered(r.t, op.res)
	if res.err != nil || res.lease == nil || res.lease.Fence != fence {
		r.t.Fatalf("grant: %+v, want a lease at fence %d", res, fence)
	}
	return op, res.lease
}

func (r *rig) release(l *Lease, counter uint64) (seq uint64, res chan error) {
	res = make(chan error, 1)
	r.m.request(releaseOp{lease: l, rec: Record{Counter: counter}, res: res})
	return r.m.seq, res
}

func (r *rig) requeue(l *Lease, counter uint64) *acquireOp {
	next := &acquireOp{token: l.Token}
	next.requeued = releaseReq{releaseOp: releaseOp{lease: l, rec: Record{Counter: counter}}}
	r.m.request(requeueOp{next: next})
	return next
}

// connectTTL is connect with another TTL.
func (r *rig) connectTTL(id uint64, resumed bool, ttl time.Duration) {
	r.m.welcome(&wire.Frame{Op: wire.OpWelcome, Session: id, TTLms: uint64(ttl / time.Millisecond), Epoch: 1,
		Resumed: resumed}, r.now, "server")
}

func answered[T any](t *testing.T, ch chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	default:
		t.Fatal("no answer given")
		var zero T
		return zero
	}
}

func unanswered[T any](t *testing.T, ch chan T) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("answered %+v, want no answer yet", v)
	default:
	}
}

func TestMachineInterleavings(t *testing.T) {
	lost := errors.New("connection reset")
	cases := []struct {
		name string
		run  func(t *testing.T, r *rig)
	}{
		{"grant lost in flight is delivered from the welcome", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			op := r.acquire("x")
			r.expectSent(wire.OpAcquire)
			r.m.lost(lost) // the grant was on its way
			r.connect(7, true, []wire.Held{{Seq: op.seq, Token: "x", Fence: 4}}, nil)
			r.expectSent() // nothing asked again
			if res := answered(t, op.res); res.err != nil || res.lease.Fence != 4 {
				t.Fatalf("acquire: %+v, want the lease at fence 4", res)
			}
		}},
		{"cancel crossing the grant passes the token on", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			op := r.acquire("x")
			r.expectSent(wire.OpAcquire)
			r.m.request(cancelOp{op: op})
			r.expectSent(wire.OpCancel)
			r.m.frame(&wire.Frame{Op: wire.OpGrant, Seq: op.seq, Token: "x", Fence: 5}) // crossed on the wire
			unanswered(t, op.res)
			r.m.frame(&wire.Frame{Op: wire.OpCancelled, Seq: op.seq, Token: "x"})
			if len(r.m.ops) != 0 {
				t.Fatalf("%d requests left, want none", len(r.m.ops))
			}
		}},
		{"cancel after the grant arrived ends the lease and gives it back", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			op, l := r.hold("x", 5)
			r.m.request(cancelOp{op: op})
			r.expectSent(wire.OpCancel)
			if !errors.Is(l.ended(), context.Canceled) {
				t.Fatalf("lease after cancel: %v, want context.Canceled", l.ended())
			}
		}},
		{"refused requeue queues nothing and says why", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			_, l := r.hold("x", 5)
			next := r.requeue(l, 1)
			f := r.expectSent(wire.OpRequeue)[0]
			r.m.frame(&wire.Frame{Op: wire.OpError, Seq: f.Seq, Code: wire.CodeStaleFence, Text: "stale"})
			if res := answered(t, next.res); !errors.Is(res.err, ErrStaleFence) {
				t.Fatalf("requeue: %+v, want ErrStaleFence", res)
			}
			if len(r.m.ops) != 0 || len(r.m.releases) != 0 {
				t.Fatalf("left %d requests, %d releases; want none", len(r.m.ops), len(r.m.releases))
			}
		}},
		{"release unanswered, session resumed: sent again, answered as first applied", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			_, l := r.hold("x", 5)
			seq, res := r.release(l, 1)
			r.expectSent(wire.OpRelease)
			r.m.lost(lost)
			r.connect(7, true, nil, nil) // the hold is gone: it was applied, or not
			f := r.expectSent(wire.OpRelease)[0]
			if f.Seq != seq {
				t.Fatalf("sent again as seq %d, want the same seq %d", f.Seq, seq)
			}
			r.m.frame(&wire.Frame{Op: wire.OpReleased, Seq: seq, Token: "x", Fence: 5})
			if err := answered(t, res); err != nil {
				t.Fatalf("release: %v, want nil", err)
			}
		}},
		{"release unanswered, server crashed: outcome unknown, nothing sent again", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			_, l := r.hold("x", 5)
			_, res := r.release(l, 1)
			r.expectSent(wire.OpRelease)
			r.m.lost(lost)
			r.connect(8, false, nil, nil) // a new process: session 7 unknown
			r.expectSent()
			if err := answered(t, res); !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("release: %v, want ErrOutcomeUnknown", err)
			}
		}},
		{"requeue waiting, reconnect not resumed: outcome unknown, nothing queued", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			_, l := r.hold("x", 5)
			next := r.requeue(l, 1)
			r.expectSent(wire.OpRequeue) // applied; its answer deferred to the next grant
			r.m.lost(lost)
			r.connect(8, false, nil, nil)
			r.expectSent()
			if res := answered(t, next.res); !errors.Is(res.err, ErrOutcomeUnknown) || errors.Is(res.err, ErrStaleFence) {
				t.Fatalf("requeue: %+v, want ErrOutcomeUnknown", res)
			}
			if len(r.m.ops) != 0 {
				t.Fatalf("%d requests left, want none", len(r.m.ops))
			}
		}},
		{"release never sent, reconnect not resumed: sent on the new session to be refused", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			_, l := r.hold("x", 5)
			r.m.lost(lost)
			seq, res := r.release(l, 1) // while disconnected
			r.connect(8, false, nil, nil)
			f := r.expectSent(wire.OpRelease)[0]
			r.m.frame(&wire.Frame{Op: wire.OpError, Seq: f.Seq, Code: wire.CodeStaleFence, Text: "stale"})
			if err := answered(t, res); !errors.Is(err, ErrStaleFence) || f.Seq != seq {
				t.Fatalf("release: %v, want ErrStaleFence", err)
			}
		}},
		{"freeze past the deadline: the first tick ends the lease, gives it back, and a release behind it is known refused", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			op, l := r.hold("x", 5)
			r.now = r.now.Add(3 * rigTTL) // the freeze
			r.m.checkTrust()
			if !errors.Is(l.ended(), ErrSessionExpired) {
				t.Fatalf("lease after the freeze: %v, want ErrSessionExpired", l.ended())
			}
			if f := r.expectSent(wire.OpCancel)[0]; f.Seq != op.seq {
				t.Fatalf("cancel of seq %d, want the hold's %d", f.Seq, op.seq)
			}
			_, res := r.release(l, 1)
			r.expectSent(wire.OpRelease)
			r.m.lost(lost)
			r.connect(8, false, nil, nil) // expired meanwhile
			r.expectSent(wire.OpRelease)  // behind the cancel it could not apply: it goes out to be refused
			unanswered(t, res)
		}},
		{"revocation with no call in progress ends the lease", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			_, l := r.hold("x", 5)
			done := l.Done()
			r.m.frame(&wire.Frame{Op: wire.OpRevoked, Token: "x", Fence: 5, Text: "expired"})
			select {
			case <-done:
			default:
				t.Fatal("Done open after the revocation")
			}
			if !errors.Is(l.ended(), ErrRevoked) {
				t.Fatalf("lease: %v, want ErrRevoked", l.ended())
			}
		}},
		{"session expired at the server: a release in flight was not applied", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			_, l := r.hold("x", 5)
			_, res := r.release(l, 1)
			r.expectSent(wire.OpRelease)
			r.m.frame(&wire.Frame{Op: wire.OpError, Seq: 999, Code: wire.CodeSessionExpired, Text: "session expired"})
			r.m.lost(io.EOF)
			r.connect(8, false, nil, nil)
			f := r.expectSent(wire.OpRelease)[0] // known not applied: sent to be refused, not unknown
			r.m.frame(&wire.Frame{Op: wire.OpError, Seq: f.Seq, Code: wire.CodeNotHeld, Text: "lease lost"})
			if err := answered(t, res); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("release: %v, want ErrLeaseLost", err)
			}
		}},
		{"a new session with a shorter TTL is trusted by its own, not the old one's", func(t *testing.T, r *rig) {
			r.connectTTL(7, false, 10*time.Second)
			r.m.lost(lost)
			r.connectTTL(8, false, rigTTL) // the server restarted with a shorter TTL
			if want := r.now.Add(rigTTL); r.m.deadline.After(want) {
				t.Fatalf("new session trusted until +%s, past its server's +%s", r.m.deadline.Sub(r.now), rigTTL)
			}
		}},
		{"a keepalive answer read after the deadline does not revive an expired hold", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			op, l := r.hold("x", 5)
			r.m.keepalive()
			ka := r.expectSent(wire.OpKeepalive)[0]
			r.now = r.now.Add(2 * rigTTL) // frozen; Lease.Err has said ErrSessionExpired
			r.m.frame(&wire.Frame{Op: wire.OpKeepaliveAck, Seq: ka.Seq, Epoch: 1})
			if !errors.Is(l.ended(), ErrSessionExpired) {
				t.Fatalf("lease after the late answer: %v, want ErrSessionExpired", l.ended())
			}
			if f := r.expectSent(wire.OpCancel)[0]; f.Seq != op.seq {
				t.Fatalf("cancel of seq %d, want the hold's %d", f.Seq, op.seq)
			}
			if op.slot != nil || len(r.m.ops) != 0 {
				t.Fatal("the expired request still holds its place")
			}
		}},
		{"a grant that arrives past the deadline is given back at once", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			op := r.acquire("x")
			r.expectSent(wire.OpAcquire)
			r.now = r.now.Add(2 * rigTTL)
			r.m.frame(&wire.Frame{Op: wire.OpGrant, Seq: op.seq, Token: "x", Fence: 5})
			if res := answered(t, op.res); !errors.Is(res.lease.ended(), ErrSessionExpired) {
				t.Fatalf("late grant: %+v, want a lease already ended", res)
			}
			r.expectSent(wire.OpCancel)
		}},
		{"an acquire answered 'session expired' goes out again on the next session", func(t *testing.T, r *rig) {
			r.connect(7, false, nil, nil)
			op := r.acquire("x")
			r.expectSent(wire.OpAcquire)
			r.m.frame(&wire.Frame{Op: wire.OpError, Seq: op.seq, Code: wire.CodeSessionExpired, Text: "session expired"})
			unanswered(t, op.res)
			r.m.lost(io.EOF)
			r.connect(8, false, nil, nil)
			if f := r.expectSent(wire.OpAcquire)[0]; f.Seq != op.seq {
				t.Fatalf("acquire sent again as seq %d, want %d", f.Seq, op.seq)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newRig(t)) })
	}
}

// Rule 7 (../shared/DESIGN.md, "Replication"): a holder that stays alive keeps its
// lease across a failover. A durable session (its state in a raft log) survives a
// connection the server's side ended without notice (the leader crashed or lost the
// leadership); a connection this side gave up on, or any on a session kept only in
// a server's memory, ends the leases.
func TestMachineLeaseAcrossUnannouncedLoss(t *testing.T) {
	timeout := &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		name    string
		durable bool
		err     error
		keeps   bool
	}{
		{"durable, the server closed (crash, step-down)", true, io.EOF, true},
		{"durable, the connection was reset (maybe a middlebox, both ways)", true, &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, false},
		{"durable, a write found the connection reset", true, &net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, false},
		{"durable, this side timed out on a silent server", true, timeout, false},
		{"in memory, the server closed: its successor has no session", false, io.EOF, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.m.welcome(&wire.Frame{Op: wire.OpWelcome, Session: 7, TTLms: uint64(rigTTL / time.Millisecond), Epoch: 1,
				Durable: tc.durable}, r.now, "server")
			op, l := r.hold("x", 5)
			r.m.lost(tc.err)
			if got := l.ended() == nil; got != tc.keeps {
				t.Fatalf("after losing the connection with %v: lease kept = %v (ended: %v), want %v", tc.err, got, l.ended(), tc.keeps)
			}
			if !tc.keeps {
				return
			}
			if !r.m.fx.redial || r.m.fx.redialIn != 0 {
				t.Fatalf("effects %+v, want a redial at once", r.m.fx)
			}
			// The new leader lists the hold: the lease carries on, trusted afresh.
			r.now = r.now.Add(300 * time.Millisecond)
			r.m.welcome(&wire.Frame{Op: wire.OpWelcome, Session: 7, TTLms: uint64(rigTTL / time.Millisecond), Epoch: 2, Resumed: true,
				Durable: true, Held: []wire.Held{{Seq: op.seq, Token: "x", Fence: 5}}}, r.now, "leader-2")
			if err := l.ended(); err != nil {
				t.Fatalf("lease after resuming on the new leader: %v, want still held", err)
			}
			// A leader that no longer lists it (the session's hold was reclaimed) ends it.
			r.m.lost(io.EOF)
			r.m.welcome(&wire.Frame{Op: wire.OpWelcome, Session: 7, TTLms: uint64(rigTTL / time.Millisecond), Epoch: 3, Resumed: true,
				Durable: true}, r.now, "leader-3")
			if l.ended() == nil {
				t.Fatal("lease still held after a welcome that no longer lists it")
			}
		})
	}
}

// A durable session whose server owes an answer (here a release's) and stays silent
// for hedgeAfter asks another server whether it leads, keeping its connection and
// its leases meanwhile; a frame from the server calls that off. A welcome from the
// other server moves the session there with its leases, and the release goes out
// again; a failed hedge is tried again while the answer is owed. An in-memory
// session never hedges: no other server has it.
func TestMachineHedgesWhenTheServerFallsSilent(t *testing.T) {
	resolve := func(context.Context) (string, error) { return "server-2", nil }
	for _, durable := range []bool{true, false} {
		r := newRig(t)
		r.m.c.cfg.Resolve = resolve
		var logs strings.Builder // at INFO and above
		r.m.c.log = slog.New(slog.NewTextHandler(&logs, nil))
		r.m.welcome(&wire.Frame{Op: wire.OpWelcome, Session: 7, TTLms: uint64(rigTTL / time.Millisecond), Epoch: 1,
			Durable: durable}, r.now, "server-1")
		op, l := r.hold("x", 5)
		kept, keptLease := r.hold("y", 9)
		r.m.fx = effects{}
		seq, res := r.release(l, 1)
		r.expectSent(wire.OpRelease)
		if !durable {
			if r.m.fx.watch {
				t.Fatal("in memory: the overdue timer armed, want no hedging")
			}
			continue
		}
		after := r.m.hedgeAfter()
		if !r.m.fx.watch || r.m.fx.watchIn != after {
			t.Fatalf("effects %+v after a release, want the overdue timer armed for %s", r.m.fx, after)
		}
		// The timer fires early (a frame came and went, say): not yet overdue.
		r.m.fx = effects{}
		r.now = r.now.Add(after / 2)
		r.m.overdue()
		if r.m.fx.hedge || !r.m.fx.watch || r.m.fx.watchIn != after-after/2 {
			t.Fatalf("effects %+v half-way, want the timer again for the rest", r.m.fx)
		}
		r.now = r.now.Add(after - after/2)
		r.m.fx = effects{}
		r.m.overdue()
		if !r.m.fx.hedge || !r.m.hedging {
			t.Fatalf("effects %+v once overdue, want a hedged connect", r.m.fx)
		}
		// The other server says it does not lead: ask again after as long.
		r.m.fx = effects{}
		r.m.hedged("", false)
		if r.m.hedging || !r.m.fx.watch || r.m.fx.watchIn != after || !r.m.connected {
			t.Fatalf("after a failed hedge: effects %+v, connected %v, want the timer again and the connection kept", r.m.fx, r.m.connected)
		}
		r.now = r.now.Add(after)
		r.m.overdue()
		if n := strings.Count(logs.String(), "server silent; asking"); n != 1 {
			t.Fatalf("one silence, asked about twice, logged %d times at INFO, want once:\n%s", n, logs.String())
		}
		r.m.fx = effects{}
		r.m.hedged("server-2", true)
		if keptLease.ended() != nil || !r.m.fx.hangUp {
			t.Fatalf("after a welcome elsewhere: lease %v, effects %+v; want the lease kept and the silent connection closed", keptLease.ended(), r.m.fx)
		}
		unanswered(t, res)
		r.m.welcome(&wire.Frame{Op: wire.OpWelcome, Session: 7, TTLms: uint64(rigTTL / time.Millisecond), Epoch: 2, Resumed: true,
			Durable: true, Held: []wire.Held{{Seq: op.seq, Token: "x", Fence: 5}, {Seq: kept.seq, Token: "y", Fence: 9}}}, r.now, "server-2")
		if err := keptLease.ended(); err != nil {
			t.Fatalf("lease on y after the session moved: %v, want still held", err)
		}
		if f := r.expectSent(wire.OpRelease); f[0].Seq != seq {
			t.Fatalf("release sent again with seq %d, want %d", f[0].Seq, seq)
		}
		unanswered(t, res)
		r.m.frame(&wire.Frame{Op: wire.OpReleased, Seq: seq})
		if err := answered(t, res); err != nil {
			t.Fatalf("release answered %v on the new leader, want nil", err)
		}
		// Heard from: nothing owed, no hedge.
		r.m.fx = effects{}
		r.now = r.now.Add(10 * after)
		r.m.overdue()
		if r.m.fx.hedge {
			t.Fatal("hedged with nothing owed")
		}
	}
}

// The connection can end while a hedge is out. No other connect starts meanwhile
// (two welcomed connections of one session, one closed unused, would end it at its
// server); the hedge's end starts one if it failed, and its welcome, if it came,
// is the connection.
func TestMachineConnectionLostWhileHedging(t *testing.T) {
	for _, welcomed := range []bool{false, true} {
		r := newRig(t)
		r.m.c.cfg.Resolve = func(context.Context) (string, error) { return "server-2", nil }
		r.m.welcome(&wire.Frame{Op: wire.OpWelcome, Session: 7, TTLms: uint64(rigTTL / time.Millisecond), Epoch: 1,
			Durable: true}, r.now, "server-1")
		_, l := r.hold("x", 5)
		r.m.keepalive()
		r.sent()
		r.now = r.now.Add(r.m.hedgeAfter())
		r.m.overdue()
		if !r.m.fx.hedge {
			t.Fatalf("effects %+v once overdue, want a hedged connect", r.m.fx)
		}
		r.m.fx = effects{}
		r.m.lost(io.EOF) // the silent server's process ended after all
		if l.ended() != nil {
			t.Fatalf("lease ended on the durable server's EOF: %v", l.ended())
		}
		r.m.startDial() // the redial lost asked for
		if r.m.fx.dial {
			t.Fatal("a connect started while the hedge is out")
		}
		r.m.fx = effects{}
		r.m.hedged("server-2", welcomed)
		if welcomed {
			if r.m.fx.dial || r.m.fx.hangUp {
				t.Fatalf("effects %+v after a welcomed hedge with no connection, want it taken as the connection", r.m.fx)
			}
			continue
		}
		if !r.m.fx.dial {
			t.Fatalf("effects %+v after a failed hedge with no connection, want a connect", r.m.fx)
		}
	}
}
