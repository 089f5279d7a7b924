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

	"github.com/baton-dev/baton/internal/wire"
)

// outQueue is how many frames may wait for a connection's writer. The reader stops
// reading at half of it (backpressure), so only grants and revocations caused by
// other connections can fill the rest; a client that lets it fill is cut off rather
// than stall the core. Small: every connection pays for it (10k idle sessions).
const outQueue = 64

// conn is one token protocol connection. Its reader and writer goroutines belong to
// the server's WaitGroup; the core decides when it closes.
type conn struct {
	s      *Server
	nc     net.Conn
	remote string
	out    chan wire.Frame
	quit   chan struct{}
	once   sync.Once

	// closing is set when the server lets go of the connection (restart, close-
	// connections, protocol error, slow consumer): its end is then not the client's
	// doing and must not end the session.
	closing atomic.Bool

	// inflight counts frames handed to the core whose replies are not yet queued
	// (the core queues them when its batch commits). The reader stops reading while
	// inflight plus the queued replies reach half of outQueue, so a client that
	// pipelines gets backpressure (TCP's own) instead of a cut-off; space wakes it
	// when the writer or the core make room.
	inflight atomic.Int32
	space    chan struct{}

	session *session      // set and read by the core goroutine only
	ttl     time.Duration // the session's TTL, set by the core during hello, read by the reader after it
}

// opHangup is an internal pseudo-frame: the writer flushes what is queued before it,
// then closes the connection without a notice.
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
		c := &conn{s: s, nc: nc, remote: nc.RemoteAddr().String(), out: make(chan wire.Frame, outQueue), quit: make(chan struct{}),
			space: make(chan struct{}, 1)}
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

func (c *conn) serve() {
	defer c.s.wg.Done()
	defer func() {
		c.nc.Close()
		c.s.connsMu.Lock()
		delete(c.s.conns, c)
		c.s.connsMu.Unlock()
		c.s.metrics.connections.Dec()
	}()
	r := wire.NewReader(c.nc)
	w := wire.NewWriter(c.nc)
	hello, err := c.handshake(r, w)
	if err != nil {
		reason := wire.Reason(err)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
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
		_ = w.Write(&wire.Frame{Op: wire.OpError, Code: codeFor(err), Text: err.Error()})
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = w.Flush()
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	ok := c.s.do(func(now time.Time) { c.s.core.hello(c, &hello, now) }) == nil
	if !ok {
		return
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop(w)
	}()
	peerClosed, hangup := c.readLoop(r)
	select {
	case c.s.inbox <- inbound{c: c, closed: true, peerClosed: peerClosed}:
	case <-c.s.stop:
	}
	if hangup { // the writer closes once the error frame is out; give it a moment
		select {
		case <-writerDone:
		case <-time.After(2 * time.Second):
		}
	}
	// Not closeNow: frames this reader queued before the end (a goodbye) are still to
	// be handled, and closing would make the core drop them as the server's doing.
	c.shut()
	<-writerDone
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

// handshake sends the challenge and reads the hello, all within HandshakeTimeout: a
// peer that connects and says nothing holds a slot for that long at most.
func (c *conn) handshake(r *wire.Reader, w *wire.Writer) (wire.Frame, error) {
	_ = c.nc.SetDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	nonce := make([]byte, wire.NonceSize)
	_, _ = rand.Read(nonce)
	if err := w.Write(&wire.Frame{Op: wire.OpChallenge, Version: wire.Version, Nonce: nonce, Epoch: 0}); err != nil {
		return wire.Frame{}, err
	}
	if err := w.Flush(); err != nil {
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
	if c.s.key != nil && !hmac.Equal(h.MAC, wire.MAC(c.s.key, nonce, h.Text, h.BootID)) {
		return h, errAuth
	}
	return h, nil
}

// readLoop feeds frames to the core until the connection ends, and reports whether
// the peer closed it (EOF or reset) as opposed to the server, a timeout or bad input,
// and whether it queued a last error frame for the writer to send before closing.
func (c *conn) readLoop(r *wire.Reader) (peerClosed, hangup bool) {
	// A live client sends a keepalive every third of its TTL; a connection silent for
	// twice that is dead or frozen. The session's own TTL decides about its tokens.
	idle := 2*c.ttl + time.Second
	rate := float64(c.s.cfg.MaxFrameRate)
	allowance, last := rate, time.Now()
	for {
		_ = c.nc.SetReadDeadline(time.Now().Add(idle))
		var in inbound
		in.c = c
		err := r.Read(&in.f)
		if err != nil {
			if c.closing.Load() {
				return false, false
			}
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				return true, false
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.s.log.Info("connection idle, closed; its session waits for its TTL", "remote", c.remote)
				return false, false
			}
			reason := wire.Reason(err)
			c.s.metrics.protocolErrors.WithLabelValues(reason).Inc()
			c.s.log.Warn("bad frame, connection closed", "remote", c.remote, "reason", reason, "err", err)
			c.sendError(codeFor(err), err)
			return false, true
		}
		// Token bucket: MaxFrameRate frames a second, bursts of a second's worth.
		now := time.Now()
		allowance = min(rate, allowance+now.Sub(last).Seconds()*rate)
		last = now
		if allowance < 1 {
			c.s.metrics.protocolErrors.WithLabelValues("rate").Inc()
			c.s.log.Warn("frame rate over limit, connection closed", "remote", c.remote, "limit", c.s.cfg.MaxFrameRate)
			c.sendError(wire.CodeTooMany, fmt.Errorf("more than %d frames per second", c.s.cfg.MaxFrameRate))
			return false, true
		}
		allowance--
		for int(c.inflight.Load())+len(c.out) >= outQueue/2 {
			select {
			case <-c.space:
			case <-c.quit:
				return false, false
			case <-c.s.stop:
				return false, false
			}
		}
		c.inflight.Add(1)
		select {
		case c.s.inbox <- in:
		case <-c.s.stop:
			return false, false
		}
	}
}

// room wakes the reader if it waits for the reply queue to drain.
func (c *conn) room() {
	select {
	case c.space <- struct{}{}:
	default:
	}
}

// sendError queues a last error frame and lets the writer close the connection.
func (c *conn) sendError(code wire.Code, err error) {
	c.closing.Store(true)
	select {
	case c.out <- wire.Frame{Op: wire.OpError, Code: code, Text: err.Error()}:
	default:
	}
	select {
	case c.out <- wire.Frame{Op: opHangup}:
	default:
		c.closeNow()
	}
}

// writeLoop writes queued frames, flushing only when the queue is empty so that a
// burst of replies leaves in one write.
func (c *conn) writeLoop(w *wire.Writer) {
	for {
		select {
		case <-c.quit:
			return
		case f := <-c.out:
			c.room()
			if f.Op == opHangup {
				_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
				_ = w.Flush()
				c.closeNow()
				return
			}
			if err := w.Write(&f); err != nil {
				c.closeNow()
				return
			}
			if f.Op == wire.OpClosing || len(c.out) == 0 {
				_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := w.Flush(); err != nil {
					c.closeNow()
					return
				}
			}
			if f.Op == wire.OpClosing {
				c.closeNow()
				return
			}
		}
	}
}

// send queues f for the writer; called by the core. A full queue means the client
// does not read: it is cut off.
func (c *conn) send(f *wire.Frame) {
	if f.Op == wire.OpClosing || f.Op == opHangup {
		c.closing.Store(true)
	}
	select {
	case c.out <- *f:
	default:
		if !c.closing.Load() {
			c.s.metrics.protocolErrors.WithLabelValues("slow_consumer").Inc()
			c.s.log.Warn("client not reading, connection closed", "remote", c.remote)
		}
		c.closeNow()
	}
}

// closeNow closes the connection now, on the server's initiative. To let queued
// frames out first, the core queues a Closing or opHangup frame instead.
func (c *conn) closeNow() {
	c.closing.Store(true)
	c.shut()
}

// shut closes the socket and stops the writer. Idempotent.
func (c *conn) shut() {
	c.once.Do(func() {
		close(c.quit)
		c.nc.Close()
	})
}
