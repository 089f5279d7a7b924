package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/fsm"
	"github.com/baton-dev/baton/internal/replica"
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

// A stamped batch (durable.stamp) carries the term the core took over in; raft
// appends it in the term it is in. Both agree, the batch commits; they differ (the
// leadership was lost and won again in between), it is applied nowhere and the
// commit fails, which steps a replicated core down (core.settle).
func TestStampedBatchCommitsOnlyInItsTerm(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := openDurable(t.TempDir(), 8, quiet, replica.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	d.stamp.Store(true)
	put := func(token string) error {
		d.record(&fsm.Command{Op: fsm.OpImport, Token: token, Fence: 3, Time: time.Now()})
		return d.commit()
	}
	d.term.Store(d.node.Term())
	if err := put("now"); err != nil {
		t.Fatalf("a batch of the current term: %v", err)
	}
	d.term.Store(d.node.Term() - 1)
	if err := put("before"); !errors.Is(err, fsm.ErrStaleBatch) {
		t.Fatalf("a batch of an earlier term committed with %v, want ErrStaleBatch", err)
	}
	snap, err := d.log.Save()
	if err != nil {
		t.Fatal(err)
	}
	st := fsm.New[struct{}](8)
	if err := st.Restore(snap, 8, time.Now()); err != nil {
		t.Fatal(err)
	}
	if st.Tokens.Get("now") == nil || st.Tokens.Get("before") != nil {
		t.Fatalf("the log holds token now: %v, token before: %v; want only now",
			st.Tokens.Get("now") != nil, st.Tokens.Get("before") != nil)
	}
}

// A server alone whose log holds an entry of a newer version (a downgrade) does not
// start: it would serve a state without that entry and what followed it.
func TestALogOfANewerVersionIsNotServed(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	d, err := openDurable(dir, 8, quiet, replica.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	newer := fsm.AppendBatch(nil, &fsm.Command{Op: fsm.OpImport, Token: "x", Fence: 1})
	newer[4]++ // the command's version byte: one this build does not read
	res, err := d.node.Apply(context.Background(), newer)
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := res.(error); !errors.Is(err, fsm.ErrNewerLog) {
		t.Fatalf("an entry of a newer version answered %v, want ErrNewerLog", res)
	}
	d.close()
	if d, err := openDurable(dir, 8, quiet, replica.Hooks{}); err == nil {
		d.close()
		t.Fatal("a log with an entry of a newer version opened, want a refusal")
	} else if !strings.Contains(err.Error(), "newer version") {
		t.Fatalf("refused with %v, want it to say a newer version wrote the log", err)
	}
}
