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
// caller has taken a free turn for turnIdle, the connection's background reader
// takes it, so that keepalive answers, revocations and closing notices are always
// read within two turnIdle periods (the watcher looks every turnIdle); it hands the
// turn back to the first caller that asks. One watcher with one timer serves every
// client of the process: a timer armed per turn would cost a thread wake-up per
// grant, which is what the turn saves. The watcher ticks every turnIdle while clients
// trade tokens, and each tick wakes a thread that disturbs the handoff chain: a short
// period costs throughput, and 20 ms is still far below any session TTL. docs/design.md
// describes the turn and its watcher; docs/performance.md has the measurements.
const turnIdle = 20 * time.Millisecond

// idleTurns is the process's watcher of free turns.
var idleTurns = &turnWatcher{free: map[*Client]time.Time{}}

// turnWatcher gives every turn left free for turnIdle to its background reader.
type turnWatcher struct {
	mu      sync.Mutex // guards free, running
	free    map[*Client]time.Time
	running bool // the watching goroutine exists; it ends when free is empty
}

// add notes that c's turn is free from now; with c.mu held (c.mu before w.mu).
func (w *turnWatcher) add(c *Client, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.free[c] = now
	if !w.running {
		w.running = true
		go w.watch()
	}
}

// remove notes that c's turn is taken; with c.mu held.
func (w *turnWatcher) remove(c *Client) {
	w.mu.Lock()
	delete(w.free, c)
	w.mu.Unlock()
}

func (w *turnWatcher) watch() {
	var due []*Client
	for {
		time.Sleep(turnIdle) // the watcher's period, not a synchronisation
		now := time.Now()
		w.mu.Lock()
		for c, since := range w.free {
			if now.Sub(since) >= turnIdle {
				due = append(due, c)
				delete(w.free, c)
			}
		}
		if len(w.free) == 0 && len(due) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		for i, c := range due {
			c.event(func(st *runState) { st.turnToBackground() })
			due[i] = nil
		}
		due = due[:0]
	}
}

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
	deadline time.Time  // the read deadline armed now
	frame    wire.Frame // decoded into by a caller with the turn: kept, not allocated per call

	// A caller's context interrupts its read through one context.AfterFunc per
	// context, kept while the same context comes back, as it does in a loop of
	// turns: registering a callback with the context and removing it again cost
	// two allocations and two locks of the context's parent per turn.
	afterDone <-chan struct{} // the Done of the context the callback watches

	imu         sync.Mutex // guards the fields below
	waiting     bool       // between frames, in Wait: an interrupt may cut it short
	interrupted bool
	readingFor  <-chan struct{} // the Done of the context of the read in progress
	stopAfter   func() bool     // removes the callback
	closed      bool            // the connection is closed: register nothing more
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

// interrupt cuts short an interruptible read that waits between frames, if it reads
// for the context whose Done is done.
func (cc *clientConn) interrupt(done <-chan struct{}) {
	cc.rd.imu.Lock()
	defer cc.rd.imu.Unlock()
	if cc.rd.readingFor != done {
		return // that context's reader has gone; another reads for its own
	}
	cc.rd.interrupted = true
	if cc.rd.waiting {
		_ = cc.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// watch makes ctx's end interrupt reads for it, in place of the context watched so far.
func (cc *clientConn) watch(ctx context.Context) {
	done := ctx.Done()
	rd := &cc.rd
	rd.imu.Lock()
	defer rd.imu.Unlock()
	if rd.closed {
		return
	}
	if rd.stopAfter != nil {
		rd.stopAfter() // does not wait for a callback under way; it finds another reader
	}
	rd.afterDone = done
	rd.stopAfter = context.AfterFunc(ctx, func() { cc.interrupt(done) })
}

// readingFor marks the start (done non-nil or nil) and the end (nil) of a caller's reads.
func (cc *clientConn) readingFor(done <-chan struct{}) {
	cc.rd.imu.Lock()
	cc.rd.readingFor = done
	cc.rd.interrupted = false
	cc.rd.imu.Unlock()
}

// unwatch removes the context callback for good: the connection is closed.
func (cc *clientConn) unwatch() {
	cc.rd.imu.Lock()
	stop := cc.rd.stopAfter
	cc.rd.stopAfter, cc.rd.closed = nil, true
	cc.rd.imu.Unlock()
	if stop != nil {
		stop()
	}
}

// freeTurn gives up the turn on cc: a waiting caller is told, and the background
// reader takes it if nobody has within turnIdle. With c.mu held.
func (st *runState) freeTurn(cc *clientConn) {
	cc.turn = turnFree
	if st.turnWaiters > 0 {
		select {
		case st.c.turnFreed <- struct{}{}:
		default:
		}
	}
	idleTurns.add(st.c, time.Now())
}

// turnToBackground gives a free turn to the background reader. With c.mu held.
func (st *runState) turnToBackground() {
	if cc := st.conn; cc != nil && cc.turn == turnFree {
		cc.turn = turnBackground
		idleTurns.remove(st.c)
		select {
		case cc.bgWake <- struct{}{}:
		default:
		}
	}
}

// took handles what the reader of cc got, frame f or err; with c.mu held. It
// reports whether cc is still the connection: if not (lost, closed or replaced), the
// turn went with it and the reader stops.
func (st *runState) took(cc *clientConn, f *wire.Frame, err error) bool {
	if st.conn != cc {
		return false
	}
	if err != nil {
		st.m.lost(err)
	} else {
		st.m.frame(f)
	}
	st.flush()
	return st.conn == cc
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
			if !st.took(cc, &f, err) {
				c.mu.Unlock()
				return
			}
			handOver := st.turnWaiters > 0
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
		if st.m.closed {
			c.mu.Unlock()
			return zero, ErrClosed
		}
		if cc := st.conn; cc != nil && cc.turn == turnFree {
			cc.turn = turnCaller
			idleTurns.remove(c)
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
	if done := ctx.Done(); done != nil {
		if done != cc.rd.afterDone {
			cc.watch(ctx)
		}
		cc.readingFor(done)
		defer cc.readingFor(nil)
	}
	f := &cc.rd.frame
	for !answered() && ctx.Err() == nil {
		err := cc.readFrame(f, true)
		if errors.Is(err, errInterrupted) {
			continue // ctx has ended: the loop's test says so
		}
		c.mu.Lock()
		kept := c.st.took(cc, f, err)
		c.mu.Unlock()
		if !kept {
			return
		}
	}
	c.mu.Lock()
	if c.st.conn == cc && cc.turn == turnCaller {
		c.st.freeTurn(cc)
	}
	c.mu.Unlock()
}
