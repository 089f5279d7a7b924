package baton

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/baton-dev/baton/internal/rawio"
	"github.com/baton-dev/baton/internal/wire"
)

// runState is the client's state: the connection, the session, the outstanding
// requests and the leases. It is guarded by Client.mu, and whoever has an event
// handles it under that lock: a caller its request, whoever reads the connection a
// frame (a waiting caller or the background reader, see turn.go), a timer its
// deadline, the dialer its connection. There is no goroutine in between: a request
// leaves from the caller's goroutine, and a grant usually reaches a caller that
// read it itself.
type runState struct {
	c *Client

	conn    *clientConn // nil while disconnected
	closed  bool        // Close has run: nothing more happens
	dialing bool
	redial  *time.Timer
	backoff time.Duration
	failed  int // dial attempts since the last session

	session     uint64
	lostSession uint64 // the session before the latest welcome, for messages
	epoch       uint64
	ttl         time.Duration
	deadline    time.Time            // the session is trusted until then, by this clock
	trust       *time.Timer          // fires at deadline
	ka          *time.Timer          // fires every third of the TTL while connected
	kaSent      map[uint64]time.Time // keepalive seq → when it was sent

	turnWaiters int // callers waiting for the turn to read (turn.go)

	seq      uint64
	ops      map[uint64]*acquireOp  // acquire seq → request, waiting or holding
	releases map[uint64]*releaseReq // release seq → request awaiting its answer
	first    bool
}

type releaseReq struct {
	releaseOp
	sent bool
	// mayApply: it left while its session was alive, so the server may have applied
	// it. A release sent after the server said the session ended cannot have been.
	mayApply bool
	// then is a requeue's acquire: it goes out in the same frame while unsent, and
	// fails with the release if the server refuses the release.
	then *acquireOp
}

// answer tells the caller how the release went. A requeue's release has no channel
// of its own (nil res): its acquire's answer says it.
func (r *releaseReq) answer(err error) {
	if r.res != nil {
		r.res <- err
	}
}

// writeTimeout bounds a write to the server: between half of it and all of it.
const writeTimeout = time.Second

type clientConn struct {
	nc            net.Conn
	w             *wire.Writer
	writeDeadline time.Time // armed now; written under Client.mu
	announced     bool      // the server said Closing: our session lives on, resume it
	server        string

	rd        connReader
	turn      turnHolder    // who reads it now (see turn.go); guarded by Client.mu
	bgWake    chan struct{} // the background reader's turn has come
	done      chan struct{} // closed with the connection
	closeOnce sync.Once
}

type dialResult struct {
	conn    *clientConn
	r       *wire.Reader
	welcome wire.Frame
	sentAt  time.Time // when the hello left: the session is alive from then on
	err     error
}

func newRunState(c *Client) *runState {
	st := &runState{c: c, kaSent: map[uint64]time.Time{}, ops: map[uint64]*acquireOp{},
		releases: map[uint64]*releaseReq{}, backoff: 50 * time.Millisecond}
	st.redial = time.AfterFunc(time.Hour, func() { c.event(func(st *runState) { st.startDial() }) })
	st.trust = time.AfterFunc(time.Hour, func() { c.event(func(st *runState) { st.checkTrust(time.Now()) }) })
	st.ka = time.AfterFunc(time.Hour, func() { c.event(func(st *runState) { st.keepalive() }) })
	st.redial.Stop()
	st.trust.Stop()
	st.ka.Stop()
	return st
}

// event handles one event under the lock, then sends what it queued.
func (c *Client) event(fn func(st *runState)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.closed {
		return
	}
	fn(c.st)
	c.st.flush()
}

// submit hands a caller's request to the state; false once the client is closed.
func (c *Client) submit(req any) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.closed {
		return false
	}
	c.st.request(req)
	c.st.flush()
	return true
}

func (st *runState) nextSeq() uint64 {
	st.seq++
	return st.seq
}

// send buffers f for the connection, if any; flush sends it. f is a pointer, and
// the hot paths keep their stack frames small, because a goroutine of a process
// with hundreds of sessions finds its stack cold in the cache when its turn comes.
func (st *runState) send(f *wire.Frame) {
	if st.conn == nil {
		return
	}
	if err := st.conn.w.Write(f); err != nil {
		st.lost(err)
	}
}

func (st *runState) flush() {
	if st.conn == nil || st.conn.w.Buffered() == 0 {
		return
	}
	// A write blocked for writeTimeout means the server has stopped reading. The
	// deadline is moved once half of it is used up, not for every write: moving it
	// costs a timer update, once per turn in a loop of requeues.
	if cc, now := st.conn, time.Now(); cc.writeDeadline.Sub(now) < writeTimeout/2 {
		cc.writeDeadline = now.Add(writeTimeout)
		_ = cc.nc.SetWriteDeadline(cc.writeDeadline)
	}
	if err := st.conn.w.Flush(); err != nil {
		st.lost(err)
	}
}

// startDial dials in the background: the state must stay free to end leases on time
// while a dial is slow.
func (st *runState) startDial() {
	if st.dialing || st.conn != nil {
		return
	}
	st.dialing = true
	c, cfg, resume := st.c, st.c.cfg, st.session
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		r := dial(cfg, resume)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.st.closed {
			if r.conn != nil {
				r.conn.close()
			}
			return
		}
		c.st.dialed(r)
		c.st.flush()
	}()
}

func dial(cfg Config, resume uint64) dialResult {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
	defer cancel()
	addr := cfg.Addr
	if cfg.Resolve != nil {
		a, err := cfg.Resolve(ctx)
		if err != nil {
			return dialResult{err: fmt.Errorf("resolve server: %w", err)}
		}
		addr = a
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return dialResult{err: err}
	}
	fail := func(err error) dialResult { nc.Close(); return dialResult{err: err} }
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	rw := rawio.Wrap(nc) // see package rawio
	r, w := wire.NewReader(rw), wire.NewWriter(rw)
	var ch wire.Frame
	if err := r.Read(&ch); err != nil {
		return fail(fmt.Errorf("read challenge from %s: %w", addr, err))
	}
	if ch.Op == wire.OpError {
		return fail(fmt.Errorf("%w: %s: %s", ErrRefused, ch.Code, ch.Text))
	}
	if ch.Op != wire.OpChallenge {
		return fail(fmt.Errorf("expected challenge from %s, got %s", addr, ch.Op))
	}
	hello := wire.Frame{Op: wire.OpHello, Version: wire.Version, Text: cfg.Node, BootID: cfg.BootID,
		Session: resume, TTLms: uint64(cfg.TTL / time.Millisecond)}
	if cfg.ClusterKey != nil {
		hello.MAC = wire.MAC(cfg.ClusterKey, ch.Nonce, cfg.Node, cfg.BootID)
	}
	sentAt := time.Now()
	if err := w.Write(&hello); err != nil {
		return fail(err)
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	var wel wire.Frame
	if err := r.Read(&wel); err != nil {
		return fail(fmt.Errorf("read welcome from %s: %w", addr, err))
	}
	if wel.Op == wire.OpError {
		return fail(fmt.Errorf("%w: %s: %s", ErrRefused, wel.Code, wel.Text))
	}
	if wel.Op != wire.OpWelcome || wel.TTLms == 0 {
		return fail(fmt.Errorf("expected welcome from %s, got %s", addr, wel.Op))
	}
	_ = nc.SetDeadline(time.Time{})
	cc := &clientConn{nc: nc, w: w, server: addr, bgWake: make(chan struct{}, 1), done: make(chan struct{})}
	return dialResult{conn: cc, r: r, welcome: wel, sentAt: sentAt}
}

func (cc *clientConn) close() {
	cc.closeOnce.Do(func() {
		close(cc.done)
		cc.unwatch()
		cc.nc.Close()
	})
}

func (st *runState) dialed(r dialResult) {
	st.dialing = false
	if r.err != nil {
		st.failed++
		level := st.c.log.Debug
		if st.failed%10 == 1 {
			level = st.c.log.Warn
		}
		level("connect failed, retrying", "err", r.err, "attempt", st.failed, "in", st.backoff)
		st.redial.Reset(st.backoff)
		st.backoff = min(2*st.backoff, time.Second)
		return
	}
	st.failed, st.backoff = 0, 50*time.Millisecond
	st.conn = r.conn
	w := &r.welcome
	resumed := w.Resumed && w.Session == st.session
	st.lostSession = st.session
	if !resumed {
		// Leases of the old session are gone; they end before the new session's
		// deadline is set, which they could otherwise read as theirs (Lease.Err).
		st.loseLeases(ErrSessionExpired)
	}
	st.session, st.epoch = w.Session, w.Epoch
	st.ttl = time.Duration(w.TTLms) * time.Millisecond
	st.ka.Reset(st.ttl / 3)
	// The background reader has the turn first; a waiting caller asks for it.
	r.conn.rd = connReader{r: r.r, ttl: st.ttl}
	st.c.wg.Add(1)
	go st.c.background(r.conn)
	st.turnToBackground()
	st.extend(r.sentAt)
	st.c.log.Info("session", "server", r.conn.server, "session", fmt.Sprintf("%x", st.session), "resumed", resumed,
		"epoch", st.epoch, "ttl", st.ttl, "held", len(w.Held), "waiting", len(w.Waiting))
	st.reconcile(w, resumed)
	if !st.first {
		st.first = true
		close(st.c.firstSession)
	}
}

// extend moves the trust deadline to sentAt + TTL less the drift margin: sentAt is
// when a message the server answered left this process, so the server saw it later
// and will expire the session later still.
func (st *runState) extend(sentAt time.Time) {
	margin := time.Duration(float64(st.ttl) * st.c.cfg.DriftBound)
	d := sentAt.Add(st.ttl - margin)
	if d.After(st.deadline) {
		st.deadline = d
		st.c.trustUntil.Store(int64(d.Sub(st.c.base)))
	}
	st.trust.Reset(time.Until(st.deadline))
}

// reconcile brings local requests in line with what the server says the session has
// after a (re)connect: grants that were lost in flight are delivered, requests the
// server never saw are sent again, and anything the server holds for us that nobody
// wants any more is given up, cancels before new acquires so that order holds.
func (st *runState) reconcile(w *wire.Frame, resumed bool) {
	held := make(map[uint64]wire.Held, len(w.Held))
	for _, h := range w.Held {
		held[h.Seq] = h
	}
	waiting := make(map[uint64]bool, len(w.Waiting))
	for _, q := range w.Waiting {
		waiting[q.Seq] = true
	}
	// Releases still unanswered. On a resumed session each goes out again, and the
	// server answers one it applied already as it first did (it remembers them per
	// session). The session's hold must not be cancelled before its release, or the
	// release would find the token gone. On a new session, a release that never left
	// goes out too (the server refuses it and counts it: its lease is gone); one that
	// left cannot be known: its answer went with the old session.
	releasing := map[uint64]bool{}
	for seq, r := range st.releases {
		if r.sent && r.mayApply && !resumed {
			st.resolveRelease(seq, r, fmt.Errorf("%w: release of %q fence %d was sent, and session %x ended before its answer came",
				ErrOutcomeUnknown, r.lease.Token, r.lease.Fence, st.lostSession))
			continue
		}
		r.sent = false
		releasing[r.lease.seq] = true
	}
	for seq, op := range st.ops {
		h, isHeld := held[seq]
		switch {
		case op.cancelled:
			if isHeld || waiting[seq] {
				st.send(&wire.Frame{Op: wire.OpCancel, Seq: seq, Token: op.token})
			}
			delete(st.ops, seq)
		case op.lease != nil:
			if !isHeld || h.Fence != op.lease.Fence {
				st.finish(op, ErrLeaseLost)
			}
		case isHeld:
			st.deliver(op, h.Fence, h.Rec)
		case waiting[seq]:
			op.sent = true
		default:
			op.sent = false
		}
		delete(held, seq)
		delete(waiting, seq)
	}
	for seq, h := range held { // granted to a request nobody waits for any more
		if !releasing[seq] {
			st.send(&wire.Frame{Op: wire.OpCancel, Seq: seq, Token: h.Token})
		}
	}
	for _, q := range w.Waiting {
		if waiting[q.Seq] {
			st.send(&wire.Frame{Op: wire.OpCancel, Seq: q.Seq, Token: q.Token})
		}
	}
	for seq, r := range st.releases {
		st.sendRelease(seq, r)
	}
	for seq, op := range st.ops {
		if !op.sent && op.lease == nil {
			op.sent = true
			st.send(&wire.Frame{Op: wire.OpAcquire, Seq: seq, Token: op.token})
		}
	}
}

// lost handles the end of a connection. Unless the server announced it (a restart:
// the session lives on), the leases can no longer be trusted.
func (st *runState) lost(err error) {
	if st.conn == nil {
		return
	}
	announced := st.conn.announced
	if !announced {
		// Leases end before the socket closes: the server takes a close from our side
		// for the death of this process and may hand the token on at once.
		st.loseLeases(fmt.Errorf("%w: %v", ErrConnLost, err))
	}
	st.conn.close()
	st.conn = nil
	st.ka.Stop()
	for seq := range st.kaSent {
		delete(st.kaSent, seq)
	}
	if announced {
		st.c.log.Info("server closed the connection with notice; resuming", "session", fmt.Sprintf("%x", st.session))
		st.redial.Reset(0)
		return
	}
	st.c.log.Warn("connection lost", "err", err)
	st.redial.Reset(st.backoff)
}

func (st *runState) loseLeases(why error) {
	for _, op := range st.ops {
		if op.lease != nil {
			st.finish(op, why)
		}
	}
}

func (st *runState) deliver(op *acquireOp, fence uint64, rec wire.Record) {
	op.granted = Lease{Token: op.token, Fence: fence, Record: Record{Counter: rec.Counter, Waits: rec.Waits},
		c: st.c, seq: op.seq}
	op.lease = &op.granted
	op.res <- acquireResult{lease: op.lease}
	if !time.Now().Before(st.deadline) {
		st.finish(op, ErrSessionExpired)
	}
}

// finish ends a request: its lease (if any) ends with why, its slot frees.
func (st *runState) finish(op *acquireOp, why error) {
	if op.lease != nil {
		op.lease.end(why)
	}
	delete(st.ops, op.seq)
	if op.slot != nil {
		<-op.slot
		op.slot = nil
	}
}

// frame handles a frame from the server: grants and release answers here, the rest
// apart, so that the hot path's stack frame stays small (see send).
func (st *runState) frame(f *wire.Frame) {
	switch f.Op {
	case wire.OpGrant:
		if op := st.ops[f.Seq]; op != nil && !op.cancelled && op.lease == nil {
			st.deliver(op, f.Fence, f.Rec)
		}
	case wire.OpReleased:
		if r := st.releases[f.Seq]; r != nil {
			st.resolveRelease(f.Seq, r, nil)
		}
	default:
		st.frameOther(f)
	}
}

// frameOther handles the frames that are not on the hot path.
//
//go:noinline
func (st *runState) frameOther(f *wire.Frame) {
	switch f.Op {
	case wire.OpQueued:
	case wire.OpCancelled:
		op := st.ops[f.Seq]
		switch {
		case op == nil:
		case op.cancelled:
			delete(st.ops, f.Seq)
		case op.lease == nil && f.Text != "":
			// The server dropped our request (it thought our node dead): ask again.
			st.c.log.Info("request dropped by the server; asking again", "token", op.token, "reason", f.Text)
			st.send(&wire.Frame{Op: wire.OpAcquire, Seq: f.Seq, Token: op.token})
		}
	case wire.OpKeepaliveAck:
		if at, ok := st.kaSent[f.Seq]; ok {
			delete(st.kaSent, f.Seq)
			st.epoch = f.Epoch
			st.extend(at)
		}
	case wire.OpRevoked:
		for _, op := range st.ops {
			if op.lease != nil && op.token == f.Token && op.lease.Fence == f.Fence {
				st.c.log.Warn("lease revoked", "token", f.Token, "fence", f.Fence, "reason", f.Text)
				st.finish(op, fmt.Errorf("%w: %s", ErrRevoked, f.Text))
			}
		}
	case wire.OpError:
		st.serverError(f)
	case wire.OpClosing:
		st.conn.announced = true
	default:
		st.lost(fmt.Errorf("unexpected %s from server", f.Op))
	}
}

func (st *runState) serverError(f *wire.Frame) {
	err := fmt.Errorf("%w: %s: %s", ErrRefused, f.Code, f.Text)
	if r := st.releases[f.Seq]; r != nil {
		switch f.Code {
		case wire.CodeStaleFence:
			err = fmt.Errorf("%w: %s", ErrStaleFence, f.Text)
		case wire.CodeNotHeld, wire.CodeSessionExpired:
			err = fmt.Errorf("%w: %s", ErrLeaseLost, f.Text)
		case wire.CodeOutcomeUnknown:
			err = fmt.Errorf("%w: %s", ErrOutcomeUnknown, f.Text)
		}
		st.resolveRelease(f.Seq, r, err)
		return
	}
	if op := st.ops[f.Seq]; op != nil && op.lease == nil {
		op.res <- acquireResult{err: err}
		st.finish(op, err)
		return
	}
	if f.Code == wire.CodeSessionExpired {
		// Our session ended at the server (we were frozen or cut off): leases are gone;
		// the next connection opens a new session.
		st.c.log.Warn("session expired at the server", "session", fmt.Sprintf("%x", st.session))
		st.loseLeases(ErrSessionExpired)
		st.session = 0
		// The server answers a connection's frames in order, a requeue's deferred
		// answer included: a release still unanswered now came after the session's
		// end and was not applied. It goes out again on the next session, to be
		// refused there.
		for _, r := range st.releases {
			r.mayApply = false
		}
		return
	}
	st.c.log.Warn("server error", "code", f.Code.String(), "text", f.Text)
}

func (st *runState) resolveRelease(seq uint64, r *releaseReq, err error) {
	delete(st.releases, seq)
	r.answer(err)
	if op := st.ops[r.lease.seq]; op != nil && op.lease == r.lease {
		st.finish(op, ErrReleased)
	} else {
		r.lease.end(ErrReleased)
	}
	// A refused requeue queued nothing at the server: its acquire fails the same way.
	if next := r.then; err != nil && next != nil && st.ops[next.seq] == next && next.lease == nil && !next.cancelled {
		next.res <- acquireResult{err: err}
		st.finish(next, err)
	}
	// A requeue's release lives in the next request, and the lease it gave back in
	// the request before: let go of it, or a loop of requeues chains every turn.
	r.lease = nil
}

func (st *runState) sendRelease(seq uint64, r *releaseReq) {
	if st.conn == nil || r.sent {
		return
	}
	r.sent = true
	r.mayApply = r.mayApply || st.session != 0
	op := wire.OpRelease
	if next := r.then; next != nil && st.ops[next.seq] == next && !next.sent && !next.cancelled {
		op, next.sent = wire.OpRequeue, true
	}
	st.send(&wire.Frame{Op: op, Seq: seq, Token: r.lease.Token, Fence: r.lease.Fence,
		Rec: wire.Record{Counter: r.rec.Counter, Waits: r.rec.Waits}})
}

func (st *runState) keepalive() {
	if st.conn == nil {
		return
	}
	st.ka.Reset(st.ttl / 3)
	seq := st.nextSeq()
	now := time.Now()
	st.kaSent[seq] = now
	for s, at := range st.kaSent { // answers that never came
		if now.Sub(at) > st.ttl {
			delete(st.kaSent, s)
		}
	}
	st.send(&wire.Frame{Op: wire.OpKeepalive, Seq: seq})
}

// checkTrust ends every lease once the session's deadline has passed by this clock,
// and gives the tokens back if the server can still hear us.
func (st *runState) checkTrust(now time.Time) {
	if now.Before(st.deadline) {
		st.trust.Reset(st.deadline.Sub(now))
		return
	}
	for seq, op := range st.ops {
		if op.lease != nil {
			st.c.log.Warn("lease expired by the local clock", "token", op.token, "fence", op.lease.Fence)
			st.finish(op, ErrSessionExpired) // before the cancel that lets the server pass it on
			st.send(&wire.Frame{Op: wire.OpCancel, Seq: seq, Token: op.token})
		}
	}
}

func (st *runState) request(req any) {
	switch r := req.(type) {
	case *acquireOp:
		r.seq = st.nextSeq()
		st.ops[r.seq] = r
		if st.conn != nil {
			r.sent = true
			st.send(&wire.Frame{Op: wire.OpAcquire, Seq: r.seq, Token: r.token})
		}
	case releaseOp:
		st.release(r, nil)
	case requeueOp:
		st.release(r.next.requeued.releaseOp, r.next)
	default:
		st.requestOther(req)
	}
}

// requestOther handles the requests that are not on the hot path (see frame).
//
//go:noinline
func (st *runState) requestOther(req any) {
	switch r := req.(type) {
	case cancelOp:
		op := r.op
		if cur := st.ops[op.seq]; cur == op && !op.cancelled {
			op.cancelled = true
			if op.lease != nil {
				op.lease.end(context.Canceled)
			}
			if op.slot != nil {
				<-op.slot
				op.slot = nil
			}
			if op.sent && st.conn != nil {
				st.send(&wire.Frame{Op: wire.OpCancel, Seq: op.seq, Token: op.token})
			} else if !op.sent {
				delete(st.ops, op.seq)
			}
		}
	case infoOp:
		info := Info{Connected: st.conn != nil, Session: st.session, Epoch: st.epoch, TTL: st.ttl, Deadline: st.deadline}
		if st.conn != nil {
			info.Server = st.conn.server
		}
		r.res <- info
	}
}

// release sends a lease's release, with next as the acquire that goes in the same
// frame for a requeue (r is then next.requeued's). The release is sent even when the
// lease is lost, now or once reconnected: the server's fence decides, and refuses it
// if anyone else may have written since. The lease ends now: the server may pass the
// token on the moment it reads the frame.
func (st *runState) release(r releaseOp, next *acquireOp) {
	l := r.lease
	if next != nil {
		// A requeue: its acquire answers for it. The old request's answer channel
		// has been read (its caller holds the lease) and gets nothing more: reuse it.
		if old := st.ops[l.seq]; old != nil && old.lease == l && old.res != nil {
			next.res, old.res = old.res, nil
		} else {
			next.res = make(chan acquireResult, 1)
		}
	}
	if err := l.ended(); errors.Is(err, ErrReleased) || errors.Is(err, context.Canceled) {
		releasedTwice(r, next, err)
		return
	}
	seq := st.nextSeq()
	var rr *releaseReq
	if old := st.ops[l.seq]; next != nil && (old == nil || old.lease != l) {
		// The lease ended here already and its request with it: there is no place in
		// line to pass on. Requeue falls back to a release and then an acquire, and
		// reads the release's answer itself.
		rr = &next.requeued
		rr.res = make(chan error, 1)
		next.res <- acquireResult{err: errNotRequeued}
	} else if next != nil {
		// Same seq: the server queues the acquire under the release's. The token's
		// slot passes from the old request to the new one.
		next.seq, next.slot, old.slot = seq, old.slot, nil
		rr = &next.requeued
		rr.then = next
		st.ops[seq] = next
	} else {
		rr = &releaseReq{releaseOp: r}
	}
	st.releases[seq] = rr
	l.end(ErrReleased)
	st.sendRelease(seq, rr)
}

// releasedTwice refuses a release of a lease already given back or withdrawn.
//
//go:noinline
func releasedTwice(r releaseOp, next *acquireOp, err error) {
	err = fmt.Errorf("baton: release of %q fence %d: %w", r.lease.Token, r.lease.Fence, err)
	if next != nil {
		next.res <- acquireResult{err: err}
	} else {
		r.res <- err
	}
}

// shutdown ends everything still outstanding, then says goodbye so that the server
// passes on at once whatever we held. Leases end first: the server acts on the
// goodbye the moment it reads it.
func (st *runState) shutdown() {
	st.closed = true
	idleTurns.remove(st.c)
	st.redial.Stop()
	st.trust.Stop()
	st.ka.Stop()
	for _, op := range st.ops {
		if op.lease == nil && !op.cancelled {
			op.res <- acquireResult{err: ErrClosed}
		}
		st.finish(op, ErrClosed)
	}
	for seq, r := range st.releases {
		delete(st.releases, seq)
		r.answer(ErrClosed)
		r.lease.end(ErrClosed)
	}
	if st.conn != nil {
		st.send(&wire.Frame{Op: wire.OpGoodbye})
		st.flush()
		if st.conn != nil {
			st.conn.close()
			st.conn = nil
		}
	}
	// A dial in progress closes what it gets: it finds st.closed.
}
