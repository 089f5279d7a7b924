package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFreshStateDir: a run in a directory a previous run left (-keep -dir) starts
// its servers on an empty state directory, and keeps everything else there.
func TestFreshStateDir(t *testing.T) {
	dir := t.TempDir()
	path, removed, err := freshStateDir(dir)
	if err != nil || removed || path != filepath.Join(dir, "state") {
		t.Fatalf("first run: %q, removed %v, %v; want %s/state, nothing removed", path, removed, err, dir)
	}
	// What a previous run left: the servers' logs in raft mode, a report.
	for _, f := range []string{"state/s1/raft/wal/00001.wal", "state/s2/meta", "report.txt"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path, removed, err = freshStateDir(dir)
	if err != nil || !removed {
		t.Fatalf("second run: removed %v, %v; want removed", removed, err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s after freshStateDir: %v; want it gone", path, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "report.txt")); err != nil {
		t.Errorf("report.txt of the previous run: %v; want it kept", err)
	}
}
