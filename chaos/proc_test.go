package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLogsStartAfresh: a run's first process of a name starts its log afresh, in
// a directory a previous run left (-dir); its restarts in the same run append.
func TestLogsStartAfresh(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "x.log")
	if err := os.WriteFile(log, []byte("the previous run\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	say := func(ps *procs, inst int, words string) {
		t.Helper()
		p, err := ps.start("x", inst, "/bin/sh", []string{"-c", "echo " + words}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	run := &procs{h: newHistory(io.Discard), logDir: dir}
	say(run, 1, "first")
	say(run, 2, "restarted")
	if got, want := read(), "first\nrestarted\n"; got != want {
		t.Errorf("log of a run:\n%s\nwant:\n%s", got, want)
	}
	next := &procs{h: newHistory(io.Discard), logDir: dir}
	say(next, 1, "next run")
	if got, want := read(), "next run\n"; got != want {
		t.Errorf("log of the next run:\n%s\nwant:\n%s", got, want)
	}
}
