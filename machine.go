package baton

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// machine is the client's session logic, with no I/O: the way internal/token is the
// server's. Its inputs are a caller's request (request), a frame from the server
// (frame), a tick of the clock (checkTrust, keepalive, overdue), a dial's result
// (welcome, dialFailed, hedged) and the loss of the connection (lost). Its outputs
// are frames to send (out), answers to callers (each request's channel, each
// lease's end) and what the driver must do next (fx: close the connection, dial,
// arm a timer). The driver
// (runState, session.go) owns the connection, the timers and the dialer, feeds the
// machine under Client.mu and carries out what it asks. It never decides anything.
type machine struct {
	c     *Client // for leases, the configuration and the log
	clock func() time.Time

	connected bool   // a connection is up (the driver has it)
	connGen   uint64 // counts connections: the current one's number
	server    string // its address
	announced bool   // the server said Closing: our session lives on, resume it
	durable   bool   // the session outlives the server's process (Welcome.Durable): see lost
	closed    bool   // Close has run: nothing more happens
	dialing   bool
	backoff   time.Duration
	failed    int // dial attempts since the last session
	// lastDialErr is why the last connect failed, until one succeeds: Dial says it
	// when its context ends before a session (a wrong key, a wrong address).
	lastDialErr error

	session     uint64
	lostSession uint64 // the session before the latest welcome, for messages
	epoch       uint64
	ttl         time.Duration
	deadline    time.Time            // the session is trusted until then, by this clock
	kaSent      map[uint64]time.Time // keepalive seq → when it was sent
	first       bool                 // a first session was had

	// awaiting is when a frame the server owes at once (a keepalive's answer, a
	// release's) left with nothing heard from the server since; zero when none is
	// owed. hedging: a connect to another server is out (overdue); hedgedFor, the
	// awaiting that the last one was for (one silence is logged once).
	awaiting  time.Time
	hedging   bool
	hedgedFor time.Time
	watchAt   time.Time // when the overdue timer fires; zero while it is not armed

	seq      uint64
	ops      map[uint64]*acquireOp  // acquire seq → request, waiting or holding
	releases map[uint64]*releaseReq // release seq → request awaiting its answer

	out []wire.Frame // frames to send, in order: the driver writes them
	fx  effects
}

// effects are what the driver must do once an input has been handled.
type effects struct {
	hangUp    bool          // the connection is lost: close it
	dial      bool          // start a dial
	redial    bool          // dial again after redialIn
	redialIn  time.Duration //
	keepalive bool          // arm the keepalive timer for a third of the TTL
	noKA      bool          // stop the keepalive timer
	trust     bool          // the trust deadline moved, or its timer fired early: arm it again
	sessionUp bool          // a welcome arrived (the first session is had: Dial may return)
	watch     bool          // arm the overdue timer for watchIn
	watchIn   time.Duration //
	hedge     bool          // connect to another server while this connection stays (overdue)
}

// reqPhase is where an acquire stands. Each request is in exactly one.
type reqPhase uint8

const (
	// reqUnsent: known here only; it goes out with the next connection (or, for a
	// requeue, in the same frame as its release).
	reqUnsent reqPhase = iota
	// reqWaiting: sent; the server has it in its queue, or it is on its way there.
	reqWaiting
	// reqHolding: granted; lease is the caller's until it ends.
	reqHolding
	// reqWithdrawn: the caller gave up after it was sent; the cancel is out and the
	// request goes when the server confirms, or when a welcome shows it gone.
	reqWithdrawn
)

// relPhase is where a release stands. Each release is in exactly one.
type relPhase uint8

const (
	// relQueued: not on the wire, and never applied: it never left, or it left only
	// after the server said its session had ended. It goes out on the next
	// connection, whatever the session.
	relQueued relPhase = iota
	// relSent: on the wire, sent while its session was alive: the server may apply
	// it, and the answer comes on this connection.
	relSent
	// relSentLate: on the wire, where it cannot apply: on another session than its
	// lease's, after the server said the session had ended, or behind a cancel of the
	// same hold. It will be refused.
	relSentLate
	// relInDoubt: it left while its session was alive and the connection was lost
	// before the answer: the server may have applied it. A resumed session sends it
	// again and gets the first answer; a new one cannot know (ErrOutcomeUnknown).
	relInDoubt
)

type releaseReq struct {
	releaseOp
	phase relPhase
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

func newMachine(c *Client) *machine {
	return &machine{c: c, clock: time.Now, kaSent: map[uint64]time.Time{}, ops: map[uint64]*acquireOp{},
		releases: map[uint64]*releaseReq{}, backoff: 50 * time.Millisecond}
}

func (m *machine) nextSeq() uint64 {
	m.seq++
	return m.seq
}

// send queues f for the connection, if there is one. f is a pointer, and the hot
// paths keep their stack frames small, because a goroutine of a process with
// hundreds of sessions finds its stack cold in the cache when its turn comes.
func (m *machine) send(f *wire.Frame) {
	if !m.connected {
		return
	}
	if len(m.out) < cap(m.out) { // copied into place: append would copy via the stack
		m.out = m.out[:len(m.out)+1]
	} else {
		m.out = append(m.out, wire.Frame{})
	}
	m.out[len(m.out)-1] = *f
}

// startDial asks the driver for a connection unless one is up or on its way.
func (m *machine) startDial() {
	if m.dialing || m.connected || m.closed || m.hedging {
		return
	}
	m.dialing = true
	m.fx.dial = true
}

// dialFailed is a dial's failure: try again later, backing off.
func (m *machine) dialFailed(err error) {
	m.dialing = false
	m.failed++
	m.lastDialErr = err
	level := m.c.log.Debug
	if m.failed%10 == 1 {
		level = m.c.log.Warn
	}
	level("connect failed, retrying", "err", err, "attempt", m.failed, "in", m.backoff)
	m.fx.redial, m.fx.redialIn = true, m.backoff
	m.backoff = min(2*m.backoff, m.redialCeiling())
}

// redialCeiling is the longest back-off between connects: a second, but a
// twentieth of the TTL while a durable session holds leases or waits in queues:
// they last only until the session's deadline unless it is resumed (an election is
// under way), and a waiter that comes back late has lost its place.
func (m *machine) redialCeiling() time.Duration {
	if m.durable && !m.closed && len(m.ops) > 0 {
		return min(max(m.ttl/20, 50*time.Millisecond), time.Second)
	}
	return time.Second
}

// welcome is a dial's success: the server's welcome to a hello sent at sentAt. The
// driver has the connection up.
func (m *machine) welcome(w *wire.Frame, sentAt time.Time, server string) {
	m.dialing = false
	m.failed, m.backoff, m.lastDialErr = 0, 50*time.Millisecond, nil
	m.connected, m.announced, m.server = true, false, server
	m.awaiting = time.Time{}
	m.connGen++
	resumed := w.Resumed && w.Session == m.session
	m.lostSession = m.session
	if !resumed {
		// Leases of the old session are gone; they end before the new session's
		// deadline is set, which they could otherwise read as theirs (Lease.Err).
		// The new session is trusted from its own hello on: never by the old one's
		// deadline, which a longer TTL may have put later than the server's.
		m.loseLeases(ErrSessionExpired)
		m.deadline = time.Time{}
	}
	m.session, m.epoch, m.durable = w.Session, w.Epoch, w.Durable
	m.ttl = time.Duration(w.TTLms) * time.Millisecond
	m.fx.keepalive = true
	m.extend(sentAt)
	m.c.log.Info("session", "server", server, "session", fmt.Sprintf("%x", m.session), "resumed", resumed,
		"epoch", m.epoch, "ttl", m.ttl, "held", len(w.Held), "waiting", len(w.Waiting))
	m.reconcile(w, resumed)
	if !m.first {
		m.first = true
		m.fx.sessionUp = true
	}
}

// extend moves the trust deadline to sentAt + TTL less the drift margin: sentAt is
// when a message the server answered left this process, so the server saw it later
// and will expire the session later still.
//
// A deadline the clock has passed is acted on first (expireHolds): a keepalive's
// answer read late must not revive leases that Lease.Err has already reported ended.
func (m *machine) extend(sentAt time.Time) {
	if !m.deadline.IsZero() && !m.clock().Before(m.deadline) {
		m.expireHolds()
	}
	margin := time.Duration(float64(m.ttl) * m.c.cfg.DriftBound)
	d := sentAt.Add(m.ttl - margin)
	if d.After(m.deadline) {
		m.deadline = d
		m.c.trustUntil.Store(int64(d.Sub(m.c.base)))
	}
	m.fx.trust = true
}

// reconcile brings local requests in line with what the server says the session has
// after a (re)connect: grants that were lost in flight are delivered, requests the
// server never saw are sent again, and anything the server holds for us that nobody
// wants any more is given up, cancels before new acquires so that order holds.
func (m *machine) reconcile(w *wire.Frame, resumed bool) {
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
	// goes out too (the server refuses it and counts it: its lease is gone); one in
	// doubt cannot be known: its answer went with the old session.
	releasing := map[uint64]bool{}
	for seq, r := range m.releases {
		if r.phase == relInDoubt && !resumed {
			m.resolveRelease(seq, r, fmt.Errorf("%w: release of %q fence %d was sent, and session %x ended before its answer came",
				ErrOutcomeUnknown, r.lease.Token, r.lease.Fence, m.lostSession))
			continue
		}
		releasing[r.lease.seq] = true
	}
	for seq, op := range m.ops {
		h, isHeld := held[seq]
		switch {
		case op.phase == reqWithdrawn:
			if isHeld || waiting[seq] {
				m.send(&wire.Frame{Op: wire.OpCancel, Seq: seq, Token: op.token})
			}
			delete(m.ops, seq)
		case op.phase == reqHolding:
			if !isHeld || h.Fence != op.lease.Fence {
				m.finish(op, ErrLeaseLost)
			}
		case isHeld:
			m.deliver(op, h.Fence, h.Rec)
		case waiting[seq]:
			op.phase = reqWaiting
		default:
			op.phase = reqUnsent
		}
		delete(held, seq)
		delete(waiting, seq)
	}
	for seq, h := range held { // granted to a request nobody waits for any more
		if !releasing[seq] {
			m.send(&wire.Frame{Op: wire.OpCancel, Seq: seq, Token: h.Token})
		}
	}
	for _, q := range w.Waiting {
		if waiting[q.Seq] {
			m.send(&wire.Frame{Op: wire.OpCancel, Seq: q.Seq, Token: q.Token})
		}
	}
	for _, seq := range slices.Sorted(maps.Keys(m.releases)) { // in the order they were made
		m.sendRelease(seq, m.releases[seq])
	}
	for seq, op := range m.ops {
		if op.phase == reqUnsent {
			op.phase = reqWaiting
			m.send(&wire.Frame{Op: wire.OpAcquire, Seq: seq, Token: op.token})
		}
	}
}

// lost handles the end of a connection. Unless the server announced it (a restart:
// the session lives on), the leases can no longer be trusted, with one exception: a
// durable session (its state in a raft log) whose connection the server's process
// closed in order (closedByServer). That server crashed or stopped serving, and
// whoever serves next keeps the session, with a full TTL of grace
// (../shared/DESIGN.md, replication rules 4 and 7): the leases stay trusted until
// the session's deadline while the client resumes, and the welcome says what the
// session still holds. A connection reset, or one this side gave up on (a read
// timeout), may look like this process's death to a live server: those leases end.
func (m *machine) lost(err error) {
	if !m.connected {
		return
	}
	announced := m.announced || (m.durable && closedByServer(err))
	if announced {
		m.c.log.Info("server closed the connection; resuming the session", "session", fmt.Sprintf("%x", m.session), "err", err)
	} else {
		m.c.log.Warn("connection lost", "err", err)
	}
	m.disconnect(announced, err)
}

// disconnect ends the connection: its leases with it unless the session lives on
// (keep), and then a redial at once.
func (m *machine) disconnect(keep bool, err error) {
	if !keep {
		// Leases end before the socket closes: the server takes a close from our side
		// for the death of this process and may hand the token on at once.
		m.loseLeases(fmt.Errorf("%w: %v", ErrConnLost, err))
	}
	for _, r := range m.releases {
		switch r.phase {
		case relSent:
			r.phase = relInDoubt
		case relSentLate:
			r.phase = relQueued
		}
	}
	m.connected, m.announced, m.server = false, false, ""
	m.awaiting = time.Time{}
	m.out = m.out[:0]
	clear(m.kaSent)
	m.fx.hangUp, m.fx.noKA = true, true
	m.fx.redial = true
	if keep {
		m.fx.redialIn = 0
		return
	}
	m.fx.redialIn = m.backoff
}

// owe notes that the server owes an answer at once (to a keepalive or a release)
// and arms the overdue timer, unless an answer is owed already. Only a durable
// session can move to another server, and only with Resolve to find one.
func (m *machine) owe() {
	if m.awaiting.IsZero() && m.durable && m.c.cfg.Resolve != nil {
		m.awaiting = m.clock()
		if m.watchAt.IsZero() { // armed already: it fires early and arms for the rest
			m.watch(m.hedgeAfter())
		}
	}
}

// watch arms the overdue timer to fire in d: on the release path, at most once per
// hedgeAfter rather than once per release.
func (m *machine) watch(d time.Duration) {
	m.fx.watch, m.fx.watchIn = true, d
	m.watchAt = m.clock().Add(d)
}

// hedgeAfter is how long an owed answer may take before the client looks for
// another leader: a tenth of the TTL, at least 200 ms (a commit, or a leader's
// check with a quorum, under load).
func (m *machine) hedgeAfter() time.Duration {
	return max(m.ttl/10, 200*time.Millisecond)
}

// overdue is the overdue timer's tick. A server silent that long, while it owes an
// answer, may be frozen or cut off, its leadership lost, with nothing on the
// connection to say so until the read deadline, most of a TTL away: by then the
// session's leases have run out. So the client connects to another server while
// keeping this connection (hedged). If that one welcomes the session, it leads
// now, and the session moves there; else the client asks again after as long.
func (m *machine) overdue() {
	m.watchAt = time.Time{}
	if !m.connected || m.awaiting.IsZero() || m.hedging {
		return
	}
	if wait := m.hedgeAfter() - m.clock().Sub(m.awaiting); wait > 0 {
		m.watch(wait)
		return
	}
	level := slog.LevelInfo
	if m.hedgedFor.Equal(m.awaiting) {
		level = slog.LevelDebug // the same silence, asked about again (one server alone answers none)
	}
	m.c.log.Log(context.Background(), level, "server silent; asking another server whether it leads", "server", m.server,
		"silent", m.clock().Sub(m.awaiting).Round(time.Millisecond))
	m.hedging, m.fx.hedge, m.hedgedFor = true, true, m.awaiting
}

// hedged takes the outcome of the connect overdue asked for. welcomed says that
// server to welcomed the session; the driver then hands that connection to welcome.
// It must: a server takes a connection the client closes for the death of the
// client's process. No other connect starts while one is out (startDial),
// so that the session has one newest connection.
func (m *machine) hedged(to string, welcomed bool) {
	m.hedging = false
	switch {
	case welcomed && m.connected:
		// That server leads and answers for the session: whatever this one says now
		// was decided by a deposed leader, and cannot commit. The leases stay, as
		// when a server's process closes the connection (lost).
		m.c.log.Warn("server silent; the session moved to the server that leads now", "server", m.server, "to", to)
		m.disconnect(true, nil)
	case welcomed: // the connection was lost meanwhile: this one replaces it
	case !m.connected:
		m.startDial() // the redial that came meanwhile waited for this connect
	case !m.awaiting.IsZero():
		m.watch(m.hedgeAfter())
	}
}

func (m *machine) loseLeases(why error) {
	for _, op := range m.ops {
		if op.phase == reqHolding {
			m.finish(op, why)
		}
	}
}

func (m *machine) deliver(op *acquireOp, fence uint64, rec wire.Record) {
	op.granted = Lease{Token: op.token, Fence: fence, Record: Record{Counter: rec.Counter, Waits: rec.Waits},
		c: m.c, seq: op.seq, session: m.session}
	op.lease = &op.granted
	op.phase = reqHolding
	op.res <- acquireResult{lease: op.lease}
	if !m.clock().Before(m.deadline) {
		m.giveBack(op) // granted too late to be trusted: the server has it back at once
	}
}

// finish ends a request: its lease (if any) ends with why, its slot frees.
func (m *machine) finish(op *acquireOp, why error) {
	if op.lease != nil {
		op.lease.end(why)
	}
	delete(m.ops, op.seq)
	if op.slot != nil {
		<-op.slot
		op.slot = nil
	}
}

// frame handles a frame from the server: grants and release answers here, the rest
// apart, so that the hot path's stack frame stays small (see send).
func (m *machine) frame(f *wire.Frame) {
	m.awaiting = time.Time{} // the server is heard
	switch f.Op {
	case wire.OpGrant:
		if op := m.ops[f.Seq]; op != nil && op.phase == reqWaiting {
			m.deliver(op, f.Fence, f.Rec)
		}
	case wire.OpReleased:
		if r := m.releases[f.Seq]; r != nil {
			m.resolveRelease(f.Seq, r, nil)
		}
	default:
		m.frameOther(f)
	}
}

// frameOther handles the frames that are not on the hot path.
//
//go:noinline
func (m *machine) frameOther(f *wire.Frame) {
	switch f.Op {
	case wire.OpQueued:
	case wire.OpCancelled:
		op := m.ops[f.Seq]
		switch {
		case op == nil:
		case op.phase == reqWithdrawn:
			delete(m.ops, f.Seq)
		case op.phase == reqWaiting && f.Text != "":
			// The server dropped our request (it thought our node dead): ask again.
			m.c.log.Info("request dropped by the server; asking again", "token", op.token, "reason", f.Text)
			m.send(&wire.Frame{Op: wire.OpAcquire, Seq: f.Seq, Token: op.token})
		}
	case wire.OpKeepaliveAck:
		if at, ok := m.kaSent[f.Seq]; ok {
			delete(m.kaSent, f.Seq)
			m.epoch = f.Epoch
			m.extend(at)
		}
	case wire.OpRevoked:
		for _, op := range m.ops {
			if op.phase == reqHolding && op.token == f.Token && op.lease.Fence == f.Fence {
				m.c.log.Warn("lease revoked", "token", f.Token, "fence", f.Fence, "reason", f.Text)
				m.finish(op, fmt.Errorf("%w: %s", ErrRevoked, f.Text))
			}
		}
	case wire.OpError:
		m.serverError(f)
	case wire.OpClosing:
		m.announced = true
	default:
		m.lost(fmt.Errorf("unexpected %s from server", f.Op))
	}
}

func (m *machine) serverError(f *wire.Frame) {
	err := fmt.Errorf("%w: %s: %s", ErrRefused, f.Code, f.Text)
	if r := m.releases[f.Seq]; r != nil {
		switch f.Code {
		case wire.CodeStaleFence:
			err = fmt.Errorf("%w: %s", ErrStaleFence, f.Text)
		case wire.CodeNotHeld, wire.CodeSessionExpired:
			err = fmt.Errorf("%w: %s", ErrLeaseLost, f.Text)
		case wire.CodeOutcomeUnknown:
			err = fmt.Errorf("%w: %s", ErrOutcomeUnknown, f.Text)
		}
		m.resolveRelease(f.Seq, r, err)
		return
	}
	if f.Code == wire.CodeSessionExpired {
		// Whatever frame it answers, the session is over: an acquire it refused goes
		// out again on the next session rather than fail its caller.
		if op := m.ops[f.Seq]; op != nil && op.phase == reqWaiting {
			op.phase = reqUnsent
		}
		// Our session ended at the server (we were frozen or cut off): leases are gone;
		// the next connection opens a new session.
		m.c.log.Warn("session expired at the server", "session", fmt.Sprintf("%x", m.session))
		m.loseLeases(ErrSessionExpired)
		m.session = 0
		// The server answers a connection's frames in order, a requeue's deferred
		// answer included: a release still unanswered now came after the session's
		// end and was not applied. It goes out again on the next session, to be
		// refused there.
		for _, r := range m.releases {
			if r.phase == relSent {
				r.phase = relSentLate
			}
		}
		return
	}
	if op := m.ops[f.Seq]; op != nil && op.lease == nil {
		op.res <- acquireResult{err: err}
		m.finish(op, err)
		return
	}
	m.c.log.Warn("server error", "code", f.Code.String(), "text", f.Text)
}

func (m *machine) resolveRelease(seq uint64, r *releaseReq, err error) {
	delete(m.releases, seq)
	r.answer(err)
	if op := m.ops[r.lease.seq]; op != nil && op.lease == r.lease {
		m.finish(op, ErrReleased)
	} else {
		r.lease.end(ErrReleased)
	}
	// A refused requeue queued nothing at the server: its acquire fails the same way.
	if next := r.then; err != nil && next != nil && m.ops[next.seq] == next && next.phase != reqHolding && next.phase != reqWithdrawn {
		next.res <- acquireResult{err: err}
		m.finish(next, err)
	}
	// A requeue's release lives in the next request, and the lease it gave back in
	// the request before: let go of it, or a loop of requeues chains every turn.
	r.lease = nil
}

// sendRelease puts a release on the wire if it is not there yet and there is a
// connection; a requeue's acquire goes in the same frame if it has not gone yet.
func (m *machine) sendRelease(seq uint64, r *releaseReq) {
	if !m.connected || r.phase == relSent || r.phase == relSentLate {
		return
	}
	// It can apply only on the session that holds the lease, while the server has
	// not ended it, and not behind a cancel of the same hold on this connection.
	if l := r.lease; m.session != 0 && m.session == l.session && l.cancelledOn != m.connGen {
		r.phase = relSent
	} else {
		r.phase = relSentLate
	}
	op := wire.OpRelease
	if next := r.then; next != nil && m.ops[next.seq] == next && next.phase == reqUnsent {
		op, next.phase = wire.OpRequeue, reqWaiting
	}
	m.send(&wire.Frame{Op: op, Seq: seq, Token: r.lease.Token, Fence: r.lease.Fence,
		Rec: wire.Record{Counter: r.rec.Counter, Waits: r.rec.Waits}})
	m.owe()
}

// keepalive is the keepalive timer's tick: one more keepalive, and the timer again.
func (m *machine) keepalive() {
	if !m.connected {
		return
	}
	m.fx.keepalive = true
	seq := m.nextSeq()
	now := m.clock()
	m.kaSent[seq] = now
	for s, at := range m.kaSent { // answers that never came
		if now.Sub(at) > m.ttl {
			delete(m.kaSent, s)
		}
	}
	m.send(&wire.Frame{Op: wire.OpKeepalive, Seq: seq})
	m.owe()
}

// checkTrust is the trust timer's tick: it ends every lease once the session's
// deadline has passed by this clock, and gives the tokens back if the server can
// still hear us.
func (m *machine) checkTrust() {
	if m.clock().Before(m.deadline) {
		m.fx.trust = true // fired early: again at the deadline
		return
	}
	m.expireHolds()
}

// expireHolds ends every lease, the session's trust having run out by the clock,
// and gives the tokens back if the server can still hear us.
func (m *machine) expireHolds() {
	for _, op := range m.ops {
		if op.phase == reqHolding {
			m.c.log.Warn("lease expired by the local clock", "token", op.token, "fence", op.lease.Fence)
			m.giveBack(op)
		}
	}
}

// giveBack ends a held request's lease as no longer trusted (ErrSessionExpired) and
// cancels the hold, so that the server passes the token on at once.
func (m *machine) giveBack(op *acquireOp) {
	m.finish(op, ErrSessionExpired) // before the cancel that lets the server pass it on
	if m.connected {
		op.lease.cancelledOn = m.connGen
	}
	m.send(&wire.Frame{Op: wire.OpCancel, Seq: op.seq, Token: op.token})
}

// request handles a caller's request.
func (m *machine) request(req any) {
	switch r := req.(type) {
	case *acquireOp:
		r.seq = m.nextSeq()
		m.ops[r.seq] = r
		if m.connected {
			r.phase = reqWaiting
			m.send(&wire.Frame{Op: wire.OpAcquire, Seq: r.seq, Token: r.token})
		}
	case releaseOp:
		m.release(r, nil)
	case requeueOp:
		m.release(r.next.requeued.releaseOp, r.next)
	default:
		m.requestOther(req)
	}
}

// requestOther handles the requests that are not on the hot path (see frame).
//
//go:noinline
func (m *machine) requestOther(req any) {
	switch r := req.(type) {
	case cancelOp:
		op := r.op
		if cur := m.ops[op.seq]; cur != op || op.phase == reqWithdrawn {
			return
		}
		if op.lease != nil {
			op.lease.end(context.Canceled)
		}
		if op.slot != nil {
			<-op.slot
			op.slot = nil
		}
		if op.phase == reqUnsent {
			delete(m.ops, op.seq)
			return
		}
		op.phase = reqWithdrawn
		m.send(&wire.Frame{Op: wire.OpCancel, Seq: op.seq, Token: op.token})
	case infoOp:
		r.res <- Info{Connected: m.connected, Session: m.session, Epoch: m.epoch, TTL: m.ttl, Deadline: m.deadline, Server: m.server}
	}
}

// release sends a lease's release, with next as the acquire that goes in the same
// frame for a requeue (r is then next.requeued's). The release is sent even when the
// lease is lost, now or once reconnected: the server decides, and refuses it if
// anyone else may have written since. The lease ends now: the server may pass the
// token on the moment it reads the frame.
func (m *machine) release(r releaseOp, next *acquireOp) {
	l := r.lease
	if next != nil {
		// A requeue: its acquire answers for it. The old request's answer channel
		// has been read (its caller holds the lease) and gets nothing more: reuse it.
		if old := m.ops[l.seq]; old != nil && old.lease == l && old.res != nil {
			next.res, old.res = old.res, nil
		} else {
			next.res = make(chan acquireResult, 1)
		}
	}
	if err := l.ended(); errors.Is(err, ErrReleased) || errors.Is(err, context.Canceled) {
		releasedTwice(r, next, err)
		return
	}
	seq := m.nextSeq()
	var rr *releaseReq
	if old := m.ops[l.seq]; next != nil && (old == nil || old.lease != l) {
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
		m.ops[seq] = next
	} else {
		rr = &releaseReq{releaseOp: r}
	}
	m.releases[seq] = rr
	l.end(ErrReleased)
	m.sendRelease(seq, rr)
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
func (m *machine) shutdown() {
	m.closed = true
	for _, op := range m.ops {
		if op.phase == reqUnsent || op.phase == reqWaiting {
			op.res <- acquireResult{err: ErrClosed}
		}
		m.finish(op, ErrClosed)
	}
	for seq, r := range m.releases {
		delete(m.releases, seq)
		r.answer(ErrClosed)
		r.lease.end(ErrClosed)
	}
	m.send(&wire.Frame{Op: wire.OpGoodbye})
}

// closedByServer reports whether the server's process closed the connection: an
// orderly close (EOF), which is what a process's sockets get when it exits or is
// killed. A reset is not taken for one: a middlebox that drops a connection resets
// it both ways, and the server, reading a reset, ends the session at once as if
// this process had died (so must this side end its leases). A middlebox that closed
// both ways in order would deceive both sides alike: baton assumes none between
// clients and servers (docs/design.md).
func closedByServer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
