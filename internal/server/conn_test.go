package server

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testConn(t *testing.T) (*Server, *conn, net.Conn) {
	t.Helper()
	cfg := DefaultConfig()
	s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// net.Pipe has no buffer and no descriptor: every byte the peer does not read
	// waits in the backlog, and every write goes through the flusher.
	ours, peer := net.Pipe()
	t.Cleanup(func() { ours.Close(); peer.Close() })
	return s, &conn{s: s, nc: ours, quit: make(chan struct{}), space: make(chan struct{}, 1), parkedFD: -1}, peer
}

// Replies a client does not read at once wait in the backlog and reach it in order
// once it reads; a last frame closes the connection only after everything before it.
func TestBacklogDrainsInOrderThenCloses(t *testing.T) {
	s, c, peer := testConn(t)
	var want []byte
	for i := range 50 {
		b := bytes.Repeat([]byte{byte(i)}, 1000)
		want = append(want, b...)
		c.write(b, i == 49)
	}
	if !c.closing.Load() {
		t.Fatal("a write with closeAfter did not mark the connection closing")
	}
	got := make([]byte, 0, len(want))
	buf := make([]byte, 4096)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := peer.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("peer read %d bytes, want the %d written, in order", len(got), len(want))
	}
	select {
	case <-c.quit:
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after its last frame went out")
	}
	s.wg.Wait() // the flusher has ended
}

// A client that lets more than maxBacklog of replies pile up is cut off and counted,
// and the writer never blocks.
func TestSlowConsumerIsCutOff(t *testing.T) {
	s, c, _ := testConn(t)
	chunk := make([]byte, 16<<10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2*maxBacklog/len(chunk) && !c.closing.Load(); i++ {
			c.write(chunk, false)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writes to a client that does not read blocked the writer")
	}
	select {
	case <-c.quit:
	case <-time.After(5 * time.Second):
		t.Fatalf("a client %d KiB behind was not cut off", 2*maxBacklog>>10)
	}
	if n := testutil.ToFloat64(s.metrics.protocolErrors.WithLabelValues("slow_consumer")); n != 1 {
		t.Fatalf("baton_protocol_errors_total{reason=slow_consumer} = %v, want 1", n)
	}
	s.wg.Wait()
}

// A reply that cannot be written because the peer has gone does not make the server
// let go of the connection: the frames the peer sent before it went (a goodbye, a
// cancel, a release) are still to be read and must count, or a session could keep
// a token it gave back until its TTL.
func TestFailedWriteKeepsThePeersLastFrames(t *testing.T) {
	s, c, peer := testConn(t)
	peer.Close()
	c.write([]byte("grant"), false)
	s.wg.Wait() // the flusher has met the closed pipe
	c.wmu.Lock()
	gone := c.peerGone
	c.wmu.Unlock()
	if !gone {
		t.Fatal("a failed write was not noted")
	}
	if c.closing.Load() {
		t.Fatal("a failed write marked the connection closing: the frames read before it would be dropped")
	}
	select {
	case <-c.quit:
		t.Fatal("a failed write closed the connection under its reader")
	default:
	}
	c.write([]byte("more"), false) // dropped, not queued
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.backlog) != 0 || c.flushing {
		t.Fatalf("replies queued for a peer that has gone: backlog %d, flushing %v", len(c.backlog), c.flushing)
	}
}
