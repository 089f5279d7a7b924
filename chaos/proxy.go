package main

import (
	"net"
	"sync"
)

// proxy stands between one worker and one server, so that the nemesis can cut that
// worker off alone. Modes:
//   - hold: bytes stop in both directions and wait; connections stay open, no FIN,
//     no RST (a partition TCP rides out by retransmitting);
//   - drop: bytes are thrown away; on heal, every connection that lost bytes is
//     closed (a partition long enough for the connection to die);
//   - reset: every connection is reset at once, both ways (RST to each end, as a
//     stateful middlebox that loses its state does), then new ones hold as in hold.
//
// New connections are accepted in every mode and suffer it.
//
// A close (EOF) is held as bytes are: the other end sees it once the partition
// heals (hold), or sees its connection closed then (drop).
//
// A raft proxy (raftnet.go) also takes connections one by one: from says which
// server opened one, and blocked whether that server's connections through this
// proxy are cut off now; a blocked connection's bytes are dropped, both ways, a
// close from either end is held, and it is closed at both ends once no longer
// blocked (healBlocked).
type proxy struct {
	ln      net.Listener
	target  func() string       // the server's address
	from    func(net.Conn) int  // raft proxies: the server that opened a connection, -1 if not known
	blocked func(from int) bool // raft proxies: whether a connection from that server is cut off; called with mu held

	mu        sync.Mutex // guards mode, healed, unblocked, conns, closed
	mode      proxyMode
	healed    chan struct{} // closed when the current cut heals
	unblocked chan struct{} // raft proxies: closed (and replaced) when a heal may unblock connections
	conns     map[*pipePair]bool
	wg        sync.WaitGroup
	closed    bool
}

type proxyMode int

const (
	open proxyMode = iota
	hold
	drop
	reset
)

func (m proxyMode) String() string { return [...]string{"open", "hold", "drop", "reset"}[m] }

type pipePair struct {
	in, out net.Conn
	from    int  // raft proxies: the server that opened it, -1 if not known
	damaged bool // lost bytes to a drop; guarded by proxy.mu
}

func startProxy(target func() string) (*proxy, error) {
	return startPolicyProxy(target, nil, nil)
}

// startPolicyProxy is startProxy with a raft proxy's from and blocked (see proxy).
func startPolicyProxy(target func() string, from func(net.Conn) int, blocked func(int) bool) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, from: from, blocked: blocked, conns: map[*pipePair]bool{},
		unblocked: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// cut starts a partition in mode m.
func (p *proxy) cut(m proxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == open {
		p.healed = make(chan struct{})
	}
	if m == reset {
		for pp := range p.conns {
			abort(pp.in)
			abort(pp.out)
		}
		m = hold
	}
	p.mode = m
}

// abort closes c with an RST rather than a FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// heal ends the partition: held bytes flow, damaged connections close.
func (p *proxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == open {
		return
	}
	p.mode = open
	close(p.healed)
	for pp := range p.conns {
		if pp.damaged {
			pp.in.Close()
			pp.out.Close()
		}
	}
}

// healBlocked closes every connection that lost bytes to blocked and is no longer
// blocked: its stream has a hole, as a connection through a partition that lasted
// has. Those still blocked stay open and keep losing every byte.
func (p *proxy) healBlocked() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wake()
	for pp := range p.conns {
		if pp.damaged && !p.blocked(pp.from) {
			pp.in.Close()
			pp.out.Close()
		}
	}
}

// closeAll closes every connection at both ends, as the end of the process behind
// the proxy would (a raft proxy whose server's address changes hands: misroute.go).
func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pp := range p.conns {
		pp.in.Close()
		pp.out.Close()
	}
}

// wake has the pipes that wait out a block look again; called with mu held.
func (p *proxy) wake() {
	close(p.unblocked)
	p.unblocked = make(chan struct{})
}

func (p *proxy) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.ln.Close()
	for pp := range p.conns {
		pp.in.Close()
		pp.out.Close()
	}
	if p.mode != open {
		p.mode = open
		close(p.healed)
	}
	p.wake()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		pp := &pipePair{in: in, from: -1}
		if p.from != nil { // before the dial: the opener may not wait for it
			pp.from = p.from(in)
		}
		out, err := net.Dial("tcp", p.target())
		if err != nil {
			// Server down: the client sees its connection closed, once no partition
			// hides it.
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.waitOpen(pp)
				in.Close()
			}()
			continue
		}
		pp.out = out
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		p.conns[pp] = true
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(pp, in, out)
		go p.pipe(pp, out, in)
	}
}

// pipe copies from → to, obeying the mode for every chunk read.
func (p *proxy) pipe(pp *pipePair, from, to net.Conn) {
	defer p.wg.Done()
	defer func() {
		from.Close()
		to.Close()
		p.mu.Lock()
		delete(p.conns, pp)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 && !p.pass(pp) {
			n = 0 // dropped
		}
		if n > 0 {
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			p.waitOpen(pp) // a partition hides the close too
			return
		}
	}
}

// waitOpen returns once no partition hides pp's close (on a raft proxy, once pp
// is not blocked), or the proxy is closed. A close held while pp is blocked is
// lost bytes: it marks pp damaged, and healBlocked closes both ends.
func (p *proxy) waitOpen(pp *pipePair) {
	for {
		p.mu.Lock()
		mode, healed, unblocked, closed := p.mode, p.healed, p.unblocked, p.closed
		cutOff := p.blocked != nil && p.blocked(pp.from)
		if cutOff {
			pp.damaged = true
		}
		p.mu.Unlock()
		switch {
		case closed:
			return
		case cutOff:
			<-unblocked
		case mode != open:
			<-healed
		default:
			return
		}
	}
}

// pass waits out a hold and says whether a chunk read now may go through. On a raft
// proxy, a connection that lost a chunk to blocked loses every later one too, until
// healBlocked closes it: its stream has a hole.
func (p *proxy) pass(pp *pipePair) bool {
	for {
		p.mu.Lock()
		mode, healed, closed := p.mode, p.healed, p.closed
		cutOff := p.blocked != nil && (pp.damaged || p.blocked(pp.from))
		if mode == drop || cutOff {
			pp.damaged = true
		}
		p.mu.Unlock()
		switch {
		case closed, cutOff:
			return false
		case mode == open:
			return true
		case mode == drop:
			return false
		}
		<-healed
	}
}
