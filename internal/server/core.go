package server

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/fsm"
	sessions "github.com/baton-dev/baton/internal/session"
	"github.com/baton-dev/baton/internal/token"
	"github.com/baton-dev/baton/internal/wire"
)

// core is the server's state: tokens, sessions, which connection serves which
// session, the epoch. Only the core's owner of the moment (the goroutine holding
// Server.coreMu) touches it; connections, HTTP handlers and timers post it work
// (Server.post).
type core struct {
	s *Server
	// st is the state machine (internal/fsm): tokens, sessions, epoch. The core feeds
	// it and turns what followed into replies, metrics and events (apply).
	st      *fsm.State[*conn]
	d       *durable // with BATON_STATE_DIR: the raft log the state is kept in
	ttl     time.Duration
	started time.Time
	out     []outFrame // replies held back until the state they depend on is durable
	// counted are the batch's grants, releases and reclaims as metrics and logs tell
	// them: told with the replies, once the batch's state is durable, and dropped
	// with them, so that a deposed leader counts nothing that did not commit.
	counted  []tally
	touched  []*conn // connections with replies in the batch being written
	events   []Event // ring of recent events for the status page: no grants
	eventAt  int
	grantLog []Event // ring of the latest grants, apart so that they do not crowd out the rest
	grantAt  int
	// memberState is what the last membership report said of each node, to turn
	// reports into join and leave events.
	memberState map[string]string
	perToken    map[string]*tokenInstruments
	graceEnd    time.Time // grants held back until then after a crash
	// saidGoodbye remembers nodes whose last session ended with a goodbye: memberlist
	// cannot always tell a graceful leave from a death, the token protocol can.
	saidGoodbye map[string]time.Time
	problem     string // what is wrong with the deployment (Status.Problem)

	expiryTimer *time.Timer // fires at the earliest session deadline
	expiryDue   time.Time   // when expiryTimer is due
	graceTimer  *time.Timer // fires at graceEnd
}

// session is a client session (internal/session), with the connection that serves
// it attached (nil while detached). It outlives connections (a client that
// reconnects in time resumes it) and ends on Goodbye, on its TTL, when its
// connection is closed by its peer (the process died), or when its node reboots.
type session = sessions.Session[*conn]

type outFrame struct {
	c *conn
	f wire.Frame
}

type tokenInstruments struct {
	grants        prometheus.Counter
	wait, hold    prometheus.Observer
	staleReleases prometheus.Counter
}

// newState is an empty state machine whose sessions live at most ttl.
func newState(maxTokens int, ttl time.Duration) *fsm.State[*conn] {
	st := fsm.New[*conn](maxTokens)
	st.MaxTTL = ttl
	return st
}

func newCore(s *Server, ttl time.Duration) *core {
	c := &core{s: s, st: newState(s.cfg.MaxTokens, ttl),
		ttl: ttl, started: time.Now(), perToken: map[string]*tokenInstruments{}, events: make([]Event, 0, 64), saidGoodbye: map[string]time.Time{},
		grantLog: make([]Event, 0, 16), memberState: map[string]string{},
	}
	c.expiryTimer = time.AfterFunc(time.Hour, func() { s.post(&work{fn: c.expire}) })
	c.graceTimer = time.AfterFunc(time.Hour, func() {
		s.post(&work{fn: func(now time.Time) { c.exec(&fsm.Command{Op: fsm.OpUnblock, Time: now}); c.apply(nil, now) }})
	})
	return c
}

// commit makes the state durable, then lets out the replies that depend on it. A
// grant therefore never reaches a client before its fence is on disk, and many
// operations share one fsync when they arrive together.
func (c *core) commit() {
	if c.d != nil && !c.settle() {
		return
	}
	c.tell()
	// Encode each connection's replies into its buffer, in order, then write each
	// buffer once: one write per connection per batch.
	for i := range c.out {
		cn, f := c.out[i].c, &c.out[i].f
		if len(cn.obuf) == 0 && !cn.hangup {
			c.touched = append(c.touched, cn)
		}
		switch f.Op {
		case opHangup:
			cn.hangup = true
		case wire.OpClosing:
			cn.hangup = true
			cn.obuf = wire.Append(cn.obuf, f)
		default:
			if !cn.hangup { // nothing follows a hang-up
				cn.obuf = wire.Append(cn.obuf, f)
			}
		}
		c.out[i] = outFrame{}
	}
	c.out = c.out[:0]
	for i, cn := range c.touched {
		cn.write(cn.obuf, cn.hangup)
		cn.obuf = cn.obuf[:0]
		if cap(cn.obuf) > 4<<10 { // a welcome with a long list: do not keep its buffer
			cn.obuf = nil
		}
		c.touched[i] = nil
	}
	c.touched = c.touched[:0]
}

// reply queues f for cn, after the answers deferred for it (see wire.OpRequeue).
func (c *core) reply(cn *conn, f wire.Frame) {
	if cn != nil {
		*c.replyTo(cn) = f
	}
}

// replyTo queues a reply for cn, after the answers deferred for it, and returns it
// zeroed to be filled in where it will be encoded from: the hot paths build no frame
// on the stack to copy (see Server.post). The pointer is good until the next reply
// is queued (the batch may grow and move): fill it in at once.
func (c *core) replyTo(cn *conn) *wire.Frame {
	for _, d := range cn.deferred {
		f := c.outSlot(cn)
		f.Op, f.Seq, f.Token, f.Fence = wire.OpReleased, d.seq, d.token, d.fence
	}
	clear(cn.deferred)
	cn.deferred = cn.deferred[:0]
	return c.outSlot(cn)
}

// outSlot appends a zero reply for cn to the batch and returns its frame.
func (c *core) outSlot(cn *conn) *wire.Frame {
	if len(c.out) < cap(c.out) {
		c.out = c.out[:len(c.out)+1] // commit left the slot zeroed
	} else {
		c.out = append(c.out, outFrame{})
	}
	o := &c.out[len(c.out)-1]
	o.c = cn
	return &o.f
}

// fail refuses a request. Not inlined, like the other refusals: their locals
// (formatting, labels) would widen the hot paths' stack frames.
//
//go:noinline
func (c *core) fail(cn *conn, seq uint64, code wire.Code, reason string, err error) {
	c.s.metrics.protocolErrors.WithLabelValues(reason).Inc()
	c.s.log.Debug("request refused", "conn", cn.remote, "reason", reason, "err", err)
	c.reply(cn, wire.Frame{Op: wire.OpError, Seq: seq, Code: code, Text: err.Error()})
}

func (c *core) instruments(name string) *tokenInstruments {
	if ti := c.perToken[name]; ti != nil {
		return ti
	}
	return c.newInstruments(name)
}

// newInstruments makes a token's metric children, once per token.
//
//go:noinline
func (c *core) newInstruments(name string) *tokenInstruments {
	m := c.s.metrics
	ti := &tokenInstruments{grants: m.grants.WithLabelValues(name), wait: m.wait.WithLabelValues(name),
		hold: m.hold.WithLabelValues(name), staleReleases: m.staleReleases.WithLabelValues(name)}
	c.perToken[name] = ti
	return ti
}

// exec applies a command to the state machine, and with a state directory adds it to
// the batch's log entry. The hot operations call the state machine directly and
// record apart (record), so that memory mode builds no command.
func (c *core) exec(cmd *fsm.Command) {
	if c.d != nil {
		c.d.record(cmd)
	}
	_ = c.st.Apply(cmd) // the core builds only commands it knows
}

// record adds a frame's operation to the batch's log entry; not inlined, so that the
// command is built on a stack frame of its own (see fail).
//
//go:noinline
func (c *core) record(op fsm.Op, s *session, f *wire.Frame, now time.Time) {
	c.d.record(&fsm.Command{Op: op, Time: now, Session: s.ID, Seq: f.Seq, Token: f.Token, Fence: f.Fence, Rec: f.Rec,
		Requeue: f.Op == wire.OpRequeue})
}

// apply turns what followed from the state machine's operations into replies,
// metrics and events, in order. cn is the connection whose frame caused them, if
// any: the answers to that frame's request go there. The hot effects are handled
// here, the rest apart (see fail).
func (c *core) apply(cn *conn, now time.Time) {
	fx := c.st.Effects()
	if len(fx) == 0 {
		return
	}
	for i := range fx {
		switch e := &fx[i]; e.Kind {
		case fsm.Granted:
			c.granted(e, now)
		case fsm.Released:
			c.released(cn, e)
		case fsm.Queued:
			// No Queued reply: nobody reads the position, and on the hot path it was one
			// write syscall in three (the profile's largest cost). The grant answers.
			if e.Pos == 1 && now.Before(c.graceEnd) {
				c.graceTimer.Reset(c.graceEnd.Sub(now))
			}
		default:
			c.applyOther(cn, e, now)
		}
	}
	c.st.Reset()
}

// applyOther handles the effects that are not on the hot path.
//
//go:noinline
func (c *core) applyOther(cn *conn, e *fsm.Effect[*conn], now time.Time) {
	switch e.Kind {
	case fsm.AcquireRefused:
		c.refuseAcquire(cn, e.Seq, e.Err)
	case fsm.ReleasedBefore:
		c.s.log.Info("release sent again: answered as first applied", "token", e.Token, "fence", e.Fence, "seq", e.Seq, "conn", cn.remote)
		c.reply(cn, wire.Frame{Op: wire.OpReleased, Seq: e.Seq, Token: e.Token, Fence: e.Fence})
	case fsm.ReleaseRefused:
		c.refusedRelease(cn, e)
	case fsm.Reclaimed:
		c.reclaimed(e)
		if e.Revoke && e.S != nil {
			c.reply(e.S.Attached, wire.Frame{Op: wire.OpRevoked, Token: e.Token, Fence: e.Fence, Text: e.Reason})
		}
	case fsm.Cancelled:
		if e.Reason == "" { // the session's own cancel: answer it
			c.reply(cn, wire.Frame{Op: wire.OpCancelled, Seq: e.Seq, Token: e.Token})
		} else if e.S != nil { // dropped by the server: tell the session
			c.reply(e.S.Attached, wire.Frame{Op: wire.OpCancelled, Seq: e.Seq, Token: e.Token, Text: e.Reason})
		}
	case fsm.SessionOpened:
		c.event(Event{Kind: "session_open", Node: e.Node, Detail: fmt.Sprintf("session %x", uint64(e.Session))})
	case fsm.SessionEnded:
		c.event(Event{Kind: "session_end", Node: e.Node, Detail: e.Reason})
		c.s.log.Info("session ended", "node", e.Node, "session", fmt.Sprintf("%x", uint64(e.Session)), "reason", e.Reason)
	}
}

// granted tells the new holder, whichever way the grant came about.
func (c *core) granted(g *fsm.Effect[*conn], now time.Time) {
	c.counted = append(c.counted, tally{ti: c.instruments(g.Token), took: g.Waited})
	s := g.S
	if s == nil {
		c.grantToNobody(g)
		return
	}
	var e *Event
	if len(c.grantLog) < cap(c.grantLog) {
		c.grantLog = c.grantLog[:len(c.grantLog)+1]
		e = &c.grantLog[len(c.grantLog)-1]
	} else {
		e = &c.grantLog[c.grantAt]
		c.grantAt = (c.grantAt + 1) % len(c.grantLog)
	}
	*e = Event{}
	e.Time, e.Kind, e.Token, e.Node, e.Fence = now, "grant", g.Token, s.Node, g.Fence
	if s.Attached != nil {
		f := c.replyTo(s.Attached)
		f.Op, f.Seq, f.Token, f.Fence, f.Rec = wire.OpGrant, g.Seq, g.Token, g.Fence, g.Rec
	}
}

// released answers an applied release. A requeue's answer waits for the next frame
// its connection gets, normally the grant that follows, so that a turn costs the
// server one write.
func (c *core) released(cn *conn, e *fsm.Effect[*conn]) {
	c.counted = append(c.counted, tally{ti: c.instruments(e.Token), held: true, took: e.Held})
	if cn == nil {
		return
	}
	if e.Requeue {
		cn.deferred = append(cn.deferred, deferredRelease{seq: e.Seq, fence: e.Fence, token: e.Token})
		return
	}
	r := c.replyTo(cn)
	r.Op, r.Seq, r.Token, r.Fence = wire.OpReleased, e.Seq, e.Token, e.Fence
}

// grantToNobody logs a grant to a session the core does not know: the table holds
// only live sessions' requests, so this is a bug.
//
//go:noinline
func (c *core) grantToNobody(g *fsm.Effect[*conn]) {
	c.s.log.Error("grant to unknown session", "token", g.Token, "session", g.Session)
}

func (c *core) event(e Event) {
	e.Time = time.Now()
	if len(c.events) < cap(c.events) {
		c.events = append(c.events, e)
		return
	}
	c.events[c.eventAt] = e
	c.eventAt = (c.eventAt + 1) % len(c.events)
}

// handle applies one frame from an established connection. The hot requests are
// handled here, the rest apart (see fail).
func (c *core) handle(cn *conn, f *wire.Frame, now time.Time) {
	s := cn.session
	switch {
	case s == nil || s.Ended:
		c.sessionGone(cn, f, now)
	case f.Op == wire.OpAcquire:
		if c.d != nil {
			c.record(fsm.OpAcquire, s, f, now)
		}
		c.st.Acquire(s.ID, f.Seq, f.Token, now)
	case f.Op == wire.OpRelease || f.Op == wire.OpRequeue:
		if c.d != nil {
			c.record(fsm.OpRelease, s, f, now)
		}
		c.st.Release(s.ID, f.Seq, f.Token, f.Fence, f.Rec, f.Op == wire.OpRequeue, now)
	default:
		c.handleOther(s, cn, f, now)
	}
	c.apply(cn, now)
}

// sessionGone answers a frame whose session is gone (expired while its client was
// frozen or cut off). A late release changes nothing: it is refused as stale if the
// token was granted since, else as from an expired session; either way counted.
//
//go:noinline
func (c *core) sessionGone(cn *conn, f *wire.Frame, now time.Time) {
	if f.Op == wire.OpRelease || f.Op == wire.OpRequeue {
		var id sessions.ID
		if cn.session != nil {
			id = cn.session.ID
		}
		c.st.Release(id, f.Seq, f.Token, f.Fence, f.Rec, false, now)
		return
	}
	c.reply(cn, wire.Frame{Op: wire.OpError, Seq: f.Seq, Code: wire.CodeSessionExpired, Text: "session expired"})
	c.closeConn(cn, false)
}

// handleOther applies the requests that are not on the hot path.
//
//go:noinline
func (c *core) handleOther(s *session, cn *conn, f *wire.Frame, now time.Time) {
	switch f.Op {
	case wire.OpCancel:
		// A hold given back this way (the cancel crossed the grant on the wire, or the
		// client stopped trusting its lease) passes on at once.
		if c.d != nil {
			c.record(fsm.OpCancel, s, f, now)
		}
		c.st.Cancel(s.ID, f.Seq, f.Token, now)
	case wire.OpKeepalive:
		if c.d != nil {
			c.d.needProof = true
		}
		c.st.Sessions.Touch(s, now)
		c.reply(cn, wire.Frame{Op: wire.OpKeepaliveAck, Seq: f.Seq, Epoch: c.st.Epoch})
	case wire.OpGoodbye:
		c.endSession(s, "goodbye", now)
		c.saidGoodbye[s.Node] = now
		if len(c.saidGoodbye) > 4096 { // bounded: forget the oldest
			oldest, at := "", now
			for n, t := range c.saidGoodbye {
				if t.Before(at) {
					oldest, at = n, t
				}
			}
			delete(c.saidGoodbye, oldest)
		}
		c.closeConn(cn, false)
	default:
		c.fail(cn, f.Seq, wire.CodeUnexpected, "unexpected_op", fmt.Errorf("%s not valid after hello", f.Op))
		c.closeConn(cn, false)
	}
}

// refuseAcquire answers an acquire the token table refused.
//
//go:noinline
func (c *core) refuseAcquire(cn *conn, seq uint64, err error) {
	switch {
	case errors.Is(err, token.ErrDuplicate):
		c.fail(cn, seq, wire.CodeDuplicate, "duplicate", err)
	case errors.Is(err, token.ErrTooMany):
		c.fail(cn, seq, wire.CodeTooMany, "too_many_tokens", err)
	case errors.Is(err, token.ErrBadName):
		c.fail(cn, seq, wire.CodeBadName, "bad_name", err)
	default:
		c.fail(cn, seq, wire.CodeInternal, "internal", err)
	}
}

// refusedRelease answers a release that changed nothing, counted by reason. A stale
// fence is also counted apart (baton_stale_releases_total): it means a holder acted
// after it lost its lease.
//
//go:noinline
func (c *core) refusedRelease(cn *conn, e *fsm.Effect[*conn]) {
	var text string
	switch e.Reason {
	case "stale_fence":
		c.instruments(e.Token).staleReleases.Inc()
		c.s.log.Warn("stale release rejected", "token", e.Token, "fence", e.Fence, "current", e.Current, "conn", cn.remote)
		text = fmt.Sprintf("stale fence %d for %q: current is %d", e.Fence, e.Token, e.Current)
	case "not_held":
		c.fail(cn, e.Seq, e.Code, "not_held", fmt.Errorf("release of unknown token %q", e.Token))
		return
	case "lease_lost":
		text = fmt.Sprintf("release of %q fence %d: the lease was lost (its session no longer holds it) and nobody was granted since; nothing changed", e.Token, e.Fence)
	case "session_expired":
		text = fmt.Sprintf("release of %q fence %d: the session expired and its lease with it; nothing changed", e.Token, e.Fence)
	case "outcome_unknown":
		text = fmt.Sprintf("release %d of %q sent again: it may have been applied, and its answer is no longer remembered; nothing changed now", e.Seq, e.Token)
	}
	if c.st.Tokens.Get(e.Token) != nil { // the token label stays bounded by the token table
		c.s.metrics.refusedReleases.WithLabelValues(e.Token, e.Reason).Inc()
	}
	if e.Reason != "stale_fence" {
		c.s.log.Info("release refused", "token", e.Token, "fence", e.Fence, "reason", e.Reason, "conn", cn.remote)
	}
	c.reply(cn, wire.Frame{Op: wire.OpError, Seq: e.Seq, Code: e.Code, Text: text})
}

// hello opens or resumes a session for a connection that passed the handshake.
func (c *core) hello(cn *conn, h *wire.Frame, now time.Time) {
	if c.d != nil && !c.d.leading.Load() {
		c.notLeader(cn)
		return
	}
	ttl := c.ttl
	if h.TTLms != 0 {
		ttl = clampTTL(time.Duration(h.TTLms)*time.Millisecond, c.ttl)
	}
	// A node that comes back with a new boot id is a new process: the state machine
	// ends its old sessions, and whatever they held passes on.
	hello := fsm.Command{Op: fsm.OpHello, Time: now, Node: h.Text, Boot: h.BootID, Session: token.SessionID(h.Session),
		NewSession: c.newSessionID(), TTL: ttl}
	if c.d != nil {
		c.d.record(&hello)
	}
	s, resumed := c.st.Hello(hello.Node, hello.Boot, hello.Session, hello.NewSession, ttl, now)
	c.apply(nil, now)
	if resumed {
		if s.Attached != nil && s.Attached != cn {
			c.closeConn(s.Attached, true) // the client gave up on that connection already
		}
	} else {
		delete(c.saidGoodbye, h.Text)
	}
	s.Attached = cn
	cn.session, cn.ttl = s, ttl
	c.st.Sessions.Touch(s, now)
	c.armExpiry(now)

	w := wire.Frame{Op: wire.OpWelcome, Session: uint64(s.ID), TTLms: uint64(ttl / time.Millisecond), Epoch: c.st.Epoch, Resumed: resumed,
		Durable: c.d != nil}
	for name, seq := range s.Requests {
		t := c.st.Tokens.Get(name)
		if t.Holder == s.ID {
			w.Held = append(w.Held, wire.Held{Seq: seq, Token: name, Fence: t.Fence, Rec: t.Rec})
		} else {
			w.Waiting = append(w.Waiting, wire.Waiting{Seq: seq, Token: name})
		}
	}
	c.reply(cn, w)
	c.s.log.Info("session", "node", s.Node, "session", fmt.Sprintf("%x", uint64(s.ID)), "resumed", resumed,
		"held", len(w.Held), "waiting", len(w.Waiting), "conn", cn.remote)
}

// minSessionTTL is the shortest TTL a client may ask for.
const minSessionTTL = 100 * time.Millisecond

func clampTTL(want, server time.Duration) time.Duration {
	lo, hi := minSessionTTL, 10*server
	if want < lo {
		return lo
	}
	if want > hi {
		return hi
	}
	return want
}

func (c *core) newSessionID() token.SessionID {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id := token.SessionID(binary.LittleEndian.Uint64(b[:]))
		if id != 0 && c.st.Sessions.Get(id) == nil {
			return id
		}
	}
}

// endSession ends s: every token it holds passes to the next waiter (a reclaim,
// counted by reason, its holder told), its waits leave their queues.
func (c *core) endSession(s *session, reason string, now time.Time) {
	c.exec(&fsm.Command{Op: fsm.OpEndSession, Time: now, Session: s.ID, Reason: reason})
	c.apply(nil, now)
}

func (c *core) reclaimed(e *fsm.Effect[*conn]) {
	c.counted = append(c.counted, tally{ti: c.instruments(e.Token), held: true, took: e.Held,
		reclaim: &Event{Kind: "reclaim", Token: e.Token, Node: e.Node, Fence: e.Fence, Detail: e.Reason}})
}

// tally is one grant (its wait), release (held: its hold) or reclaim (held, and
// reclaim: its event) of the batch, counted once the batch is durable (tell).
type tally struct {
	ti      *tokenInstruments
	held    bool
	took    time.Duration
	reclaim *Event
}

// tell counts the batch's grants, releases and reclaims in the metrics, and logs
// the reclaims: the batch's state is durable.
func (c *core) tell() {
	for i := range c.counted {
		t := &c.counted[i]
		if t.held {
			t.ti.hold.Observe(t.took.Seconds())
		} else {
			t.ti.grants.Inc()
			t.ti.wait.Observe(t.took.Seconds())
		}
		if e := t.reclaim; e != nil {
			c.s.metrics.reclaims.WithLabelValues(e.Token, e.Detail).Inc()
			c.event(*e)
			if e.Detail != "cancel" {
				c.s.log.Warn("token reclaimed", "token", e.Token, "node", e.Node, "fence", e.Fence, "reason", e.Detail)
			}
		}
		c.counted[i] = tally{}
	}
	c.counted = c.counted[:0]
}

// expire ends the sessions whose deadline has passed and arms the timer for the next.
//
// A check that comes late says that this server could not hear its clients for
// that long (its process frozen, its host stalled, a log write that slow): their
// keepalives of that time wait unread in its sockets or its queue. Expiring on
// deadlines it could not renew would reclaim leases from clients that are alive,
// so it first gives the sessions such a silence could have cost a keepalive a full
// TTL from now, as a new leader does (rule 4), each once until its client is heard
// again (session.Table.Spare). Mutual exclusion does not depend on it: a client
// stops trusting its lease a TTL after its last acknowledged keepalive, whatever
// the server does, and gives the token back; the grace spares live clients their
// sessions and their places in the queues.
func (c *core) expire(now time.Time) {
	if late := now.Sub(c.expiryDue); !c.expiryDue.IsZero() && late > minSessionTTL/4 {
		if n := c.st.Sessions.Spare(now, late); n > 0 {
			c.s.log.Warn("this server could not hear its clients for a while (its process frozen, its host stalled, or a log write that slow): the sessions that silence could have cost a keepalive get a full TTL from now before any expires",
				"late", late.Round(time.Millisecond), "sessions", n)
			c.event(Event{Kind: "stalled", Detail: late.Round(time.Millisecond).String()})
		}
	}
	c.st.Sessions.Expired(now, func(s *session) { c.endSession(s, "expired", now) })
	c.armExpiry(now)
}

// armExpiry sets the expiry timer for the table's next check.
func (c *core) armExpiry(now time.Time) {
	c.expiryDue = time.Time{}
	if at, ok := c.st.Sessions.NextCheck(); ok {
		c.expiryDue = at
		c.expiryTimer.Reset(at.Sub(now))
	}
}

// connClosed learns that a connection is gone. When its peer closed it, the client
// process has gone (a kill closes its sockets; our client says goodbye first when it
// means to stop): its session ends now and what it held passes on within a round
// trip. When the server closed it or it merely fell silent, the session waits for
// its client to come back until its TTL runs out.
func (c *core) connClosed(cn *conn, peerClosed bool, now time.Time) {
	s := cn.session
	if s == nil || s.Attached != cn {
		return
	}
	s.Attached = nil
	if peerClosed && !s.Ended {
		c.endSession(s, "disconnect", now)
	}
}

// closeConn lets go of a connection once the replies queued for it are out: with
// notice a Closing frame tells the client its session lives on, otherwise it is a
// plain hang-up after an error.
func (c *core) closeConn(cn *conn, notice bool) {
	if s := cn.session; s != nil && s.Attached == cn {
		s.Attached = nil
	}
	cn.closing.Store(true)
	op := opHangup
	if notice {
		op = wire.OpClosing
	}
	c.reply(cn, wire.Frame{Op: op})
}

// membersChanged applies what memberlist learned: a node that died or left has its
// waiting requests dropped (the client, if alive after all, asks again); a node that
// came back with a new boot id loses its old sessions.
func (c *core) membersChanged(members []cluster.Member, now time.Time) {
	byName := make(map[string]cluster.Member, len(members))
	for _, m := range members {
		byName[m.Name] = m
		if prev := c.memberState[m.Name]; prev != m.State {
			kind := "member_" + m.State
			if m.State == cluster.StateAlive {
				kind = "member_joined"
			}
			c.event(Event{Kind: kind, Node: m.Name, Detail: m.Meta.Role})
			c.memberState[m.Name] = m.State
			if m.State == cluster.StateAlive && m.Name != c.s.cfg.nodeName() {
				if why := misplacedServer(c.d != nil && c.d.clustered, m); why != "" {
					c.s.log.Error(why, "server", m.Name, "addr", m.Addr)
				}
			}
		}
	}
	c.problem = ""
	for _, m := range members {
		if m.State == cluster.StateAlive && m.Name != c.s.cfg.nodeName() {
			if why := misplacedServer(c.d != nil && c.d.clustered, m); why != "" {
				c.problem = m.Name + ": " + why
				break
			}
		}
	}
	for name := range c.memberState { // forgotten by the cluster layer: forget here too
		if _, ok := byName[name]; !ok {
			delete(c.memberState, name)
		}
	}
	c.st.Sessions.Each(func(s *session) {
		m, ok := byName[s.Node]
		if !ok {
			return
		}
		switch {
		case m.State == cluster.StateAlive && m.Meta.BootID != "" && s.BootID != "" && m.Meta.BootID != s.BootID:
			c.endSession(s, "reboot", now)
		case m.State == cluster.StateDead || m.State == cluster.StateLeft:
			// Its waits leave their queues (the client, if alive after all, asks again);
			// a holder keeps its lease until its session ends.
			c.exec(&fsm.Command{Op: fsm.OpDropWaiters, Time: now, Session: s.ID, Reason: "member_" + m.State})
			c.apply(nil, now)
		}
	})
}

// misplacedServer says what is wrong when server m shares the membership with this
// one and they are not both replicas of one log: each server that does not
// replicate owns tokens of its own, and clients split between them would hold
// one token twice. Empty when nothing is.
func misplacedServer(replicated bool, m cluster.Member) string {
	switch {
	case m.Meta.Role != cluster.RoleServer:
		return ""
	case !replicated:
		return "another server in this cluster, and this one does not replicate: each owns its tokens alone, and clients split between them; " +
			"run one server, or give every server BATON_STATE_DIR and BATON_BOOTSTRAP_EXPECT"
	case m.Meta.RaftPort == 0:
		return "a server that does not replicate joined this replicated cluster: it owns tokens of its own (clients connect to the replicated servers); " +
			"give it BATON_STATE_DIR and BATON_BOOTSTRAP_EXPECT as the others have, or stop it"
	}
	return ""
}

// restart is the in-place restart: new epoch, every connection closed with notice,
// sessions kept so their clients may resume them.
func (c *core) restart(ttl time.Duration) {
	c.ttl = ttl
	if c.d != nil && !c.d.leading.Load() { // the epoch is the leader's to start
		c.closeAll()
		return
	}
	c.exec(&fsm.Command{Op: fsm.OpRestart, Time: time.Now()})
	c.s.metrics.restarts.Inc()
	c.event(Event{Kind: "restart", Detail: fmt.Sprintf("epoch %d", c.st.Epoch)})
	c.closeAll()
}

// closeAll lets go of every connection, those of ended sessions and those still in
// their handshake included, each with a Closing notice.
func (c *core) closeAll() {
	c.s.connsMu.Lock()
	conns := make([]*conn, 0, len(c.s.conns))
	for cn := range c.s.conns {
		conns = append(conns, cn)
	}
	c.s.connsMu.Unlock()
	for _, cn := range conns {
		if !cn.closing.Load() {
			c.closeConn(cn, true)
		}
	}
}

// status copies the state for /status and the metrics collector.
func (c *core) status(now time.Time) Status {
	// A follower shows the log's state as this server has applied it: the tokens and
	// sessions, not the leader's deadlines.
	src, follower := c.st, c.d != nil && !c.d.leading.Load()
	if follower {
		src = c.replicated(now)
	}
	st := Status{Epoch: src.Epoch, Started: c.started, TTL: c.ttl.String(), Tokens: []TokenStatus{}, Sessions: []SessionStatus{}, Problem: c.problem}
	nodeOf := func(id token.SessionID) string {
		if s := src.Sessions.Get(id); s != nil {
			return s.Node
		}
		return fmt.Sprintf("session-%x", uint64(id))
	}
	src.Tokens.Each(func(t *token.Token) {
		ts := TokenStatus{Name: t.Name, Fence: t.Fence, Counter: t.Rec.Counter, Waits: t.Rec.Waits, Grants: t.Grants,
			Releases: t.Releases, Queue: []string{}}
		if t.Holder != 0 {
			ts.Holder = nodeOf(t.Holder)
			ts.HeldFor = now.Sub(t.HeldSince).Round(time.Millisecond).String()
		}
		for _, w := range t.Waiters() {
			ts.Queue = append(ts.Queue, nodeOf(w))
		}
		st.Tokens = append(st.Tokens, ts)
	})
	sort.Slice(st.Tokens, func(i, j int) bool { return st.Tokens[i].Name < st.Tokens[j].Name })
	src.Sessions.Each(func(s *session) {
		ss := SessionStatus{ID: fmt.Sprintf("%x", uint64(s.ID)), Node: s.Node, Connected: s.Attached != nil,
			Grants: s.Grants, Waited: s.Waited}
		if !follower {
			ss.ExpiresIn = s.Deadline.Sub(now).Round(time.Millisecond).String()
		}
		for name := range s.Requests {
			if src.Tokens.Get(name).Holder == s.ID {
				ss.Holds++
			} else {
				ss.Waits++
			}
		}
		st.Sessions = append(st.Sessions, ss)
	})
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].Node < st.Sessions[j].Node })
	st.Members = []MemberStatus{}
	if c.s.node != nil {
		for _, m := range c.s.node.Members() {
			state := m.State
			if _, bye := c.saidGoodbye[m.Name]; bye && state == cluster.StateDead {
				state = cluster.StateLeft
			}
			st.Members = append(st.Members, MemberStatus{Name: m.Name, Addr: m.Addr, State: state, Role: m.Meta.Role, Since: m.Since})
		}
	}
	sortMembers(st.Members)
	st.Events = make([]Event, 0, len(c.events))
	st.Events = append(st.Events, c.events[c.eventAt:]...)
	st.Events = append(st.Events, c.events[:c.eventAt]...)
	st.Grants = make([]Event, 0, len(c.grantLog))
	st.Grants = append(st.Grants, c.grantLog[c.grantAt:]...)
	st.Grants = append(st.Grants, c.grantLog[:c.grantAt]...)
	return st
}

// replicated is a copy of the log's state as this server has applied it, for a
// follower's /status; an empty state if it cannot be copied.
func (c *core) replicated(now time.Time) *fsm.State[*conn] {
	st := fsm.New[*conn](c.s.cfg.MaxTokens)
	if snap, err := c.d.log.Save(); err == nil {
		if st.Restore(snap, c.s.cfg.MaxTokens, now) != nil {
			st = fsm.New[*conn](c.s.cfg.MaxTokens)
		}
	}
	return st
}
