package main

import (
	"os"
	"os/signal"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/worker"
)

// The binary's signal path: SIGHUP (a closed terminal) stops the worker like SIGTERM,
// and run returns nil, which main turns into exit status 0; uncaught, it killed the
// process (status 129) without a release.
func TestHangupStopsTheWorker(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	cfg := testutil.WorkerConfig(srv, "w0")
	started := make(chan *worker.Worker, 1)
	done := make(chan error, 1)
	go func() { done <- run(cfg, testutil.Logger(t), func(w *worker.Worker) { started <- w }) }()
	var w *worker.Worker
	select {
	case w = <-started:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not start")
	}
	testutil.Eventually(t, 10*time.Second, "a critical section", func() bool { return w.Status().Done >= 1 })
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after SIGHUP: %v, want nil (exit 0)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not stop the worker")
	}
	if st := w.Status().State; st != "stopping" {
		t.Errorf("state after SIGHUP %q, want stopping", st)
	}
}

// A client started under nohup (HUP ignored) keeps ignoring it: catching HUP would
// undo nohup, and the worker would stop at logout.
func TestHangupIgnoredAtStartStaysIgnored(t *testing.T) {
	if !slices.Contains(stopSignals(), os.Signal(syscall.SIGHUP)) {
		t.Fatal("HUP not caught by a client started normally")
	}
	signal.Ignore(syscall.SIGHUP)
	defer signal.Reset(syscall.SIGHUP)
	if slices.Contains(stopSignals(), os.Signal(syscall.SIGHUP)) {
		t.Error("HUP caught by a client started with it ignored (nohup)")
	}
}
