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

// A server that did not run for longer than its sessions' TTL (a frozen process,
// a stalled host) could not read its clients' keepalives meanwhile: they wait in
// its sockets. When it runs again it gives every session a full TTL from then
// rather than expiring them on deadlines it could not renew; a client that really
// is gone is expired a TTL later.
func TestAServerThatStalledGivesItsSessionsATTLBeforeExpiringAny(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TokenAddr, cfg.HTTPAddr, cfg.GossipBind, cfg.GossipPort, cfg.LocalGossip = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0, true
	cfg.NodeName = "server"
	cfg.SessionTTL = 400 * time.Millisecond
	s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	nc, err := net.Dial("tcp", s.TokenAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r, w := wire.NewReader(nc), wire.NewWriter(nc)
	var f wire.Frame
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := r.Read(&f); err != nil || f.Op != wire.OpChallenge {
		t.Fatalf("challenge: %v %s", err, f.Op)
	}
	if err := w.Write(&wire.Frame{Op: wire.OpHello, Version: wire.Version, Text: "client", BootID: "boot"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.Read(&f); err != nil || f.Op != wire.OpWelcome {
		t.Fatalf("welcome: %v %s", err, f.Op)
	}
	id := token.SessionID(f.Session)

	// The core stalls past the session's deadline and a full TTL more; the expiry
	// timer fires meanwhile, and its check waits in the queue, as after a SIGSTOP.
	s.coreMu.Lock()
	deadline := s.core.st.Sessions.Get(id).Deadline
	for time.Now().Before(deadline.Add(cfg.SessionTTL)) {
		time.Sleep(10 * time.Millisecond) // the stall itself: time passing is the fault
	}
	for limit := time.Now().Add(5 * time.Second); !s.pending(); {
		if time.Now().After(limit) {
			s.coreMu.Unlock()
			t.Fatal("the expiry check never reached the queue")
		}
		time.Sleep(time.Millisecond) // polling, with a deadline
	}
	s.serveQueue(time.Now())
	ss := s.core.st.Sessions.Get(id)
	var after time.Time
	if ss != nil {
		after = ss.Deadline
	}
	woke := time.Now()
	s.coreMu.Unlock()
	if ss == nil {
		t.Fatalf("the session expired as the server ran again, %s past a deadline it could not renew while stalled",
			woke.Sub(deadline).Round(time.Millisecond))
	}
	if after.Before(woke.Add(cfg.SessionTTL - 50*time.Millisecond)) {
		t.Fatalf("after the stall the session's deadline is %s from then, want a full TTL (%s)", after.Sub(woke), cfg.SessionTTL)
	}

	// Its client sends nothing: it is gone, and the next check expires it.
	for limit := time.Now().Add(5 * time.Second); ; {
		s.coreMu.Lock()
		gone := s.core.st.Sessions.Get(id) == nil
		s.coreMu.Unlock()
		if gone {
			break
		}
		if time.Now().After(limit) {
			t.Fatal("the silent session did not expire within 5 s of the grace")
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
}
