package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
)

// The real signal path of the binary: SIGHUP restarts in place (epoch +1), SIGTERM
// stops it and run returns nil, which main turns into exit status 0.
func TestSignals(t *testing.T) {
	cfg := testutil.ServerConfig()
	started := make(chan *server.Server, 1)
	done := make(chan error, 1)
	go func() { done <- run(cfg, testutil.Logger(t), nil, func(s *server.Server) { started <- s }) }()
	var srv *server.Server
	select {
	case srv = <-started:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start")
	}
	st, _ := srv.Status()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "epoch to go up after SIGHUP", func() bool {
		now, err := srv.Status()
		return err == nil && now.Epoch == st.Epoch+1
	})
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after SIGTERM: %v, want nil (exit 0)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not stop the server")
	}
}
