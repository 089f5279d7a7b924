package testutil

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/worker"
)

// Worker is a running client worker with its own memberlist node.
type Worker struct {
	*worker.Worker
	Name string
	Reg  *prometheus.Registry
	stop context.CancelFunc
	done chan error
	once sync.Once
}

// WorkerConfig is a worker configuration for tests: loopback, free ports, joins srv.
func WorkerConfig(srv *Server, name string) worker.Config {
	return worker.Config{HTTPAddr: "127.0.0.1:0", GossipPort: 0, GossipBind: "127.0.0.1", Join: []string{srv.GossipAddr()},
		NodeName: name, Token: "counter", Work: 2 * time.Millisecond, Think: time.Millisecond,
		ClusterLabel: srv.Cfg.ClusterLabel, ClusterKey: srv.Cfg.ClusterKey, LogFormat: "text", LogLevel: "info", LocalGossip: true}
}

// StartWorkers starts n workers named w0..w(n-1), each changed by mod, stopped at
// cleanup.
func StartWorkers(t testing.TB, srv *Server, n int, mod func(*worker.Config)) []*Worker {
	t.Helper()
	ws := make([]*Worker, n)
	for i := range n {
		cfg := WorkerConfig(srv, fmt.Sprintf("w%d", i))
		if mod != nil {
			mod(&cfg)
		}
		ws[i] = StartWorker(t, cfg)
	}
	return ws
}

// StartWorker starts one worker with cfg, stopped at cleanup.
func StartWorker(t testing.TB, cfg worker.Config) *Worker {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := worker.New(cfg, reg, Logger(t).With("node", cfg.NodeName))
	if err != nil {
		t.Fatalf("worker %s: %v", cfg.NodeName, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tw := &Worker{Worker: w, Name: cfg.NodeName, Reg: reg, stop: cancel, done: make(chan error, 1)}
	go func() { tw.done <- w.Run(ctx) }()
	t.Cleanup(func() { tw.Stop(t) })
	return tw
}

// Stop stops the worker gracefully and fails the test unless Run returns nil within
// 10 s. Idempotent.
func (w *Worker) Stop(t testing.TB) {
	t.Helper()
	w.once.Do(func() {
		w.stop()
		select {
		case err := <-w.done:
			if err != nil {
				t.Errorf("worker %s: %v", w.Name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("worker %s did not stop within 10s", w.Name)
		}
	})
}
