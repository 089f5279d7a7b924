package baton

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// runState drives the client's session logic (machine, machine.go) with the real
// connection, timers and dialer. It is guarded by Client.mu, and whoever has an event
// handles it under that lock: a caller its request, whoever reads the connection a
// frame (a waiting caller or the background reader, see turn.go), a timer its tick,
// the dialer its result. There is no goroutine in between: a request leaves from the
// caller's goroutine, and a grant usually reaches a caller that read it itself.
// After each event, flush writes the frames the machine queued and carries out what
// it asked for.
type runState struct {
	c *Client
	m *machine

	conn   *clientConn // nil while disconnected
	redial *time.Timer
	trust  *time.Timer // fires at the trust deadline
	ka     *time.Timer // fires every third of the TTL while connected
	watch  *time.Timer // fires when an answer the server owes is overdue (machine.overdue)

	turnWaiters int // callers waiting for the turn to read (turn.go)
}

const writeTimeout = time.Second

type clientConn struct {
	nc            net.Conn
	w             *wire.Writer
	writeDeadline time.Time // armed now; written under Client.mu
	server        string

	rd        connReader
	turn      turnHolder    // who reads it now (see turn.go); guarded by Client.mu
	bgWake    chan struct{} // the background reader's turn has come
	done      chan struct{} // closed with the connection
	closeOnce sync.Once
}

func newRunState(c *Client) *runState {
	st := &runState{c: c, m: newMachine(c)}
	st.redial = time.AfterFunc(time.Hour, func() { c.event(func(st *runState) { st.m.startDial() }) })
	st.trust = time.AfterFunc(time.Hour, func() { c.event(func(st *runState) { st.m.checkTrust() }) })
	st.ka = time.AfterFunc(time.Hour, func() { c.event(func(st *runState) { st.m.keepalive() }) })
	st.watch = time.AfterFunc(time.Hour, func() { c.event(func(st *runState) { st.m.overdue() }) })
	st.watch.Stop()
	st.redial.Stop()
	st.trust.Stop()
	st.ka.Stop()
	return st
}

// event handles one event under the lock, then sends what it queued.
func (c *Client) event(fn func(st *runState)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.m.closed {
		return
	}
	fn(c.st)
	c.st.flush()
}

// submit hands a caller's request to the state; false once the client is closed.
func (c *Client) submit(req any) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st.m.closed {
		return false
	}
	c.st.m.request(req)
	c.st.flush()
	return true
}

// flush writes the frames the machine queued, then carries out its effects. A write
// that fails is the loss of the connection, an input like any other.
func (st *runState) flush() {
	m := st.m
	if cc := st.conn; cc != nil && len(m.out) > 0 {
		var err error
		for i := range m.out {
			if err = cc.w.Write(&m.out[i]); err != nil {
				break
			}
		}
		clear(m.out)
		m.out = m.out[:0]
		if err == nil {
			err = st.flushConn(cc)
		}
		if err != nil {
			m.lost(err)
		}
	}
	st.apply()
}

// flushConn sends what cc's writer holds. A write blocked for writeTimeout means the
// server has stopped reading. The deadline is moved once half of it is used up, not
// for every write: moving it costs a timer update, once per turn in a loop of
// requeues.
func (st *runState) flushConn(cc *clientConn) error {
	if cc.w.Buffered() == 0 {
		return nil
	}
	if now := time.Now(); cc.writeDeadline.Sub(now) < writeTimeout/2 {
		cc.writeDeadline = now.Add(writeTimeout)
		_ = cc.nc.SetWriteDeadline(cc.writeDeadline)
	}
	return cc.w.Flush()
}

// apply carries out the machine's effects.
func (st *runState) apply() {
	m := st.m
	if m.fx == (effects{}) {
		return
	}
	fx := m.fx
	m.fx = effects{}
	if fx.hangUp && st.conn != nil {
		st.conn.close()
		st.conn = nil
	}
	if fx.noKA {
		st.ka.Stop()
	}
	if fx.keepalive {
		st.ka.Reset(m.ttl / 3)
	}
	if fx.trust {
		st.trust.Reset(time.Until(m.deadline))
	}
	if fx.watch {
		st.watch.Reset(fx.watchIn)
	}
	if fx.hedge && !m.closed {
		st.startHedge()
	}
	if fx.redial && !m.closed {
		st.redial.Reset(fx.redialIn)
	}
	if fx.dial && !m.closed {
		st.startDial()
	}
	if fx.sessionUp {
		close(st.c.firstSession)
	}
}

// startDial dials in the background: the state must stay free to end leases on time
// while a dial is slow.
func (st *runState) startDial() {
	st.dialInBackground(st.c.cfg, (*runState).dialed)
}

// startHedge connects to another server than the one the client is connected to,
// resuming the session (machine.overdue). Resolve and Follow are asked as for any
// connect, but neither may lead back to the current server. It gets a fifth of the
// TTL at most (and at least 400 ms): until it ends, no other connect can start, and
// a server frozen like the current one would hold it for the whole DialTimeout.
func (st *runState) startHedge() {
	cfg, current := st.c.cfg, st.m.server
	resolve, follow := cfg.Resolve, cfg.Follow
	cfg.Resolve = func(ctx context.Context) (string, error) {
		for range 2 { // a resolver that takes turns may name another server next
			if addr, err := resolve(ctx); err != nil || addr != current {
				return addr, err
			}
		}
		return "", fmt.Errorf("resolve named only %s, the server silent now", current)
	}
	cfg.DialTimeout = min(cfg.DialTimeout, max(st.m.ttl/5, 400*time.Millisecond))
	cfg.Follow = func(addr string) bool { return addr != current && follow != nil && follow(addr) }
	st.dialInBackground(cfg, (*runState).hedged)
}

// dialInBackground dials with cfg, resuming the session, on a goroutine of its own,
// and hands the result to done under the lock (or closes it, once the client is).
func (st *runState) dialInBackground(cfg Config, done func(*runState, dialResult)) {
	c, resume := st.c, st.m.session
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		r := dial(cfg, resume)
		if cfg.OnConnect != nil {
			cfg.OnConnect(r.server, r.err)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.st.m.closed {
			if r.conn != nil {
				r.conn.close()
			}
			return
		}
		done(c.st, r)
		c.st.flush()
	}()
}

// hedged hands the hedge's result to the machine, and a welcome with it.
func (st *runState) hedged(r dialResult) {
	if r.err != nil {
		st.c.log.Debug("no other server answers for the session", "err", r.err)
	}
	st.m.hedged(r.server, r.err == nil)
	if r.err == nil {
		st.apply() // closes the silent connection
		st.dialed(r)
	}
}

func (cc *clientConn) close() {
	cc.closeOnce.Do(func() {
		close(cc.done)
		cc.unwatch()
		cc.nc.Close()
	})
}

// dialed hands a dial's result to the machine; a connection that came up gets its
// background reader, which has the turn first (a waiting caller asks for it).
func (st *runState) dialed(r dialResult) {
	if r.err != nil {
		st.m.dialFailed(r.err)
		return
	}
	st.conn = r.conn
	r.conn.rd = connReader{r: r.r, ttl: time.Duration(r.welcome.TTLms) * time.Millisecond}
	st.c.wg.Add(1)
	go st.c.background(r.conn)
	st.turnToBackground()
	st.m.welcome(&r.welcome, r.sentAt, r.conn.server)
}

// shutdown ends the machine, says goodbye if connected, and stops every timer.
func (st *runState) shutdown() {
	st.m.shutdown()
	idleTurns.remove(st.c)
	st.redial.Stop()
	st.trust.Stop()
	st.ka.Stop()
	st.watch.Stop()
	st.flush()
	if st.conn != nil {
		st.conn.close()
		st.conn = nil
	}
	// A dial in progress closes what it gets: it finds the machine closed.
}
