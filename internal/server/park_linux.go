package server

import (
	"sync"
	"syscall"
	"time"
)

// parker holds connections that have gone quiet, so that they need no goroutine:
// ten thousand idle sessions would otherwise park ten thousand readers, 4 KiB of
// stack each, to hear one keepalive every few seconds. A reader that waited
// parkAfter for a frame hands its socket to the parker and ends; the parker watches
// the sockets with an epoll set of its own and starts a new reader for each that
// becomes readable or is closed, and closes those silent for longer than their idle
// limit.
type parker struct {
	s    *Server
	epfd int

	mu     sync.Mutex      // guards parked
	parked map[int32]*conn // by descriptor; a connection is here or has a reader, never both
}

func newParker(s *Server) (*parker, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &parker{s: s, epfd: fd, parked: map[int32]*conn{}}, nil
}

// park hands c to the parker; false if it cannot watch c, whose reader then keeps it.
func (p *parker) park(c *conn) bool {
	if c.raw == nil {
		return false
	}
	c.r.Detach()
	var fd int32 = -1
	_ = c.raw.Control(func(d uintptr) { fd = int32(d) })
	if fd < 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.closing.Load() { // closed meanwhile: its reader must end it
		return false
	}
	p.parked[fd] = c
	c.parkedFD = fd
	p.s.metrics.parked.Inc()
	// One-shot: an event takes the connection out of the set until it parks again.
	// Data that came before this call is reported at once.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
	op := syscall.EPOLL_CTL_MOD
	if !c.inEpoll {
		op = syscall.EPOLL_CTL_ADD
	}
	if err := syscall.EpollCtl(p.epfd, op, int(fd), &ev); err != nil {
		p.take(c)
		return false
	}
	c.inEpoll = true
	return true
}

// unpark takes c out of the parker if it is there and gives it a reader again.
// Called before its socket closes, so that a descriptor number reused by a new
// connection never finds the old one.
func (p *parker) unpark(c *conn) {
	p.mu.Lock()
	mine := c.parkedFD >= 0 && p.parked[c.parkedFD] == c
	if mine {
		p.take(c)
	}
	p.mu.Unlock()
	if mine {
		c.resume()
	}
}

// take removes c from the parked set; with p.mu held.
func (p *parker) take(c *conn) {
	delete(p.parked, c.parkedFD)
	c.parkedFD = -1
	p.s.metrics.parked.Dec()
}

// run waits for parked sockets to become readable and resumes their connections;
// about once a second it closes those that have been silent too long. It ends when
// the server stops.
func (p *parker) run() {
	defer p.s.wg.Done()
	defer syscall.Close(p.epfd)
	events := make([]syscall.EpollEvent, 128)
	lastSweep := time.Now()
	for {
		// A short timeout, not a wake-up descriptor: the server's stop is noticed
		// within it, and the sweep needs the clock anyway.
		n, err := syscall.EpollWait(p.epfd, events, 100)
		select {
		case <-p.s.stop:
			return
		default:
		}
		if err != nil && err != syscall.EINTR {
			p.s.log.Error("epoll wait", "err", err)
			return
		}
		for _, ev := range events[:max(n, 0)] {
			p.mu.Lock()
			c := p.parked[ev.Fd]
			if c != nil {
				p.take(c)
			}
			p.mu.Unlock()
			if c != nil {
				c.resume()
			}
		}
		if now := time.Now(); now.Sub(lastSweep) >= time.Second {
			lastSweep = now
			p.sweep(now)
		}
	}
}

// sweep closes parked connections silent for longer than their idle limit: dead or
// frozen peers. Their sessions wait for their TTL.
func (p *parker) sweep(now time.Time) {
	var idle []*conn
	p.mu.Lock()
	for _, c := range p.parked {
		if now.UnixNano()-c.lastFrame.Load() > int64(c.idleLimit()) {
			idle = append(idle, c)
		}
	}
	for _, c := range idle {
		p.take(c)
	}
	p.mu.Unlock()
	for _, c := range idle {
		p.s.log.Info("connection idle, closed; its session waits for its TTL", "remote", c.remote)
		c.closeNow()
		c.resume() // its reader finds the socket closed and ends the connection
	}
}
