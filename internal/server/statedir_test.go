package server

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A server never starts empty beside the log it wrote in the other mode: its
// fences would start again from 1.
func TestStateDirOfTheOtherModeIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name       string
		logs       []string // directories under BATON_STATE_DIR holding a log
		replicated bool
		refused    string // a word of the refusal; empty: accepted
	}{
		{"a new directory, alone", nil, false, ""},
		{"a new directory, replicated", nil, true, ""},
		{"alone, on its own log", []string{"raft"}, false, ""},
		{"replicated, on its own log", []string{"server-1/raft", "server-2/raft"}, true, ""},
		{"replicated, the other servers' logs beside none of its own yet", []string{"server-2/raft"}, true, ""},
		{"replicated, beside the log of the server that ran alone", []string{"raft"}, true, "unset BATON_BOOTSTRAP_EXPECT"},
		{"replicated again after running alone: both logs", []string{"raft", "server-1/raft"}, true, ""},
		{"alone, beside replicated servers' logs", []string{"server-1/raft", "server-2/raft"}, false, "Set BATON_BOOTSTRAP_EXPECT"},
	} {
		dir := t.TempDir()
		for _, l := range tc.logs {
			if err := os.MkdirAll(filepath.Join(dir, l), 0o750); err != nil {
				t.Fatal(err)
			}
		}
		err := checkStateDir(dir, "server-1", tc.replicated)
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("%s: refused (%v), want accepted", tc.name, err)
		case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("%s: %v, want a refusal that says %q", tc.name, err, tc.refused)
		}
	}
}

// A replicated server named raft would keep its log where a server alone keeps its.
func TestReplicatedServerNamedRaftIsRefused(t *testing.T) {
	if err := checkStateDir(t.TempDir(), "raft", true); err == nil || !strings.Contains(err.Error(), "choose another name") {
		t.Errorf("a replicated server named raft: %v, want a refusal", err)
	}
}

// A start that fails (its raft port in use) leaves no log directory behind: the
// next start, in either mode, would take it for a log of the mode that failed.
func TestAFailedStartLeavesNoLog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.NodeName, cfg.StateDir, cfg.BootstrapExpect = "server-1", dir, 3
	cfg.GossipBind, cfg.RaftPort = "127.0.0.1", ln.Addr().(*net.TCPAddr).Port
	s := &Server{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if d, err := s.openCluster(); err == nil {
		d.close()
		t.Fatal("a replicated server opened its log on a raft port in use")
	}
	if logs, _ := filepath.Glob(filepath.Join(dir, "*", "raft")); len(logs) > 0 {
		t.Fatalf("the failed start left %v behind", logs)
	}
	if err := checkStateDir(dir, "", false); err != nil {
		t.Fatalf("a server alone after the failed start: %v, want accepted", err)
	}
}
