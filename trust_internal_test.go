package baton

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/server"
)

// A freeze past the deadline: the process stops (SIGSTOP, a paused VM) while it
// holds a lease, and resumes after its trust deadline. The first Err after it is
// non-nil and Done is closed, before the trust timer's goroutine has run: the clock
// decides, not the timer. Here Client.mu is held through the deadline, which keeps
// every timer and reader of the client from acting, as a freeze does.
func TestLeaseIsNotTrustedPastItsDeadlineBeforeAnyTimerRuns(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.TokenAddr, cfg.HTTPAddr, cfg.GossipBind, cfg.GossipPort, cfg.LocalGossip = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0, true
	cfg.NodeName = "server"
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(cfg, server.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, Config{Addr: srv.TokenAddr(), Node: "frozen", TTL: 200 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	early := l.Done() // taken before the freeze: closes when the timer runs
	if err := l.Err(); err != nil {
		t.Fatalf("fresh lease: %v", err)
	}

	c.mu.Lock() // the freeze
	deadline := c.st.m.deadline
	for time.Now().Before(deadline) {
		time.Sleep(time.Until(deadline)) // waits for the clock to pass the deadline, the event itself
	}
	err = l.Err()
	var doneClosed bool
	select {
	case <-l.Done():
		doneClosed = true
	default:
	}
	c.mu.Unlock() // the thaw

	if !errors.Is(err, ErrSessionExpired) {
		t.Errorf("Err %s past the trust deadline, before any timer ran: %v, want ErrSessionExpired", time.Since(deadline), err)
	}
	if !doneClosed {
		t.Error("Done open past the trust deadline, before any timer ran")
	}
	select {
	case <-early:
	case <-time.After(5 * time.Second):
		t.Error("a Done taken before the freeze never closed after it")
	}
}
