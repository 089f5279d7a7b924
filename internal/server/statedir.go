package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// checkStateDir refuses a BATON_STATE_DIR whose log was written in the other mode:
// a server alone keeps its log in dir/raft, a replicated one in dir/NAME/raft. A
// server that started in the other mode would find no log of its own and begin
// empty, its fences from 1 again, while the state it replaces lies beside it. Only
// an operator may choose that, by removing the old log.
func checkStateDir(dir, name string, replicated bool) error {
	alone := filepath.Join(dir, "raft")
	if replicated {
		if name == "raft" {
			return fmt.Errorf("BATON_NODE_NAME raft: a replicated server keeps its log in BATON_STATE_DIR/<name>, and %s is where a server alone keeps its own: choose another name", alone)
		}
		if exists(alone) && !exists(filepath.Join(dir, name, "raft")) {
			return fmt.Errorf("BATON_STATE_DIR %s holds the log of a server that ran alone (%s), and this server, "+
				"replicated (BATON_BOOTSTRAP_EXPECT above 1), would start with an empty log of its own in %s: "+
				"its fences would start again from 1. A server's log is not carried into a cluster: "+
				"unset BATON_BOOTSTRAP_EXPECT to run on that state, or remove %s to start afresh "+
				"(under compose, `docker compose down -v` removes the servers' volume, and every token's state with it)",
				dir, alone, filepath.Join(dir, name), alone)
		}
		return nil
	}
	if exists(alone) {
		return nil
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*", "raft"))
	if len(logs) > 0 {
		return fmt.Errorf("BATON_STATE_DIR %s holds the logs of replicated servers (%s), and this server, "+
			"alone (BATON_BOOTSTRAP_EXPECT 1), would start with an empty log in %s: its fences would start again from 1. "+
			"Set BATON_BOOTSTRAP_EXPECT as those servers had, or give this one another BATON_STATE_DIR",
			dir, strings.Join(logs, ", "), alone)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// makeLogDir creates a raft log's directory, and returns what undoes that: a
// start that fails (a port in use) must not leave an empty log behind, which
// checkStateDir would take for a log of the mode that start tried.
func makeLogDir(dir string) (undo func(), err error) {
	if exists(dir) {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	return func() { _ = os.RemoveAll(dir) }, nil
}
