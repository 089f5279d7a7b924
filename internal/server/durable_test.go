package server

import (
	"testing"
	"time"
)

// Rule 3 (../shared/DESIGN.md, "Replication"): a keepalive is acknowledged only
// while a quorum has confirmed the leader within its lease, or after a fresh check.
func TestKeepaliveAckNeedsALeaseOrACheck(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	lease := 250 * time.Millisecond
	for _, tc := range []struct {
		name      string
		keepalive bool
		proof     time.Time
		now       time.Time
		want      bool
	}{
		{"no keepalive in the batch: nothing to prove", false, t0, t0.Add(time.Hour), false},
		{"confirmed a moment ago", true, t0, t0.Add(time.Millisecond), false},
		{"confirmed just under a lease ago", true, t0, t0.Add(lease - time.Nanosecond), false},
		{"confirmed a lease ago: check", true, t0, t0.Add(lease), true},
		{"a paused leader wakes long after its last quorum contact: check", true, t0, t0.Add(time.Minute), true},
		{"never confirmed: check", true, time.Time{}, t0, true},
	} {
		if got := mustVerify(tc.keepalive, tc.proof, tc.now, lease); got != tc.want {
			t.Errorf("%s: mustVerify = %v, want %v", tc.name, got, tc.want)
		}
	}
}
