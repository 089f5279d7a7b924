package ration

import (
	"testing"
	"time"
)

// A line a peer can cause at will is written once, then once a period with the
// count held back; each kind has its own ration.
func TestALineIsWrittenOnceThenOnceAPeriod(t *testing.T) {
	e := Lines{Every: time.Minute}
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		kind string
		at   time.Duration
		ok   bool
		held int
	}{
		{"raft_auth", 0, true, 0},
		{"raft_auth", time.Second, false, 0},
		{"raft_busy", time.Second, true, 0}, // another kind has its own ration
		{"raft_auth", 30 * time.Second, false, 0},
		{"raft_auth", time.Minute, true, 2},
		{"raft_auth", time.Minute + time.Second, false, 0},
	}
	for i, st := range steps {
		held, _, ok := e.Admit(st.kind, t0.Add(st.at))
		if ok != st.ok || held != st.held {
			t.Errorf("step %d (%s at %s): admitted %v with %d held back, want %v with %d", i, st.kind, st.at, ok, held, st.ok, st.held)
		}
	}
}
