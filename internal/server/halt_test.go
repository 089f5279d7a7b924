package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/fsm"
)

// A downgrade of a replicated cluster: the log holds an entry of a version these
// servers do not read (a newer leader wrote it before they were started on the
// older build). Every server halts at that entry (haltReplica): out of /readyz, no
// longer leading or publishing a leader, its raft closed, and nothing after the entry
// applied; none serves a state without it.
func TestReplicasHaltAtAnEntryOfANewerVersion(t *testing.T) {
	srvs := startReplicas(t, 3)
	leader := awaitReplicaLeader(t, srvs, 20*time.Second)

	// A token the cluster holds before the newer entry.
	before := fsm.AppendBatch(nil, &fsm.Command{Op: fsm.OpImport, Token: "before", Fence: 7})
	if res, err := leader.core.d.node.Apply(context.Background(), before); err != nil || res != nil {
		t.Fatalf("an entry of this version: %v %v, want it applied", res, err)
	}
	newer := fsm.AppendBatch(nil, &fsm.Command{Op: fsm.OpImport, Token: "newer", Fence: 9})
	newer[4]++ // the command's version byte: one this build does not read
	res, err := leader.core.d.node.Apply(context.Background(), newer)
	if err != nil {
		t.Fatalf("the newer entry was not committed: %v", err)
	}
	if err, _ := res.(error); !errors.Is(err, fsm.ErrNewerLog) {
		t.Fatalf("the newer entry answered %v on the leader, want ErrNewerLog", res)
	}

	deadline := time.Now().Add(10 * time.Second)
	for i, s := range srvs {
		for !halted(s) {
			if time.Now().After(deadline) {
				t.Fatalf("server s%d: ready %v, leading %v, log stopped %v; want it halted (not ready, not leading, log stopped)",
					i+1, s.ready.Load(), s.Leading(), s.core.d.log.Stopped())
			}
			time.Sleep(5 * time.Millisecond) // polling interval
		}
		resp, err := http.Get("http://" + s.HTTPAddr() + "/readyz")
		if err != nil {
			t.Fatalf("s%d /readyz: %v", i+1, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("s%d /readyz answered %d after halting, want 503", i+1, resp.StatusCode)
		}
		snap, err := s.core.d.log.Save()
		if err != nil {
			t.Fatal(err)
		}
		st := fsm.New[*conn](8)
		if err := st.Restore(snap, 8, time.Now()); err != nil {
			t.Fatal(err)
		}
		if tk := st.Tokens.Get("before"); tk == nil || tk.Fence != 7 {
			t.Errorf("s%d: token before is %+v, want it at fence 7", i+1, tk)
		}
		if st.Tokens.Get("newer") != nil {
			t.Errorf("s%d applied the newer entry's token, want nothing of it applied", i+1)
		}
	}
	// Raft is closed on every server: nothing more commits anywhere.
	if _, err := leader.core.d.node.Apply(context.Background(), before); err == nil {
		t.Error("an entry committed after every server halted")
	}
}

// halted reads, with the core taken, whether s has halted at an entry it cannot read.
func halted(s *Server) bool {
	s.coreMu.Lock()
	defer s.coreMu.Unlock()
	return s.core.d.halted && !s.ready.Load() && !s.Leading() && s.core.d.log.Stopped() != nil
}

// startReplicas starts n replicating servers on loopback, each with a state
// directory of its own; the first joins nobody and the others join it. Closed at
// cleanup.
func startReplicas(t *testing.T, n int) []*Server {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var srvs []*Server
	var join []string
	for i := range n {
		cfg := DefaultConfig()
		cfg.TokenAddr, cfg.HTTPAddr, cfg.GossipBind, cfg.GossipPort, cfg.RaftPort = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0, 0
		cfg.NodeName = fmt.Sprintf("s%d", i+1)
		cfg.StateDir, cfg.BootstrapExpect, cfg.Join = t.TempDir(), n, join
		s, err := New(cfg, Options{Logger: quiet.With("node", cfg.NodeName)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Open(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if join == nil {
			join = []string{s.GossipAddr()}
		}
		srvs = append(srvs, s)
	}
	return srvs
}

// awaitReplicaLeader waits up to d for one of srvs to serve as leader.
func awaitReplicaLeader(t *testing.T, srvs []*Server, d time.Duration) *Server {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) { // polling interval
		for _, s := range srvs {
			if s.Leading() {
				return s
			}
		}
	}
	t.Fatalf("no server of %d led within %s", len(srvs), d)
	return nil
}
