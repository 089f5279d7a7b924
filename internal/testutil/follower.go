package testutil

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// Follower is a fake raft follower's token port: to every connection it sends a
// challenge, reads the hello, answers not_leader naming its leader, and hangs up,
// the way a server that does not lead answers a client.
type Follower struct {
	ln     net.Listener
	wg     sync.WaitGroup // the accept loop and one goroutine per connection
	mu     sync.Mutex     // guards leader, hellos
	leader string
	hellos []wire.Frame
}

// StartFollower listens on loopback and names leader ("" for none) until the test
// ends.
func StartFollower(t testing.TB, leader string) *Follower {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Follower{ln: ln, leader: leader}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(func() { ln.Close(); f.wg.Wait() })
	return f
}

// Addr is the fake's token address.
func (f *Follower) Addr() string { return f.ln.Addr().String() }

// SetLeader changes the address the fake names from now on.
func (f *Follower) SetLeader(addr string) {
	f.mu.Lock()
	f.leader = addr
	f.mu.Unlock()
}

// Hellos returns the hellos the fake has read, oldest first. A hello is counted
// before it is answered: once a client has the answer, its hello is here.
func (f *Follower) Hellos() []wire.Frame {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]wire.Frame(nil), f.hellos...)
}

func (f *Follower) accept() {
	defer f.wg.Done()
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer nc.Close()
			f.answer(nc)
		}()
	}
}

// answer speaks one connection's handshake; a peer that misbehaves is dropped.
func (f *Follower) answer(nc net.Conn) {
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	r, w := wire.NewReader(nc), wire.NewWriter(nc)
	ch := wire.Frame{Op: wire.OpChallenge, Version: wire.Version, Nonce: make([]byte, wire.NonceSize), Epoch: 1}
	if w.Write(&ch) != nil || w.Flush() != nil {
		return
	}
	var hello wire.Frame
	if r.Read(&hello) != nil || hello.Op != wire.OpHello {
		return
	}
	f.mu.Lock()
	f.hellos = append(f.hellos, hello)
	leader := f.leader
	f.mu.Unlock()
	refusal := wire.Frame{Op: wire.OpError, Code: wire.CodeNotLeader, Text: leader}
	if w.Write(&refusal) == nil {
		_ = w.Flush()
	}
}
