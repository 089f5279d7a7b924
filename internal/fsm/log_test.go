package fsm

import (
	"bytes"
	"context"
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
		defer func() {
			if nodes[i] != nil {
				nodes[i].Close()
			}
		}()
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// leader waits until an open node leads (a follower may still name a closed one).
	leader := func() *replica.Node {
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
