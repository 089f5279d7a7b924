package fsm

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/session"
	"github.com/baton-dev/baton/internal/wire"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// effects renders what followed from the operations so far, one line each, and
// forgets them.
func effects(st *State[struct{}]) string {
	var b strings.Builder
	for _, e := range st.Effects() {
		switch e.Kind {
		case Granted:
			fmt.Fprintf(&b, "granted s%d seq%d %s f%d rec%d\n", e.Session, e.Seq, e.Token, e.Fence, e.Rec.Counter)
		case Queued:
			fmt.Fprintf(&b, "queued s%d seq%d %s pos%d\n", e.Session, e.Seq, e.Token, e.Pos)
		case AcquireRefused:
			fmt.Fprintf(&b, "acquire refused s%d seq%d: %v\n", e.Session, e.Seq, e.Err)
		case Released:
			fmt.Fprintf(&b, "released s%d seq%d %s f%d requeue=%v\n", e.Session, e.Seq, e.Token, e.Fence, e.Requeue)
		case ReleasedBefore:
			fmt.Fprintf(&b, "released before s%d seq%d f%d\n", e.Session, e.Seq, e.Fence)
		case ReleaseRefused:
			fmt.Fprintf(&b, "refused s%d seq%d f%d: %s\n", e.Session, e.Seq, e.Fence, e.Reason)
		case Reclaimed:
			fmt.Fprintf(&b, "reclaimed s%d %s f%d %s revoke=%v\n", e.Session, e.Token, e.Fence, e.Reason, e.Revoke)
		case Cancelled:
			fmt.Fprintf(&b, "cancelled s%d seq%d %s %s\n", e.Session, e.Seq, e.Token, e.Reason)
		case SessionOpened:
			fmt.Fprintf(&b, "opened s%d %s\n", e.Session, e.Node)
		case SessionEnded:
			fmt.Fprintf(&b, "ended s%d %s\n", e.Session, e.Reason)
		}
	}
	st.Reset()
	return strings.TrimSpace(b.String())
}

// Each case drives a state through operations and compares what followed, line by
// line, with what the server must say.
func TestOperationsAndTheirEffects(t *testing.T) {
	type step struct {
		do   func(st *State[struct{}])
		want string
	}
	ttl := time.Second
	open := func(id session.ID, node string) func(st *State[struct{}]) {
		return func(st *State[struct{}]) { st.Hello(node, node+"-boot", 0, id, ttl, t0) }
	}
	two := []step{
		{open(1, "a"), "opened s1 a"},
		{open(2, "b"), "opened s2 b"},
		{func(st *State[struct{}]) { st.Acquire(1, 10, "x", t0) }, "granted s1 seq10 x f1 rec0"},
		{func(st *State[struct{}]) { st.Acquire(2, 20, "x", t0) }, "queued s2 seq20 x pos1"},
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"release hands over; a duplicate acquire is refused", append(two[:4:4],
			step{func(st *State[struct{}]) { st.Acquire(2, 21, "x", t0) }, "acquire refused s2 seq21: token: session already holds or waits for this token"},
			step{func(st *State[struct{}]) { st.Release(1, 11, "x", 1, wire.Record{Counter: 5}, false, t0) },
				"released s1 seq11 x f1 requeue=false\ngranted s2 seq20 x f2 rec5"},
		)},
		{"requeue: release, the next holder, then back of the line", append(two[:4:4],
			step{func(st *State[struct{}]) { st.Release(1, 11, "x", 1, wire.Record{Counter: 1}, true, t0) },
				"released s1 seq11 x f1 requeue=true\ngranted s2 seq20 x f2 rec1\nqueued s1 seq11 x pos1"},
			step{func(st *State[struct{}]) { st.Release(1, 11, "x", 1, wire.Record{Counter: 1}, true, t0) },
				"released before s1 seq11 f1"}, // sent again: not applied, not queued twice
		)},
		{"stale fence, lost lease and an ended session are refused, each for its reason", append(two[:4:4],
			step{func(st *State[struct{}]) { st.EndSession(1, "expired", t0) },
				"reclaimed s1 x f1 expired revoke=true\ngranted s2 seq20 x f2 rec0\nended s1 expired"},
			step{func(st *State[struct{}]) { st.Release(1, 11, "x", 1, wire.Record{Counter: 9}, false, t0) }, "refused s1 seq11 f1: stale_fence"},
			step{func(st *State[struct{}]) { st.Cancel(2, 20, "x", t0) },
				"reclaimed s2 x f2 cancel revoke=false\ncancelled s2 seq20 x"},
			step{func(st *State[struct{}]) { st.Release(1, 12, "x", 2, wire.Record{Counter: 9}, false, t0) }, "refused s1 seq12 f2: session_expired"},
			step{func(st *State[struct{}]) { st.Release(2, 21, "x", 2, wire.Record{Counter: 9}, false, t0) }, "refused s2 seq21 f2: lease_lost"},
			step{func(st *State[struct{}]) { st.Release(2, 22, "nope", 1, wire.Record{}, false, t0) }, "refused s2 seq22 f1: not_held"},
		)},
		{"a forgotten seq whose lease is still held was never applied: judged as new", append(two[:4:4],
			step{func(st *State[struct{}]) {
				for i := range uint64(20) { // 20 later releases push seq 5 out of the memory
					st.Acquire(1, 100+2*i, "y", t0)
					st.Release(1, 101+2*i, "y", i+1, wire.Record{}, false, t0)
				}
				st.Reset()
				st.Release(1, 5, "x", 1, wire.Record{Counter: 3}, false, t0)
			}, "released s1 seq5 x f1 requeue=false\ngranted s2 seq20 x f2 rec3"},
		)},
		{"a node back with another boot id loses its old session", append(two[:4:4],
			step{func(st *State[struct{}]) { st.Hello("a", "a-boot-2", 1, 3, ttl, t0) },
				"reclaimed s1 x f1 reboot revoke=true\ngranted s2 seq20 x f2 rec0\nended s1 reboot\nopened s3 a"},
		)},
		{"resume keeps the session and its hold", append(two[:4:4],
			step{func(st *State[struct{}]) { st.Hello("a", "a-boot", 1, 3, 2*ttl, t0) }, ""},
		)},
		{"a dead member's waits leave the queue, its hold stays", append(two[:4:4],
			step{func(st *State[struct{}]) { st.Acquire(1, 12, "y", t0) }, "granted s1 seq12 y f1 rec0"},
			step{func(st *State[struct{}]) { st.Acquire(2, 22, "y", t0) }, "queued s2 seq22 y pos1"},
			step{func(st *State[struct{}]) { st.DropWaiters(2, "member_dead", t0) }, "cancelled s2 seq20 x member_dead\ncancelled s2 seq22 y member_dead"},
		)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := New[struct{}](10)
			for i, s := range tc.steps {
				s.do(st)
				if got := effects(st); got != s.want {
					t.Fatalf("step %d:\ngot:\n%s\nwant:\n%s", i, got, s.want)
				}
			}
		})
	}
}

// commands makes a seeded random mix of every operation, on several tokens, with
// the ids and times a leader would have put in them.
func commands(seed uint64, n int) []Command {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := []session.ID{1}
	out := []Command{{Op: OpHello, Time: t0, Node: "n1", Boot: "b0", NewSession: 1, TTL: time.Second}}
	fence := map[string]uint64{} // roughly the current fences: most releases then hit
	now := t0
	for i := range n {
		now = now.Add(time.Duration(rng.IntN(5)) * time.Millisecond)
		c := Command{Time: now, Session: ids[rng.IntN(len(ids))], Seq: uint64(i + 2), Token: fmt.Sprintf("t%d", rng.IntN(3))}
		switch rng.IntN(10) {
		case 0:
			c.Op, c.Node, c.Boot, c.NewSession, c.TTL = OpHello, fmt.Sprintf("n%d", rng.IntN(6)), fmt.Sprintf("b%d", rng.IntN(2)), session.ID(i+2), time.Second
			ids = append(ids, c.NewSession)
		case 1, 2, 3:
			c.Op = OpAcquire
		case 4, 5, 6:
			fence[c.Token]++
			c.Op, c.Fence, c.Rec, c.Requeue = OpRelease, fence[c.Token]-uint64(rng.IntN(2)), wire.Record{Counter: c.Seq}, rng.IntN(2) == 0
		case 7:
			c.Op, c.Seq = OpCancel, c.Seq-uint64(rng.IntN(3))
		case 8:
			c.Op, c.Reason = OpEndSession, "expired"
		case 9:
			c.Op, c.Reason = OpDropWaiters, "member_dead"
		}
		out = append(out, c)
	}
	return out
}

// applyAll applies cmds, each encoded and decoded as a log would carry it, and
// returns what followed from each.
func applyAll(t *testing.T, st *State[struct{}], cmds []Command) []string {
	t.Helper()
	var log []string
	for i := range cmds {
		var c Command
		if err := c.Decode(cmds[i].Append(nil)); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
		if err := st.Apply(&c); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
		log = append(log, effects(st))
	}
	return log
}

func describe(st *State[struct{}]) string {
	var b strings.Builder
	for _, name := range []string{"t0", "t1", "t2"} {
		if tk := st.Tokens.Get(name); tk != nil {
			fmt.Fprintf(&b, "%s fence %d holder %d queue %v rec %+v grants %d releases %d\n",
				name, tk.Fence, tk.Holder, tk.Waiters(), tk.Rec, tk.Grants, tk.Releases)
		}
	}
	fmt.Fprintf(&b, "epoch %d sessions %d", st.Epoch, st.Sessions.Len())
	return b.String()
}

// Determinism, the property replication rests on: the same commands applied to two
// states give the same effects, in the same order, and the same state (no map's
// order leaks out); and a state restored from a snapshot taken half-way goes on
// exactly as the one it was taken from.
func TestSameCommandsGiveTheSameStateAcrossASnapshot(t *testing.T) {
	for seed := range uint64(3) {
		cmds := commands(seed, 3000)
		a, b := New[struct{}](8), New[struct{}](8)
		logA, logB := applyAll(t, a, cmds), applyAll(t, b, cmds)
		if !reflect.DeepEqual(logA, logB) || describe(a) != describe(b) {
			t.Fatalf("seed %d: two runs of the same commands differ:\n%s\n---\n%s", seed, describe(a), describe(b))
		}
		if grants := strings.Count(strings.Join(logA, "\n"), "granted"); grants < 30 {
			t.Fatalf("seed %d: only %d grants in 3000 commands; the mix exercises too little", seed, grants)
		}

		half := New[struct{}](8)
		applyAll(t, half, cmds[:1500])
		snap, err := half.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		restored := New[struct{}](8)
		if err := restored.Restore(snap, 8, t0); err != nil {
			t.Fatal(err)
		}
		if again, _ := restored.Snapshot(); string(again) != string(snap) {
			t.Fatalf("seed %d: a restored state snapshots differently", seed)
		}
		logR := applyAll(t, restored, cmds[1500:])
		if !reflect.DeepEqual(logR, logA[1500:]) || describe(restored) != describe(a) {
			t.Fatalf("seed %d: after a snapshot the state went another way:\n%s\n---\n%s", seed, describe(restored), describe(a))
		}
	}
}

// A command survives its encoding whole, and bytes that are not a command are
// refused, never half read.
func TestCommandEncoding(t *testing.T) {
	full := Command{Op: OpRelease, Time: t0.Add(123456789), Session: 1<<63 + 5, NewSession: 9, Seq: 1 << 40, Token: "counter",
		Fence: 77, Rec: wire.Record{Counter: 1 << 50, Waits: 3}, Requeue: true, TTL: 5 * time.Second, Grants: 8, Releases: 9, Node: "worker-1",
		Boot: "b00t", Reason: "expired"}
	var got Command
	if err := got.Decode(full.Append(nil)); err != nil || !reflect.DeepEqual(got, full) {
		t.Fatalf("round trip: %+v (%v), want %+v", got, err, full)
	}
	enc := full.Append(nil)
	for n := range len(enc) {
		if err := got.Decode(enc[:n]); err == nil {
			t.Fatalf("%d of %d bytes decoded without error", n, len(enc))
		}
	}
	if err := got.Decode(append(enc, 0)); err == nil {
		t.Fatal("a trailing byte decoded without error")
	}
	bad := append([]byte{}, enc...)
	bad[0] = 99
	if err := got.Decode(bad); err == nil {
		t.Fatal("an unknown version decoded without error")
	}
	long := Command{Op: OpAcquire, Token: strings.Repeat("x", maxCommandString+1)}
	if err := got.Decode(long.Append(nil)); err == nil {
		t.Fatal("an oversized string decoded without error")
	}
	if err := New[struct{}](1).Apply(&Command{Op: 200}); err == nil {
		t.Fatal("an unknown op applied without error")
	}
}
