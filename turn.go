package baton

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// One goroutine at a time reads a connection: the one with the turn. A caller
// waiting for the server's answer takes the turn when it is free and reads the
// frames itself, so that its grant wakes it straight from the socket, the way a
// blocking client would be woken, with no hand-off from a reader goroutine. When no
// caller has taken the turn for turnIdle, the connection's background reader takes
// it, so that keepalive answers, revocations and closing notices are always read
// within a few milliseconds; it hands the turn back to the first caller that asks.
// One timer serves many turns: arming a timer per turn would cost a thread wake-up
// per grant, which is what the turn saves.
const turnIdle = 2 * time.Millisecond

type turnHolder int

const (
	turnFree turnHolder = iota
	turnCaller
	turnBackground
)

// errInterrupted: a caller's context ended while it waited for a frame.
var errInterrupted = errors.New("baton: read interrupted")

// connReader is the reading side of a connection. Its fields other than imu's are
// used only by the goroutine with the turn; the turn passes under Client.mu.
type connReader struct {
	r        *wire.Reader
	ttl      time.Duration
	deadline time.Time // the read deadline armed now

	imu         sync.Mutex // guards waiting, interrupted
	waiting     bool       // between frames, in Wait: an interrupt may cut it short
	interrupted bool
}

// readFrame reads the next frame. An interruptible read gives up between frames when
// interrupt is called; a frame that has begun to arrive is always read whole.
func (cc *clientConn) readFrame(f *wire.Frame, interruptible bool) error {
	rd := &cc.rd
	if !rd.r.Complete() {
		if interruptible {
			rd.imu.Lock()
			if rd.interrupted {
				rd.interrupted = false
				rd.imu.Unlock()
				return errInterrupted
			}
			rd.waiting = true
			rd.imu.Unlock()
		}
		cc.armDeadline()
		err := rd.r.Wait()
		if interruptible {
			rd.imu.Lock()
			rd.waiting = false
			cut := rd.interrupted
			rd.interrupted = false
			rd.imu.Unlock()
			if cut {
				rd.deadline = time.Time{} // the interrupt moved it: arm it again
				if err != nil {
					return errInterrupted
				}
			}
		}
		if err != nil {
			return err
		}
		if !rd.r.Complete() {
			cc.armDeadline()
		}
	}
	return rd.r.Read(f)
}

// armDeadline moves the read deadline once a quarter of it is used up: arming it for
// every frame costs a timer update per grant. A silent connection is dead after
// three quarters of a TTL at the earliest; keepalives are answered every third.
func (cc *clientConn) armDeadline() {
	if now := time.Now(); cc.rd.deadline.Sub(now) < cc.rd.ttl*3/4 {
		cc.rd.deadline = now.Add(cc.rd.ttl)
		_ = cc.nc.SetReadDeadline(cc.rd.deadline)
	}
}

// interrupt cuts short an interruptible read that waits between frames.
func (cc *clientConn) interrupt() {
	cc.rd.imu.Lock()
	defer cc.rd.imu.Unlock()
	cc.rd.interrupted = true
	if cc.rd.waiting {
		_ = cc.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// freeTurn gives up the turn on cc: a waiting caller is told, and the background
// reader takes it if nobody has within turnIdle. With c.mu held.
func (st *runState) freeTurn(cc *clientConn) {
	cc.turn = turnFree
	st.turnFreedAt = time.Now()
	if st.turnWaiters > 0 {
		select {
		case st.c.turnFreed <- struct{}{}:
		default:
		}
	}
	if !st.idleArmed {
		st.idleArmed = true
		st.idleTurn.Reset(turnIdle)
	}
}

// idleTurnDue runs when the idle timer fires: a turn free for turnIdle goes to the
// background reader; one freed since waits the rest of it; one held needs nothing
// until it is freed again. With c.mu held.
func (st *runState) idleTurnDue() {
	st.idleArmed = false
	cc := st.conn
	if cc == nil || cc.turn != turnFree {
		return
	}
	if since := time.Since(st.turnFreedAt); since < turnIdle {
		st.idleArmed = true
		st.idleTurn.Reset(turnIdle - since)
		return
	}
	st.turnToBackground()
}

// turnToBackground gives a free turn to the background reader. With c.mu held.
func (st *runState) turnToBackground() {
	if cc := st.conn; cc != nil && cc.turn == turnFree {
		cc.turn = turnBackground
		select {
		case cc.bgWake <- struct{}{}:
		default:
		}
	}
}

// background reads cc whenever it has the turn, until cc is no longer the current
// connection.
func (c *Client) background(cc *clientConn) {
	defer c.wg.Done()
	var f wire.Frame
	for {
		select {
		case <-cc.bgWake:
		case <-cc.done:
			return
		}
		for {
			err := cc.readFrame(&f, false)
			c.mu.Lock()
			st := c.st
			if st.conn != cc { // closed or replaced meanwhile
				c.mu.Unlock()
				return
			}
			if err != nil {
				st.lost(err)
				st.flush()
				c.mu.Unlock()
				return
			}
			st.frame(&f)
			st.flush()
			handOver := st.conn == cc && st.turnWaiters > 0
			if handOver {
				st.freeTurn(cc)
			}
			c.mu.Unlock()
			if handOver {
				break
			}
		}
	}
}

// answer waits for res, reading the connection itself whenever nobody else does. It
// returns ctx's error when ctx ends first, ErrClosed when the client closes.
func answer[T any](c *Client, ctx context.Context, res <-chan T) (T, error) {
	var zero T
	for {
		select {
		case v := <-res:
			return v, nil
		default:
		}
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		c.mu.Lock()
		st := c.st
		if st.closed {
			c.mu.Unlock()
			return zero, ErrClosed
		}
		if cc := st.conn; cc != nil && cc.turn == turnFree {
			cc.turn = turnCaller
			st.idleTurn.Stop()
			c.mu.Unlock()
			c.readFor(ctx, cc, func() bool { return len(res) > 0 })
			continue
		}
		st.turnWaiters++
		c.mu.Unlock()
		var v T
		got := false
		select {
		case v = <-res:
			got = true
		case <-c.turnFreed:
		case <-ctx.Done():
		}
		c.mu.Lock()
		c.st.turnWaiters--
		c.mu.Unlock()
		if got {
			return v, nil
		}
	}
}

// readFor reads and handles cc's frames on this goroutine, which has the turn, until
// answered reports true, ctx ends or cc is gone; then it gives the turn up.
func (c *Client) readFor(ctx context.Context, cc *clientConn, answered func() bool) {
	stop := context.AfterFunc(ctx, cc.interrupt)
	defer stop()
	var f wire.Frame
	for !answered() && ctx.Err() == nil {
		err := cc.readFrame(&f, true)
		c.mu.Lock()
		st := c.st
		if st.conn != cc { // lost or replaced: the turn went with it
			c.mu.Unlock()
			return
		}
		switch {
		case errors.Is(err, errInterrupted):
		case err != nil:
			st.lost(err)
			st.flush()
			c.mu.Unlock()
			return
		default:
			st.frame(&f)
			st.flush()
		}
		gone := st.conn != cc
		c.mu.Unlock()
		if gone {
			return
		}
	}
	c.mu.Lock()
	if c.st.conn == cc && cc.turn == turnCaller {
		c.st.freeTurn(cc)
	}
	c.mu.Unlock()
}
