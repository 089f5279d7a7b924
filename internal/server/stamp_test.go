package server

import (
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// A stalled poster: the goroutine that serves a batch read its own frame a while
// before, or stalled (for room, behind an fsync) after reading it, and the batch
// holds a keepalive that arrived later. The keepalive's session deadline counts from
// its own arrival: the server never expires a session earlier than its client,
// which trusts it until the keepalive left plus the TTL, expects.
func TestKeepaliveDeadlineCountsFromItsOwnArrival(t *testing.T) {
	rs := openRawSession(t, nil)
	s, r, id := rs.s, rs.r, rs.id
	var f wire.Frame
	s.coreMu.Lock() // the poster stalls: every frame read now waits in the queue
	stalledAt := s.lastNow
	for time.Since(stalledAt) < 20*time.Millisecond {
		time.Sleep(time.Millisecond) // the stall lasts: time passes, nothing to wait for
	}
	sentAt := time.Now()
	rs.send(t, wire.Frame{Op: wire.OpKeepalive, Seq: 1})
	for deadline := time.Now().Add(5 * time.Second); !s.pending(); {
		if time.Now().After(deadline) {
			s.coreMu.Unlock()
			t.Fatal("the keepalive never reached the queue")
		}
		time.Sleep(time.Millisecond)
	}
	s.serveQueue(stalledAt) // served with the poster's earlier reading of the clock
	got := s.core.st.Sessions.Get(id).Deadline
	ttl := s.core.st.Sessions.Get(id).TTL
	s.coreMu.Unlock()

	if want := sentAt.Add(ttl); got.Before(want) {
		t.Fatalf("session deadline %s before its keepalive was even sent + TTL (%s): stamped with the poster's clock",
			want.Sub(got), ttl)
	}
	if err := r.Read(&f); err != nil || f.Op != wire.OpKeepaliveAck {
		t.Fatalf("keepalive answer: %v %s", err, f.Op)
	}
}
