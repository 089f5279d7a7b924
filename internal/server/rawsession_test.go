package server

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/token"
	"github.com/baton-dev/baton/internal/wire"
)

// rawSession is a server alone on loopback, its configuration changed by mod, and
// a session opened on it over a connection the test speaks the protocol on itself.
type rawSession struct {
	s  *Server
	nc net.Conn
	r  *wire.Reader
	w  *wire.Writer
	id token.SessionID
}

// openLoopbackServer opens a server on loopback, its configuration changed by mod,
// closed at cleanup (or before: Close may be called again).
func openLoopbackServer(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.TokenAddr, cfg.HTTPAddr, cfg.GossipBind, cfg.GossipPort, cfg.LocalGossip = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0, true
	cfg.NodeName = "server"
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openRawSession(t *testing.T, mod func(*Config)) *rawSession {
	t.Helper()
	s := openLoopbackServer(t, mod)
	nc, err := net.Dial("tcp", s.TokenAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rs := &rawSession{s: s, nc: nc, r: wire.NewReader(nc), w: wire.NewWriter(nc)}
	var f wire.Frame
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := rs.r.Read(&f); err != nil || f.Op != wire.OpChallenge {
		t.Fatalf("challenge: %v %s", err, f.Op)
	}
	rs.send(t, wire.Frame{Op: wire.OpHello, Version: wire.Version, Text: "client", BootID: "boot"})
	if err := rs.r.Read(&f); err != nil || f.Op != wire.OpWelcome {
		t.Fatalf("welcome: %v %s", err, f.Op)
	}
	rs.id = token.SessionID(f.Session)
	return rs
}

func (rs *rawSession) send(t *testing.T, f wire.Frame) {
	t.Helper()
	if err := rs.w.Write(&f); err != nil {
		t.Fatal(err)
	}
	if err := rs.w.Flush(); err != nil {
		t.Fatal(err)
	}
}
