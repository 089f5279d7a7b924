package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection, the first wrapped.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.FailNow()
	}
	c, ok := Wrap(nc).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) returned the connection unwrapped; a TCP connection on Linux should be wrapped", nc)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

func TestReadWriteBothWays(t *testing.T) {
	c, peer := pair(t)
	if _, err := peer.Write([]byte("grant")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "grant" {
		t.Fatalf("read %q, %v; want \"grant\", nil", got, err)
	}
	if n, err := c.Write([]byte("release")); n != 7 || err != nil {
		t.Fatalf("Write = %d, %v; want 7, nil", n, err)
	}
	if _, err := io.ReadFull(peer, got[:5]); err != nil || string(got) != "relea" {
		t.Fatalf("peer read %q, %v", got, err)
	}
}

// A write larger than the socket buffers fills them, waits in the poller for the
// reader, and still writes every byte in order.
func TestWriteWaitsForRoom(t *testing.T) {
	c, peer := pair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Write of 4 MiB: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the peer read different bytes from those written")
	}
}

func TestEOFWhenPeerCloses(t *testing.T) {
	c, peer := pair(t)
	peer.Close()
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want 0, io.EOF", n, err)
	}
}

// Deadlines set on the connection bound a raw read as they bound an ordinary one,
// and the error is a timeout, as callers test for.
func TestReadDeadline(t *testing.T) {
	c, _ := pair(t)
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 8))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline = %v; want a net.Error timeout wrapping os.ErrDeadlineExceeded", err)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "read" {
		t.Fatalf("Read error %v is not a *net.OpError for \"read\"", err)
	}
}

// Closing the connection ends a read that waits in the poller.
func TestCloseEndsRead(t *testing.T) {
	c, _ := pair(t)
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 8)); errc <- err }()
	// The read may not have started waiting yet; either way it must end with
	// net.ErrClosed once the connection is closed.
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a closed connection = %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still waiting 5 s after Close")
	}
}

// A connection without a descriptor is returned as it is.
func TestWrapLeavesOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(net.Pipe end) = %T; want the same connection", got)
	}
}

// The hot path allocates nothing: a read and a write per message, like a handoff.
func TestNoAllocations(t *testing.T) {
	c, peer := pair(t)
	msg, buf := []byte("x"), make([]byte, 1)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Read(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per read and write; want 0", allocs)
	}
}

// WriteNow takes what the socket takes and returns without waiting: a write larger
// than the socket buffers comes back short, with no error, and the bytes it reports
// are the ones the peer reads.
func TestWriteNowStopsWhenFull(t *testing.T) {
	c, peer := pair(t)
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB, more than the buffers hold
	var n int
	var err error
	if cerr := c.rc.Write(func(fd uintptr) bool { n, err = WriteNow(fd, want); return true }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil || n == 0 || n >= len(want) {
		t.Fatalf("WriteNow of 4 MiB to an unread socket = %d, %v; want a short write and no error", n, err)
	}
	c.Close()
	got, rerr := io.ReadAll(peer)
	if rerr != nil || !bytes.Equal(got, want[:n]) {
		t.Fatalf("peer read %d bytes (%v); want the %d WriteNow reported, in order", len(got), rerr, n)
	}
}
