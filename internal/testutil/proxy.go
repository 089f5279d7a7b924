package testutil

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards TCP connections to a target and can cut them off without closing
// them, the way a network partition looks to both ends: bytes stop, no FIN, no RST.
type Proxy struct {
	ln        net.Listener
	target    string
	cut       atomic.Bool // both directions
	cutBack   atomic.Bool // from the target back to the client only
	mu        sync.Mutex  // guards conns, clients, linger
	conns     []net.Conn
	clients   []net.Conn            // the client side of each connection
	linger    map[net.Conn]struct{} // target sides left open by Sever until Close
	wg        sync.WaitGroup
	stopped   chan struct{}
	closeOnce sync.Once
}

// StartProxy listens on loopback and forwards to target until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, stopped: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Partition stops every byte in both directions; connections stay open.
func (p *Proxy) Partition() { p.cut.Store(true) }

// PartitionReplies stops the bytes from the target back to the client only: the
// server hears the client, the client hears nothing.
func (p *Proxy) PartitionReplies() { p.cutBack.Store(true) }

// Heal lets bytes flow again.
func (p *Proxy) Heal() { p.cut.Store(false); p.cutBack.Store(false) }

// Close ends the proxy and every connection through it. Idempotent.
func (p *Proxy) Close() {
	p.closeOnce.Do(p.close)
}

func (p *Proxy) close() {
	close(p.stopped)
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.clients = append(p.clients, in)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out, &p.cut)
		go p.pipe(out, in, &p.cutBack)
	}
}

// Sever closes the client side of every connection and leaves the target side open
// and silent: the client sees its connection die, the server sees nothing (no FIN)
// and waits for the client as after a partition.
func (p *Proxy) Sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.linger == nil {
		p.linger = map[net.Conn]struct{}{}
	}
	for i, c := range p.conns {
		if i%2 == 1 {
			p.linger[c] = struct{}{}
		}
	}
	for _, c := range p.clients {
		c.Close()
	}
	p.clients = nil
}

func (p *Proxy) lingers(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.linger[c]
	return ok
}

func (p *Proxy) pipe(from, to net.Conn, cutHere *atomic.Bool) {
	defer p.wg.Done()
	defer func() {
		if !p.lingers(to) {
			to.Close()
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		for p.cut.Load() || cutHere.Load() { // hold the bytes, as a partition would, until healed
			select {
			case <-p.stopped:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		if n > 0 {
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				from.Close()
			}
			return
		}
	}
}
