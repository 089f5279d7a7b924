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

// Determinism, the property replication rests on: the same operations, with the
// same times and ids, applied to two states give the same effects, in the same
// order, and the same state (no map's order leaks out). A random but seeded mix of every operation, on several tokens.
func TestSameOperationsGiveTheSameState(t *testing.T) {
	run := func(seed uint64) ([]string, string) {
		rng := rand.New(rand.NewPCG(seed, 1))
		st := New[struct{}](8)
		var log []string
		fences := map[string]uint64{}
		now := t0
		ids := []session.ID{1}
		st.Hello("n1", "b0", 0, 1, time.Second, now)
		for i := range 3000 {
			now = now.Add(time.Duration(rng.IntN(5)) * time.Millisecond)
			id := ids[rng.IntN(len(ids))]
			name := fmt.Sprintf("t%d", rng.IntN(3))
			seq := uint64(i + 1)
			switch rng.IntN(10) {
			case 0:
				newID := session.ID(i + 2)
				if s, _ := st.Hello(fmt.Sprintf("n%d", rng.IntN(6)), fmt.Sprintf("b%d", rng.IntN(2)), id, newID, time.Second, now); s.ID == newID {
					ids = append(ids, newID)
				}
			case 1, 2, 3:
				st.Acquire(id, seq, name, now)
			case 4, 5, 6:
				st.Release(id, seq, name, fences[name]-uint64(rng.IntN(2)), wire.Record{Counter: seq}, rng.IntN(2) == 0, now)
			case 7:
				st.Cancel(id, seq-uint64(rng.IntN(3)), name, now)
			case 8:
				st.EndSession(id, "expired", now)
			case 9:
				st.DropWaiters(id, "member_dead", now)
			}
			for _, e := range st.Effects() {
				if e.Kind == Granted {
					fences[e.Token] = e.Fence
				}
			}
			log = append(log, effects(st))
		}
		var state strings.Builder
		for _, name := range []string{"t0", "t1", "t2"} {
			if tk := st.Tokens.Get(name); tk != nil {
				fmt.Fprintf(&state, "%s fence %d holder %d queue %v rec %+v grants %d releases %d\n",
					name, tk.Fence, tk.Holder, tk.Waiters(), tk.Rec, tk.Grants, tk.Releases)
			}
		}
		fmt.Fprintf(&state, "sessions %d", st.Sessions.Len())
		return log, state.String()
	}
	for seed := range uint64(3) {
		log1, st1 := run(seed)
		log2, st2 := run(seed)
		if !reflect.DeepEqual(log1, log2) || st1 != st2 {
			t.Fatalf("seed %d: two runs of the same operations differ:\n%s\n---\n%s", seed, st1, st2)
		}
		grants := 0
		for _, l := range log1 {
			grants += strings.Count(l, "granted")
		}
		if grants < 30 {
			t.Fatalf("seed %d: only %d grants in 3000 operations; the mix exercises too little", seed, grants)
		}
	}
}
