// Package testutil starts baton servers, clients and raw protocol peers inside one
// test process, on loopback, with short timings and logs routed to t.Log.
package testutil

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/wire"
)

// Logger returns a logger that writes to t.Log until the test ends.
func Logger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu   sync.Mutex // guards done
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// ServerConfig is a server configuration for tests: loopback, free ports, short TTL.
func ServerConfig() server.Config {
	c := server.DefaultConfig()
	c.TokenAddr, c.HTTPAddr, c.GossipBind, c.GossipPort = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0
	c.NodeName = "server"
	c.SessionTTL = time.Second
	c.HandshakeTimeout = time.Second
	c.LocalGossip = true
	c.AdminToken = "test-admin-token"
	return c
}

// Server is a running test server and its registry.
type Server struct {
	*server.Server
	Reg *prometheus.Registry
	Cfg server.Config
}

// StartServer starts a server with ServerConfig changed by mod, closed at cleanup.
func StartServer(t testing.TB, mod func(*server.Config)) *Server {
	t.Helper()
	cfg := ServerConfig()
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	s, err := server.New(cfg, server.Options{Logger: Logger(t).With("node", cfg.NodeName), Registry: reg})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := s.Open(); err != nil {
		t.Fatalf("server.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &Server{Server: s, Reg: reg, Cfg: cfg}
}

// Dial connects a client named node to s, closed at cleanup.
func Dial(t testing.TB, s *Server, node string) *baton.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := baton.Dial(ctx, baton.Config{Addr: s.TokenAddr(), Node: node, Logger: Logger(t).With("node", node)})
	if err != nil {
		t.Fatalf("dial %s: %v", node, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Eventually polls cond every few milliseconds until it holds or d passes, then
// fails with what was expected. Polling state with a deadline, not sleeping.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// AwaitFence waits up to d for a fence on got and fails unless it is want; what
// names the event for the failure message.
func AwaitFence(t testing.TB, got <-chan uint64, want uint64, d time.Duration, what string) {
	t.Helper()
	select {
	case f := <-got:
		if f != want {
			t.Errorf("%s: fence %d, want %d", what, f, want)
		}
	case <-time.After(d):
		t.Fatalf("%s: no grant within %s", what, d)
	}
}

// Metric returns the value of the sample of name whose labels include want.
func Metric(t testing.TB, reg prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// Raw is a hand-driven token protocol peer: it can freeze, lie and misbehave.
type Raw struct {
	t       testing.TB
	Conn    net.Conn
	R       *wire.Reader
	W       *wire.Writer
	Session uint64
	seq     uint64
}

// DialRaw connects and completes the handshake as node.
func DialRaw(t testing.TB, addr, node string) *Raw {
	t.Helper()
	return DialRawAs(t, addr, node, node+"-boot")
}

// DialUnhandshaken connects and does nothing else: the test speaks first.
func DialUnhandshaken(t testing.TB, addr string) *Raw {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial raw: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &Raw{t: t, Conn: nc, R: wire.NewReader(nc), W: wire.NewWriter(nc)}
}

// DialRawAs connects and completes the handshake as node with boot id boot.
func DialRawAs(t testing.TB, addr, node, boot string) *Raw {
	t.Helper()
	r := DialUnhandshaken(t, addr)
	ch := r.Next()
	if ch.Op != wire.OpChallenge {
		t.Fatalf("expected challenge, got %s", ch.Op)
	}
	r.Send(wire.Frame{Op: wire.OpHello, Version: wire.Version, Text: node, BootID: boot})
	w := r.Next()
	if w.Op != wire.OpWelcome {
		t.Fatalf("expected welcome, got %s %s %s", w.Op, w.Code, w.Text)
	}
	r.Session = w.Session
	return r
}

// Send writes and flushes f.
func (r *Raw) Send(f wire.Frame) {
	r.t.Helper()
	if err := r.W.Write(&f); err != nil {
		r.t.Fatalf("raw send: %v", err)
	}
	if err := r.W.Flush(); err != nil {
		r.t.Fatalf("raw flush: %v", err)
	}
}

// Next reads the next frame, failing the test after 5 s.
func (r *Raw) Next() wire.Frame {
	r.t.Helper()
	f, err := r.TryNext(5 * time.Second)
	if err != nil {
		r.t.Fatalf("raw read: %v", err)
	}
	return f
}

// TryNext reads the next frame within d.
func (r *Raw) TryNext(d time.Duration) (wire.Frame, error) {
	_ = r.Conn.SetReadDeadline(time.Now().Add(d))
	var f wire.Frame
	err := r.R.Read(&f)
	return f, err
}

// Acquire sends an acquire and returns its seq.
func (r *Raw) Acquire(token string) uint64 {
	r.seq++
	r.Send(wire.Frame{Op: wire.OpAcquire, Seq: r.seq, Token: token})
	return r.seq
}

// AwaitGrant reads frames until the grant of token, failing on anything but Queued.
func (r *Raw) AwaitGrant(token string) wire.Frame {
	r.t.Helper()
	for {
		f := r.Next()
		switch {
		case f.Op == wire.OpGrant && f.Token == token:
			return f
		case f.Op == wire.OpQueued, f.Op == wire.OpKeepaliveAck:
		default:
			r.t.Fatalf("waiting for grant of %q, got %s %s %s", token, f.Op, f.Code, f.Text)
		}
	}
}

// Release sends a release and returns the server's answer.
func (r *Raw) Release(token string, fence uint64, rec wire.Record) wire.Frame {
	r.seq++
	r.Send(wire.Frame{Op: wire.OpRelease, Seq: r.seq, Token: token, Fence: fence, Rec: rec})
	for {
		f := r.Next()
		if f.Op == wire.OpRevoked || f.Op == wire.OpKeepaliveAck {
			continue
		}
		return f
	}
}

// Expect fails unless f has op.
func Expect(t testing.TB, f wire.Frame, op wire.Op) {
	t.Helper()
	if f.Op != op {
		t.Fatalf("expected %s, got %s (code %s: %s)", op, f.Op, f.Code, f.Text)
	}
}

// Describe names a frame for messages.
func Describe(f wire.Frame) string {
	return fmt.Sprintf("%s seq=%d token=%q fence=%d", f.Op, f.Seq, f.Token, f.Fence)
}
