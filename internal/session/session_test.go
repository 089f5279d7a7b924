package session

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// expiredAt ends and returns, in order, the sessions Expired reports at ms.
func expiredAt(tb *Table[struct{}], ms int) []ID {
	var out []ID
	tb.Expired(at(ms), func(s *Session[struct{}]) {
		out = append(out, s.ID)
		tb.End(s)
	})
	return out
}

// Sessions expire in deadline order, once, and only when their deadline is at or
// before the time given; a keepalive moves a deadline forward and never back; a
// session that ended is never reported; the next check is never later than the
// earliest real deadline.
func TestSessionsExpireInDeadlineOrderOnlyOnce(t *testing.T) {
	ttl := 100 * time.Millisecond
	steps := []struct {
		name string
		do   func(tb *Table[struct{}])
		at   int  // ms: the look at the table
		want []ID // expired then, in order
	}{
		{"open three", func(tb *Table[struct{}]) {
			tb.Open(1, "a", "boot", ttl, at(0))
			tb.Open(2, "b", "boot", ttl, at(10))
			tb.Open(3, "c", "boot", 2*ttl, at(0))
		}, 50, nil},
		{"keepalive moves 1 to 180", func(tb *Table[struct{}]) { tb.Touch(tb.Get(1), at(80)) }, 109, nil},
		{"2 due at 110", nil, 110, []ID{2}},
		{"an older keepalive does not move 1 back", func(tb *Table[struct{}]) { tb.Touch(tb.Get(1), at(20)) }, 179, nil},
		{"1 at 180, then 3 at 200", nil, 200, []ID{1, 3}},
		{"nothing left", nil, 1000, nil},
	}
	tb := NewTable[struct{}]()
	for _, st := range steps {
		if st.do != nil {
			st.do(tb)
		}
		if next, ok := tb.NextCheck(); ok {
			tb.Each(func(s *Session[struct{}]) {
				if next.After(s.Deadline) {
					t.Errorf("%s: next check %s after session %d's deadline %s", st.name, next.Sub(t0), s.ID, s.Deadline.Sub(t0))
				}
			})
		}
		got := expiredAt(tb, st.at)
		if len(got) != len(st.want) {
			t.Fatalf("%s: expired %v at %dms, want %v", st.name, got, st.at, st.want)
		}
		for i := range got {
			if got[i] != st.want[i] {
				t.Fatalf("%s: expired %v at %dms, want %v", st.name, got, st.at, st.want)
			}
		}
	}
	if tb.Len() != 0 {
		t.Fatalf("%d sessions left, want 0", tb.Len())
	}
}

// Grace gives every session a full TTL from the moment a server takes over, and
// never shortens one.
func TestGraceGivesEverySessionAFullTTL(t *testing.T) {
	tb := NewTable[struct{}]()
	short := tb.Open(1, "a", "boot", 100*time.Millisecond, at(0))
	long := tb.Open(2, "b", "boot", time.Second, at(0))
	tb.Grace(at(500))
	if want := at(600); !short.Deadline.Equal(want) {
		t.Errorf("short session's deadline %s after grace at 500ms, want 600ms", short.Deadline.Sub(t0))
	}
	if want := at(1500); !long.Deadline.Equal(want) {
		t.Errorf("long session's deadline %s after grace at 500ms, want 1500ms", long.Deadline.Sub(t0))
	}
	if got := expiredAt(tb, 599); len(got) != 0 {
		t.Errorf("expired %v before the grace ended", got)
	}
	if got := expiredAt(tb, 600); len(got) != 1 || got[0] != 1 {
		t.Errorf("expired %v at 600ms, want [1]", got)
	}
}

// Spare keeps alive the sessions a stalled server could not hear from: those
// whose TTL is under four times the stall, once until their next Touch.
func TestSpareKeepsAliveOnceWhatAStallCouldNotHear(t *testing.T) {
	tb := NewTable[struct{}]()
	short := tb.Open(1, "a", "boot", 400*time.Millisecond, at(0))
	long := tb.Open(2, "b", "boot", 4*time.Second, at(0))
	if n := tb.Spare(at(600), 200*time.Millisecond); n != 1 {
		t.Fatalf("a 200ms stall spared %d sessions, want 1 (the 400ms one; the 4s one's client lost nothing)", n)
	}
	if want := at(1000); !short.Deadline.Equal(want) {
		t.Errorf("spared session's deadline %s, want 1000ms", short.Deadline.Sub(t0))
	}
	if want := at(4000); !long.Deadline.Equal(want) {
		t.Errorf("unspared session's deadline %s, want 4000ms (unchanged)", long.Deadline.Sub(t0))
	}
	// Its client is gone: another stall does not spare it again.
	if n := tb.Spare(at(1200), 200*time.Millisecond); n != 0 {
		t.Errorf("a second stall spared %d sessions, want 0: spared once until a keepalive", n)
	}
	if got := expiredAt(tb, 1000); len(got) != 1 || got[0] != 1 {
		t.Errorf("expired %v at 1000ms, want [1]", got)
	}
	// A keepalive makes a session sparable again.
	tb.Touch(long, at(1000))
	if n := tb.Spare(at(3000), 2*time.Second); n != 1 || !long.Deadline.Equal(at(7000)) {
		t.Errorf("after a keepalive a 2s stall spared %d sessions, deadline %s; want 1 and 7000ms", n, long.Deadline.Sub(t0))
	}
}

// An ended session leaves the table and is never reported again, even with its
// entry still in the expiry order.
func TestEndedSessionIsNeverReported(t *testing.T) {
	tb := NewTable[struct{}]()
	s := tb.Open(1, "a", "boot", 100*time.Millisecond, at(0))
	tb.End(s)
	tb.End(s) // twice is harmless
	if tb.Get(1) != nil || !s.Ended {
		t.Fatal("ended session still in the table")
	}
	if got := expiredAt(tb, 1000); len(got) != 0 {
		t.Fatalf("expired %v, want none: it had ended", got)
	}
}

// A table whose sessions end without ever being expired (a replica's) keeps its
// expiry order the size of its live sessions, and still expires them right.
func TestEndedSessionsDoNotPileUp(t *testing.T) {
	tb := NewTable[struct{}]()
	for i := range 10000 {
		s := tb.Open(ID(i+1), "n", "b", 100*time.Millisecond, at(i))
		if i%100 != 0 {
			tb.End(s)
		}
	}
	if n := len(tb.expiry); n > 2*tb.Len()+64 {
		t.Fatalf("%d entries in the expiry order for %d live sessions", n, tb.Len())
	}
	if got := expiredAt(tb, 100000); len(got) != 100 {
		t.Fatalf("expired %d sessions, want the 100 live ones", len(got))
	}
}
