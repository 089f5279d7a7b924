package main

import (
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// proxiedConn starts a proxy to a server of the test's own and one connection
// through it: the proxy, both ends, and the server's later connections. All are
// closed when the test ends.
func proxiedConn(t *testing.T) (p *proxy, client, server net.Conn, accepted <-chan net.Conn) {
	t.Helper()
	port, accepted := acceptServer(t)
	p, err := startProxy(func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	if client, err = net.Dial("tcp", p.addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	select {
	case server = <-accepted:
		t.Cleanup(func() { server.Close() })
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy did not connect to the server")
	}
	return p, client, server, accepted
}

// TestProxyReset: a reset partition resets the connections through the proxy at
// both ends, as a middlebox that loses its state does, and holds new ones until
// it heals.
func TestProxyReset(t *testing.T) {
	p, client, server, accepted := proxiedConn(t)
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(server, b); err != nil {
		t.Fatal(err)
	}

	p.cut(reset)
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(b); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s end: read %v, want a reset", name, err)
		}
	}

	// A new connection made during the cut reaches the server, but no byte passes
	// until the cut heals.
	c2, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	var s2 net.Conn
	select {
	case s2 = <-accepted:
		defer s2.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the proxy did not connect to the server")
	}
	if _, err := c2.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	_ = s2.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := s2.Read(b); n != 0 {
		t.Fatal("a byte passed during the cut")
	}
	p.heal()
	_ = s2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s2, b); err != nil || b[0] != 'y' {
		t.Fatalf("after the heal: %q, %v; want the held byte", b, err)
	}
}

// TestProxyPartitionHidesClose: a hold or a drop hides a close as it hides bytes:
// the other end sees its connection closed only at the heal.
func TestProxyPartitionHidesClose(t *testing.T) {
	for _, m := range []proxyMode{hold, drop} {
		t.Run(m.String(), func(t *testing.T) {
			p, client, server, _ := proxiedConn(t)
			p.cut(m)
			client.Close()
			if closedWithin(server, silence) {
				t.Errorf("%s: the close passed during the partition", m)
			}
			p.heal()
			if !closedWithin(server, 5*time.Second) {
				t.Errorf("%s: still open after the heal", m)
			}
		})
	}
}
