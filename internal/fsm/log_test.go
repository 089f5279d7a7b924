package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/replica"
)

// The state machine replicated for real: three servers over raft's TCP transport on
// 127.0.0.1, one entry per batch of commands proposed to the leader. Half-way the
// leader is closed and a new one takes over. At the end every live server holds, by
// bytes, the state that applying the same commands in one process gives.
func TestThreeReplicasReachTheSameState(t *testing.T) {
	const n = 3
	logs, nodes := openReplicas(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader := func() *replica.Node { t.Helper(); return leaderOf(ctx, t, nodes) }

	cmds := commands(7, 1200)
	var entry []byte
	for i := range cmds {
		entry = AppendBatch(entry, &cmds[i])
		if i%7 != 6 && i != len(cmds)-1 {
			continue // batches of seven commands
		}
		if i == 601 { // half-way, between batches: the leader goes
			ld := leader()
			for j, nd := range nodes {
				if nd == ld {
					ld.Close()
					nodes[j] = nil
				}
			}
		}
		res, err := leader().Apply(ctx, entry)
		if err != nil {
			t.Fatalf("batch ending at command %d: %v", i, err)
		}
		if err, ok := res.(error); ok {
			t.Fatalf("batch ending at command %d refused: %v", i, err)
		}
		entry = nil
	}

	want := New[struct{}](8)
	for i := range cmds {
		if err := want.Apply(&cmds[i]); err != nil {
			t.Fatal(err)
		}
		want.Reset()
	}
	wantSnap, _ := want.Snapshot()
	if err := leader().Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	live := 0
	for i, nd := range nodes {
		if nd == nil {
			continue
		}
		live++
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := logs[i].Save()
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got, wantSnap) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica r%d's state differs from the commands applied in one process:\n%.400s\n---\n%.400s", i, got, wantSnap)
			}
			time.Sleep(10 * time.Millisecond) // a follower applies a moment after the leader
		}
	}
	if live != n-1 {
		t.Fatalf("%d replicas open, want %d", live, n-1)
	}
}

// openReplicas starts n replicas of a log over raft's TCP transport on 127.0.0.1
// and bootstraps them as one cluster; they are closed when the test ends (a test
// that closes one sets its place to nil).
func openReplicas(t *testing.T, n int) ([]*Log, []*replica.Node) {
	t.Helper()
	logs := make([]*Log, n)
	nodes := make([]*replica.Node, n)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range n {
		cfg := replica.Config{ID: fmt.Sprintf("r%d", i), BindAddr: "127.0.0.1:0",
			HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
			LeaderLeaseTimeout: 400 * time.Millisecond, CommitTimeout: 5 * time.Millisecond, Logger: quiet}
		logs[i] = NewLog(8)
		nd, err := replica.Open(cfg, logs[i])
		if err != nil {
			t.Fatalf("open r%d: %v", i, err)
		}
		nodes[i] = nd
		t.Cleanup(func() {
			if nodes[i] != nil {
				nodes[i].Close()
			}
		})
	}
	var servers []replica.Server
	for _, nd := range nodes {
		servers = append(servers, replica.Server{ID: nd.ID(), Addr: nd.Addr(), Voter: true})
	}
	for _, nd := range nodes {
		if err := nd.Bootstrap(servers); err != nil {
			t.Fatal(err)
		}
	}
	return logs, nodes
}

// leaderOf waits until an open node leads (a follower may still name a closed one).
func leaderOf(ctx context.Context, t *testing.T, nodes []*replica.Node) *replica.Node {
	t.Helper()
	for ctx.Err() == nil {
		for _, nd := range nodes {
			if nd != nil && nd.IsLeader() {
				return nd
			}
		}
		time.Sleep(5 * time.Millisecond) // polling the nodes' state, with ctx's deadline
	}
	t.Fatal("no leader among the open nodes")
	return nil
}

// A batch opens with the term its leader decided it in (OpTerm); the log applies
// it only if raft appended it in that term. Entries without a term (logs written
// before OpTerm) apply in any.
func TestABatchAppliesOnlyInTheTermItWasDecidedIn(t *testing.T) {
	batch := func(term uint64, token string) []byte {
		var entry []byte
		if term > 0 {
			entry = AppendBatch(entry, &Command{Op: OpTerm, Seq: term})
		}
		return AppendBatch(entry, &Command{Op: OpImport, Token: token, Fence: 7, Time: t0})
	}
	cases := []struct {
		name      string
		entryTerm uint64 // the term raft appended it in
		decided   uint64 // 0: no OpTerm
		applied   bool
	}{
		{"decided and appended in term 3", 3, 3, true},
		{"decided in term 3, appended in term 5", 5, 3, false},
		{"decided in term 5, appended in term 3", 3, 5, false},
		{"no term: a log written before OpTerm", 5, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLog(8)
			out := l.Apply([]replica.Entry{{Index: 1, Term: tc.entryTerm, Cmd: batch(tc.decided, "x")}})
			err, _ := out[0].(error)
			if tc.applied != (err == nil) {
				t.Fatalf("answer %v; want applied=%v", out[0], tc.applied)
			}
			if !tc.applied && !errors.Is(err, ErrStaleBatch) {
				t.Fatalf("refused with %v, want ErrStaleBatch", err)
			}
			if held := l.st.Tokens.Get("x") != nil; held != tc.applied {
				t.Fatalf("token x in the state: %v, want %v", held, tc.applied)
			}
		})
	}
}

// The same over raft: a batch decided under one leader and appended after the
// leadership moved (the leader lost it and won it again, say) is refused by the
// proposer's log and applied on no replica; the new term's batch applies everywhere.
func TestABatchFromAnEarlierTermIsAppliedNowhere(t *testing.T) {
	logs, nodes := openReplicas(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := leaderOf(ctx, t, nodes)
	decided := first.Term()
	if err := first.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	second := leaderOf(ctx, t, nodes)
	for second.Term() == decided { // the old leader, until it hears it lost
		time.Sleep(5 * time.Millisecond) // polling, with ctx's deadline (leaderOf)
		second = leaderOf(ctx, t, nodes)
	}
	stale := AppendBatch(AppendBatch(nil, &Command{Op: OpTerm, Seq: decided}), &Command{Op: OpImport, Token: "stale", Fence: 9, Time: t0})
	res, err := second.Apply(ctx, stale)
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := res.(error); !errors.Is(err, ErrStaleBatch) {
		t.Fatalf("a batch decided in term %d, appended in %d, answered %v; want ErrStaleBatch", decided, second.Term(), res)
	}
	fresh := AppendBatch(AppendBatch(nil, &Command{Op: OpTerm, Seq: second.Term()}), &Command{Op: OpImport, Token: "fresh", Fence: 9, Time: t0})
	if res, err := second.Apply(ctx, fresh); err != nil || res != nil {
		t.Fatalf("a batch of the current term: %v, %v; want it applied", res, err)
	}
	for i, l := range logs { // the fresh batch, after the stale one, reaches every replica
		for {
			l.mu.Lock()
			fresh := l.st.Tokens.Get("fresh") != nil
			stale := l.st.Tokens.Get("stale") != nil
			l.mu.Unlock()
			if stale {
				t.Fatalf("replica r%d applied the stale batch", i)
			}
			if fresh {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("replica r%d never applied the current term's batch", i)
			}
			time.Sleep(5 * time.Millisecond) // a follower applies a moment after the leader
		}
	}
}

// Entries are framed: a batch decodes to its commands in order, and a torn one is
// refused whole.
func TestBatchFraming(t *testing.T) {
	cmds := commands(3, 20)
	var entry []byte
	for i := range cmds {
		entry = AppendBatch(entry, &cmds[i])
	}
	var got []Command
	if err := EachInBatch(entry, func(c *Command) error { got = append(got, *c); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(cmds) {
		t.Fatalf("decoded %d commands, want %d", len(got), len(cmds))
	}
	for i := range got {
		if got[i].Op != cmds[i].Op || got[i].Seq != cmds[i].Seq || !got[i].Time.Equal(cmds[i].Time) {
			t.Fatalf("command %d: %+v, want %+v", i, got[i], cmds[i])
		}
	}
	if err := EachInBatch(entry[:len(entry)-1], func(*Command) error { return nil }); err == nil {
		t.Fatal("a torn batch decoded without error")
	}
}

// An entry written by a newer version (an op or a command version this build does
// not know) stops the log: skipping it would part this server's state from that of
// the servers that read it. Nothing after it is applied either.
func TestANewerEntryStopsTheLog(t *testing.T) {
	imp := func(token string) []byte {
		return AppendBatch(nil, &Command{Op: OpImport, Token: token, Fence: 3, Time: t0})
	}
	newerOp := AppendBatch(nil, &Command{Op: lastOp + 1})
	newerVersion := imp("newer")
	newerVersion[4]++ // the command's version byte, after the frame's length
	for _, tc := range []struct {
		name  string
		newer []byte
	}{{"an op it does not know", newerOp}, {"a command version above its own", newerVersion}} {
		l := NewLog(8)
		out := l.Apply([]replica.Entry{{Index: 1, Cmd: imp("before")}, {Index: 2, Cmd: tc.newer}, {Index: 3, Cmd: imp("after")}})
		if out[0] != nil {
			t.Fatalf("%s: the entry before answered %v", tc.name, out[0])
		}
		for i := 1; i < 3; i++ {
			if err, _ := out[i].(error); !errors.Is(err, ErrNewerLog) {
				t.Errorf("%s: entry %d answered %v, want ErrNewerLog", tc.name, i+1, out[i])
			}
		}
		if !errors.Is(l.Stopped(), ErrNewerLog) {
			t.Errorf("%s: Stopped() = %v, want ErrNewerLog", tc.name, l.Stopped())
		}
		if l.st.Tokens.Get("before") == nil || l.st.Tokens.Get("after") != nil {
			t.Errorf("%s: before applied %v, after applied %v; want only the entry before", tc.name,
				l.st.Tokens.Get("before") != nil, l.st.Tokens.Get("after") != nil)
		}
	}
	// A torn entry of this version is refused alike everywhere, and the log goes on.
	l := NewLog(8)
	torn := imp("torn")
	out := l.Apply([]replica.Entry{{Index: 1, Cmd: torn[:len(torn)-1]}, {Index: 2, Cmd: imp("next")}})
	if out[0] == nil || out[1] != nil || l.Stopped() != nil || l.st.Tokens.Get("next") == nil {
		t.Errorf("a torn entry: answers %v, stopped %v; want it refused and the next applied", out, l.Stopped())
	}
}

// The cluster's log version, once recorded, never goes back, and a snapshot keeps
// it: a leader elected later, or restored from a snapshot, stamps its batches too.
func TestLogVersionNeverGoesBack(t *testing.T) {
	l := NewLog(8)
	for i, v := range []uint64{2, 1} {
		l.Apply([]replica.Entry{{Index: uint64(i + 1), Cmd: AppendBatch(nil, &Command{Op: OpLogVersion, Seq: v})}})
	}
	if got := l.LogVersion(); got != 2 {
		t.Fatalf("log version %d after recording 2 then 1, want 2", got)
	}
	snap, err := l.Save()
	if err != nil {
		t.Fatal(err)
	}
	restored := NewLog(8)
	if err := restored.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if got := restored.LogVersion(); got != 2 {
		t.Fatalf("log version %d after a snapshot, want 2", got)
	}
}
