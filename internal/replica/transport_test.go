package replica

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/rawio"
)

// TestStreamConnsAreRaw: raft's connections, dialed and accepted (after their
// opening), read and write with raw system calls, and carry bytes both ways; a Dial
// hook's connection that has no descriptor passes through as it is.
func TestStreamConnsAreRaw(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpStream{Listener: listen(ln, nil, ln.Addr().String(), nil, nil), advertise: advertiseAddr(ln.Addr().String())}
	defer s.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := s.Accept()
		if err != nil {
			t.Error(err)
			close(accepted)
			return
		}
		accepted <- c
	}()
	out, err := s.Dial(raft.ServerAddress(ln.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer in.Close()
	for name, c := range map[string]net.Conn{"dialed": out, "accepted": in} {
		if _, raw := c.(*rawio.Conn); !raw {
			t.Errorf("%s connection is %T, not a *rawio.Conn", name, c)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pair := range [][2]net.Conn{{out, in}, {in, out}} {
		w, r := pair[0], pair[1]
		msg := []byte("append entries")
		if err := r.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("read %q, want %q", got, msg)
		}
	}

	// A test's Dial hook may hand back a connection of its own kind.
	a, b := net.Pipe()
	defer b.Close()
	hooked := &tcpStream{Listener: ln, dial: func(context.Context, string) (net.Conn, error) { return a, nil },
		readsOpening: func(string) bool { return false }}
	c, err := hooked.Dial(raft.ServerAddress("anywhere:1"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if c != a {
		t.Errorf("Dial hook's connection came back as %T", c)
	}
	c.Close()
}

// A dial refused because nothing listens yet (a server restarting) is made again,
// for up to redialWait: raft counts one failed request, not one per attempt, and
// does not back off from that follower long after it is back.
func TestDialWaitsOutAServerRestarting(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nothing := closed.Addr().String()
	closed.Close() // nothing listens there now: connect is refused
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ol := listen(ln, nil, "server-3:7001", nil, nil)
	defer ol.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ol.Accept(); err == nil {
			accepted <- c
		}
	}()
	var dials int
	s := &tcpStream{closed: make(chan struct{}), dial: func(ctx context.Context, _ string) (net.Conn, error) {
		dials++ // raft dials a peer from one goroutine at a time; so does this test
		to := nothing
		if dials > 3 { // the server is up again
			to = ln.Addr().String()
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", to)
	}}
	c, err := s.Dial(raft.ServerAddress("server-3:7001"), 10*time.Second)
	if err != nil {
		t.Fatalf("dial of a server that came up after 3 refused connects: %v", err)
	}
	defer c.Close()
	select {
	case in := <-accepted:
		in.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not accept the connection")
	}
	if dials != 4 {
		t.Errorf("%d connects, want 4", dials)
	}
}
