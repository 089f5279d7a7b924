package server

import (
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-dev/baton/internal/rawio"
	"github.com/baton-dev/baton/internal/wire"
)

// Limits on a connection's replies. The reader stops reading while maxInflight of
// its frames await the core, or while replies it could not yet write exceed
// backlogPause: a client that pipelines gets TCP's own backpressure, not a cut-off.
// Only replies caused by other connections (grants, revocations) can then grow the
// backlog, and one that reaches maxBacklog means the client does not read: it is
// cut off rather than hold the server's memory.
const (
	maxInflight  = 32
	backlogPause = 16 << 10
	maxBacklog   = 256 << 10
)

// conn is one token protocol connection. It has one goroutine, its reader; replies
// are written by the core itself, straight to the socket without blocking (see
// write), and only a client that does not keep up gets a flusher goroutine for a
// while. An idle connection therefore costs one parked goroutine and a few hundred
// bytes. The reader and any flusher belong to the server's WaitGroup; the core
// decides when the connection closes.
type conn struct {
	// What the reader touches for every frame comes first, then what the core and a
	// write touch for a reply, then the rest: with hundreds of sessions taking turns,
	// a connection's state is cold in the cache when its turn comes, and fields a
	// turn uses together should share cache lines.

	// Used by whichever goroutine reads the connection now (one at a time: a reader
	// parks the connection before the parker can start the next).
	s          *Server
	r          *wire.Reader
	lastFrame  atomic.Int64 // unix nanoseconds of the last frame read
	allowance  float64      // the frame rate limit's bucket
	lastRefill time.Time    // when the bucket was last topped up
	deadline   time.Time    // the read deadline armed now
	// inflight counts frames handed to the core whose replies are not yet written
	// (the core writes them when its batch commits). space wakes the reader when the
	// core or a flusher make room, but only while it waits for room (waitingRoom):
	// a send on every reply touched a channel per handoff that nobody read.
	inflight    atomic.Int32
	backlogLen  atomic.Int32 // len(backlog), for the reader's check without wmu
	waitingRoom atomic.Bool
	// closing is set when the server lets go of the connection (restart, close-
	// connections, protocol error, slow consumer): its end is then not the client's
	// doing and must not end the session.
	closing atomic.Bool

	session *session // set and read by the core goroutine only
	// Released answers to requeues, sent before the next reply; core only. Kept
	// small and, for the usual one, inside the conn (deferredBuf): a separate array
	// was a cache miss when the answer was stored and another when it left, a turn
	// later.
	deferred    []deferredRelease
	deferredBuf [1]deferredRelease
	obuf        []byte          // the core's encoding buffer for this connection's replies; core only
	hangup      bool            // the core has queued this connection's last frame; core only
	flushing    bool            // a flusher goroutine owns the socket's writes
	closeAfter  bool            // close once the backlog is written (Closing, hang-up)
	peerGone    bool            // a write failed: replies are dropped, the reader finds the end
	wmu         sync.Mutex      // guards backlog, flushing, closeAfter, peerGone and writeNow's state
	raw         syscall.RawConn // nil if nc is not a syscall.Conn: then every write goes through a flusher
	writeSome   func(fd uintptr) bool
	wb          []byte // writeSome's input and results
	wn          int
	werr        error
	backlog     []byte // encoded replies the socket did not take yet

	nc       net.Conn
	remote   string
	quit     chan struct{}
	once     sync.Once
	space    chan struct{}
	ttl      time.Duration // the session's TTL, set by the core during hello, read by the reader after it
	parkedFD int32         // the descriptor while parked, else -1; guarded by the parker's mu
	inEpoll  bool          // registered with the parker's epoll set; guarded by the parker's mu
}

// deferredRelease is a Released answer held back for a requeue (see core.release).
type deferredRelease struct {
	seq, fence uint64
	token      string
}

// opHangup is an internal pseudo-frame: the replies queued before it are written,
// then the connection closes without a notice.
const opHangup wire.Op = 254

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little, do not spin.
			s.log.Warn("accept", "err", err)
			select {
			case <-time.After(backoff):
			case <-s.stop:
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), quit: make(chan struct{}), space: make(chan struct{}, 1),
			parkedFD: -1}
		c.deferred = c.deferredBuf[:0]
		if sc, ok := nc.(syscall.Conn); ok {
			c.raw, _ = sc.SyscallConn()
		}
		s.connsMu.Lock()
		full := len(s.conns) >= s.cfg.MaxConns
		if !full {
			s.conns[c] = struct{}{}
		}
		s.connsMu.Unlock()
		if full {
			s.metrics.protocolErrors.WithLabelValues("too_many_conns").Inc()
			nc.Close()
			continue
		}
		s.metrics.connections.Inc()
		s.wg.Add(1)
		go c.serve()
	}
}

// serve runs the handshake, then hands the connection to a reader goroutine of its
// own: the handshake's calls grow a goroutine's stack, and an idle connection keeps
// its reader's stack for as long as it lives (10k sessions × 8 KiB is 80 MB).
func (c *conn) serve() {
	defer c.s.wg.Done()
	// Client frames are small; a larger one passes through into the frame buffer.
	r := wire.NewReaderSize(rawio.Wrap(c.nc), wire.SmallReaderSize)
	hello, err := c.handshake(r)
	if err != nil {
		reason := wire.Reason(err)
		if isTimeout(err) {
			reason = "handshake_timeout"
		} else if errors.Is(err, errAuth) {
			reason = "auth"
		} else if errors.Is(err, errHello) {
			reason = "bad_hello"
		} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			reason = "handshake_eof"
		}
		c.s.metrics.protocolErrors.WithLabelValues(reason).Inc()
		c.s.log.Info("handshake refused", "remote", c.remote, "reason", reason, "err", err)
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.nc.Write(wire.Append(nil, &wire.Frame{Op: wire.OpError, Code: codeFor(err), Text: err.Error()}))
		c.forget()
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	if c.s.do(func(now time.Time) { c.s.core.hello(c, &hello, now) }) != nil {
		c.forget()
		return
	}
	c.r = r
	c.allowance, c.lastRefill = float64(c.s.cfg.MaxFrameRate), time.Now()
	c.lastFrame.Store(c.lastRefill.UnixNano())
	c.resume()
}

// forget closes the socket and takes the connection off the server's list.
func (c *conn) forget() {
	c.nc.Close()
	c.s.connsMu.Lock()
	delete(c.s.conns, c)
	c.s.connsMu.Unlock()
	c.s.metrics.connections.Dec()
}

// serveFrames reads frames until the connection ends, then tells the core, or until
// it goes quiet and the parker takes it.
func (c *conn) serveFrames() {
	defer c.s.wg.Done()
	end := c.readLoop()
	if end == endParked {
		return
	}
	defer c.forget()
	c.s.post(&work{in: inbound{c: c, closed: true, peerClosed: end == endPeer}})
	if end == endHangup { // the connection closes once the error frame is out; give it a moment
		select {
		case <-c.quit:
		case <-time.After(2 * time.Second):
		}
	}
	// Not closeNow: frames this reader queued before the end (a goodbye) are still to
	// be handled, and closing would make the core drop them as the server's doing.
	c.shut()
}

var (
	errAuth  = errors.New("cluster key proof did not verify")
	errHello = errors.New("expected hello")
)

func codeFor(err error) wire.Code {
	switch {
	case errors.Is(err, wire.ErrVersion), errors.Is(err, wire.ErrBadMagic):
		return wire.CodeVersion
	case errors.Is(err, errAuth):
		return wire.CodeAuth
	}
	return wire.CodeBadFrame
}

// provesAKey says whether mac is a client's proof, over the challenge's nonce and its
// names, of one of keys: while the cluster key changes, clients may prove the old
// one or the new (cluster.ParseKeys).
func provesAKey(keys [][]byte, mac, nonce []byte, node, bootID string) bool {
	for _, k := range keys {
		if hmac.Equal(mac, wire.MAC(k, nonce, node, bootID)) {
			return true
		}
	}
	return false
}

// handshake sends the challenge and reads the hello, all within HandshakeTimeout: a
// peer that connects and says nothing holds a slot for that long at most.
func (c *conn) handshake(r *wire.Reader) (wire.Frame, error) {
	_ = c.nc.SetDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	nonce := make([]byte, wire.NonceSize)
	_, _ = rand.Read(nonce)
	if _, err := c.nc.Write(wire.Append(nil, &wire.Frame{Op: wire.OpChallenge, Version: wire.Version, Nonce: nonce})); err != nil {
		return wire.Frame{}, err
	}
	var h wire.Frame
	if err := r.Read(&h); err != nil {
		return h, err
	}
	if h.Op != wire.OpHello {
		return h, fmt.Errorf("%w, got %s", errHello, h.Op)
	}
	if h.Text == "" {
		return h, fmt.Errorf("%w: empty node name", errHello)
	}
	if c.s.keys != nil && !provesAKey(c.s.keys, h.MAC, nonce, h.Text, h.BootID) {
		return h, errAuth
	}
	return h, nil
}

// parkAfter is how long a reader waits for a frame before it parks its connection.
// A client keeps alive every third of its TTL, so an idle session is parked most of
// the time, while one that is trading tokens is never parked.
const parkAfter = 200 * time.Millisecond

// readEnd is how a reader's run ended.
type readEnd int

const (
	endServer readEnd = iota // the server closed it, a timeout or a shutdown
	endPeer                  // the peer closed it (EOF or reset)
	endHangup                // bad input: a last error frame is on its way out
	endParked                // quiet: the parker holds it, the connection lives on
)

// readLoop feeds frames to the core until the connection ends or goes quiet.
func (c *conn) readLoop() readEnd {
	r := c.r
	rate := float64(c.s.cfg.MaxFrameRate)
	now := time.Now() // then each frame's arrival: awaitFrame needs no clock of its own
	for {
		if end, ok := c.awaitFrame(now); !ok {
			return end
		}
		// A live client sends a keepalive every third of its TTL; a connection silent
		// for twice that is dead or frozen. The session's own TTL decides about its
		// tokens. A frame already buffered needs no deadline (the common case).
		if !r.Complete() {
			c.deadline = time.Now().Add(c.idleLimit())
			_ = c.nc.SetReadDeadline(c.deadline)
		}
		// Decoded straight into the work that post copies into the queue.
		var w work
		w.in.c = c
		if err := r.Read(&w.in.f); err != nil {
			return c.readFailed(err)
		}
		// Token bucket: MaxFrameRate frames a second, bursts of a second's worth. On
		// the connection, not the goroutine: parking does not refill it.
		now = time.Now()
		w.in.at = now
		c.lastFrame.Store(now.UnixNano())
		c.allowance = min(rate, c.allowance+now.Sub(c.lastRefill).Seconds()*rate)
		c.lastRefill = now
		if c.allowance < 1 {
			c.overRate()
			return endHangup
		}
		c.allowance--
		if c.mustWait() && !c.awaitRoom() {
			return endServer
		}
		c.inflight.Add(1)
		if !c.s.post(&w) {
			return endServer
		}
	}
}

// overRate refuses a connection over the frame rate limit. Apart, and not inlined,
// so that its locals do not widen readLoop's stack frame (see Server.post).
//
//go:noinline
func (c *conn) overRate() {
	c.s.metrics.protocolErrors.WithLabelValues("rate").Inc()
	c.s.log.Warn("frame rate over limit, connection closed", "remote", c.remote, "limit", c.s.cfg.MaxFrameRate)
	c.sendError(wire.CodeTooMany, fmt.Errorf("more than %d frames per second", c.s.cfg.MaxFrameRate))
}

// awaitFrame waits for the next frame to start; if none has for parkAfter, it parks
// the connection. ok means a frame is arriving (or the parker could not take the
// connection, and the caller's read waits as usual). The read deadline moves once
// less than half of parkAfter is left, not with every frame (that costs a timer
// update per frame), nor only once it has passed (that wakes every busy reader
// each parkAfter for nothing: 2,500 wake-ups a second with 512 sessions trading).
// now is a moment ago: the last frame's arrival, or the reader's start.
func (c *conn) awaitFrame(now time.Time) (end readEnd, ok bool) {
	if c.s.parker == nil || c.r.Buffered() > 0 {
		return 0, true
	}
	for {
		if c.deadline.Sub(now) < parkAfter/2 {
			c.deadline = time.Unix(0, c.lastFrame.Load()).Add(parkAfter)
			if soonest := now.Add(time.Millisecond); c.deadline.Before(soonest) {
				c.deadline = soonest
			}
			_ = c.nc.SetReadDeadline(c.deadline)
		}
		err := c.r.Wait()
		switch {
		case err == nil:
			return 0, true
		case !isTimeout(err):
			return c.readFailed(err), false
		}
		now = time.Now()
		quiet := now.Sub(time.Unix(0, c.lastFrame.Load()))
		switch {
		case quiet < parkAfter: // frames came after the deadline was set: wait the rest
		case quiet > c.idleLimit():
			return c.readFailed(err), false
		case c.s.parker.park(c):
			return endParked, false
		default:
			return 0, true
		}
	}
}

// readFailed classifies a read error and says how the connection ends.
func (c *conn) readFailed(err error) readEnd {
	if c.closing.Load() {
		return endServer
	}
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return endPeer
	}
	if isTimeout(err) {
		c.s.log.Info("connection idle, closed; its session waits for its TTL", "remote", c.remote)
		return endServer
	}
	reason := wire.Reason(err)
	c.s.metrics.protocolErrors.WithLabelValues(reason).Inc()
	c.s.log.Warn("bad frame, connection closed", "remote", c.remote, "reason", reason, "err", err)
	c.sendError(codeFor(err), err)
	return endHangup
}

// isTimeout reports whether err is a deadline's. A function of its own: the target
// errors.As needs escapes, and declared in a caller it would cost an allocation
// on every call, not only on errors.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// idleLimit is how long the connection may stay silent.
func (c *conn) idleLimit() time.Duration { return 2*c.ttl + time.Second }

// resume gives a parked connection a reader again.
func (c *conn) resume() {
	c.s.wg.Add(1)
	go c.serveFrames()
}

// mustWait reports whether the reader must stop reading: too many of its frames
// await the core, or its unwritten replies exceed backlogPause.
func (c *conn) mustWait() bool {
	return c.inflight.Load() >= maxInflight || c.backlogLen.Load() > backlogPause
}

// awaitRoom waits until the reader may read again; false if the connection or the
// server closes first. The flag is set before the condition is checked again, and
// room checks the flag after making room, so one of the two sees the other.
func (c *conn) awaitRoom() bool {
	c.waitingRoom.Store(true)
	defer c.waitingRoom.Store(false)
	for c.mustWait() {
		select {
		case <-c.space:
		case <-c.quit:
			return false
		case <-c.s.stop:
			return false
		}
	}
	return true
}

// room wakes the reader if it waits for the reply queue to drain.
func (c *conn) room() {
	if !c.waitingRoom.Load() {
		return
	}
	select {
	case c.space <- struct{}{}:
	default:
	}
}

// sendError writes a last error frame and closes the connection once it is out;
// called by the reader.
func (c *conn) sendError(code wire.Code, err error) {
	c.closing.Store(true)
	c.write(wire.Append(nil, &wire.Frame{Op: wire.OpError, Code: code, Text: err.Error()}), true)
}

// write sends b, then closes the connection if closeAfter. It never blocks on the
// peer: it writes what the socket takes at once and leaves the rest to a flusher
// goroutine, which it starts. The core calls it for each connection its batch
// answered, so that a burst of replies leaves in one write; the reader calls it for a
// last error frame.
func (c *conn) write(b []byte, closeAfter bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.peerGone {
		b = nil
	}
	if !c.flushing && c.raw != nil && len(b) > 0 {
		n, err := c.writeNow(b)
		if err != nil {
			c.lostPeer()
			b = nil
		} else {
			b = b[n:]
		}
	}
	if len(b) > 0 {
		if len(c.backlog)+len(b) > maxBacklog {
			if !c.closing.Load() {
				c.s.metrics.protocolErrors.WithLabelValues("slow_consumer").Inc()
				c.s.log.Warn("client not reading, connection closed", "remote", c.remote)
			}
			c.closeNow()
			return
		}
		c.backlog = append(c.backlog, b...)
		c.backlogLen.Store(int32(len(c.backlog)))
		if !c.flushing {
			c.flushing = true
			c.s.wg.Add(1)
			go c.flush()
		}
	}
	if closeAfter {
		c.closing.Store(true)
		if c.flushing {
			c.closeAfter = true
		} else {
			c.closeNow()
		}
	}
}

// lostPeer notes that a write failed (the peer reset or closed the connection):
// later replies are dropped, but the socket stays open for the reader, which still
// reads the frames that arrived before the failure (a goodbye, a cancel, a release)
// and then the end of the stream. Closing it here, or marking it closing, would lose
// those frames and leave the session holding what it gave back until its TTL.
// With c.wmu held.
func (c *conn) lostPeer() {
	c.peerGone = true
	c.backlog = nil
	c.backlogLen.Store(0)
}

// writeNow writes what the socket takes without waiting: the descriptor is in
// non-blocking mode, so a full send buffer returns EAGAIN instead of blocking.
// With c.wmu held.
func (c *conn) writeNow(b []byte) (int, error) {
	if c.writeSome == nil { // made once: a closure per write would allocate per write
		c.writeSome = func(fd uintptr) bool {
			// Done either way: what the socket did not take goes to the flusher.
			c.wn, c.werr = rawio.WriteNow(fd, c.wb) // see package rawio
			return true
		}
	}
	c.wb, c.wn, c.werr = b, 0, nil
	err := c.raw.Write(c.writeSome)
	if err == nil {
		err = c.werr
	}
	n := c.wn
	c.wb = nil
	return n, err
}

// flush writes the backlog with ordinary blocking writes until it is empty, then
// ends: the goroutine exists only while the client lags.
func (c *conn) flush() {
	defer c.s.wg.Done()
	var buf []byte
	for {
		c.wmu.Lock()
		if len(c.backlog) == 0 {
			c.flushing = false
			if c.closeAfter {
				c.closeNow()
			}
			c.wmu.Unlock()
			c.room()
			return
		}
		buf, c.backlog = c.backlog, buf[:0]
		c.backlogLen.Store(0)
		c.wmu.Unlock()
		c.room()
		_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.nc.Write(buf); err != nil {
			c.wmu.Lock()
			c.flushing, c.backlog = false, nil
			c.backlogLen.Store(0)
			if isTimeout(err) || c.closeAfter {
				c.closeNow() // five seconds without taking a byte: a slow consumer
			} else {
				c.lostPeer()
			}
			c.wmu.Unlock()
			c.room()
			return
		}
	}
}

// closeNow closes the connection now, on the server's initiative. To let queued
// frames out first, the core queues a Closing or opHangup frame instead.
func (c *conn) closeNow() {
	c.closing.Store(true)
	c.shut()
}

// shut closes the socket and wakes whatever waits on the connection. Idempotent.
func (c *conn) shut() {
	c.once.Do(func() {
		close(c.quit)
		if c.s.parker != nil {
			c.s.parker.unpark(c) // before the descriptor can be reused
		}
		c.nc.Close()
	})
}
