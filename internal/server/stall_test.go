package server

import (
	"testing"
	"time"
)

// A server that did not run for longer than its sessions' TTL (a frozen process,
// a stalled host) could not read its clients' keepalives meanwhile: they wait in
// its sockets. When it runs again it gives every session a full TTL from then
// rather than expiring them on deadlines it could not renew; a client that really
// is gone is expired a TTL later.
func TestAServerThatStalledGivesItsSessionsATTLBeforeExpiringAny(t *testing.T) {
	const ttl = 400 * time.Millisecond
	rs := openRawSession(t, func(cfg *Config) { cfg.SessionTTL = ttl })
	s, id := rs.s, rs.id

	// The core stalls past the session's deadline and a full TTL more; the expiry
	// timer fires meanwhile, and its check waits in the queue, as after a SIGSTOP.
	s.coreMu.Lock()
	deadline := s.core.st.Sessions.Get(id).Deadline
	for time.Now().Before(deadline.Add(ttl)) {
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
	if after.Before(woke.Add(ttl - 50*time.Millisecond)) {
		t.Fatalf("after the stall the session's deadline is %s from then, want a full TTL (%s)", after.Sub(woke), ttl)
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
