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
	ln      net.Listener
	target  string
	cut     atomic.Bool
	mu      sync.Mutex // guards conns
	conns   []net.Conn
	wg      sync.WaitGroup
	stopped chan struct{}
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

// Heal lets bytes flow again.
func (p *Proxy) Heal() { p.cut.Store(false) }

// Close ends the proxy and every connection through it.
func (p *Proxy) Close() {
	select {
	case <-p.stopped:
		return
	default:
	}
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
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *Proxy) pipe(from, to net.Conn) {
	defer p.wg.Done()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		for p.cut.Load() { // hold the bytes, as a partition would, until healed
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
