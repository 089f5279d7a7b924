package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/cli"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/worker"
)

// logBuf collects a worker's log lines (JSON, as in a container) and passes them to t.Log.
type logBuf struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
	t   testing.TB
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.t.Log(strings.TrimSpace(string(p)))
	return b.buf.Write(p)
}

func (b *logBuf) lines(sub string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

func runWorker(t *testing.T, cfg worker.Config) (*worker.Worker, *logBuf) {
	t.Helper()
	logs := &logBuf{t: t}
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	w, err := worker.New(cfg, prometheus.NewRegistry(), cli.Logger(logs, "json", level))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("worker did not stop")
		}
		logs.mu.Lock()
		logs.t = nopT{}
		logs.mu.Unlock()
	})
	return w, logs
}

type nopT struct{ testing.TB }

func (nopT) Log(...any) {}

// A healthy start logs no warning: the worker finds its server and works.
func TestHealthyStartLogsNoWarning(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	cfg := testutil.WorkerConfig(srv, "w0")
	cfg.LogFormat = "json"
	w, logs := runWorker(t, cfg)
	testutil.Eventually(t, 10*time.Second, "three critical sections", func() bool { return w.Status().Done >= 3 })
	// memberlist's own probe warnings are left out: on a loaded machine its UDP
	// probes may be late, which is news about the machine, not about the start.
	var warns []string
	for _, l := range logs.lines(`"level":"WARN"`) {
		if !strings.Contains(l, `"component":"memberlist"`) {
			warns = append(warns, l)
		}
	}
	if len(warns) > 0 {
		t.Fatalf("healthy start logged warnings:\n%s", strings.Join(warns, "\n"))
	}
	if p := w.Status().Problem; p != "" {
		t.Fatalf("status problem %q while working", p)
	}
}

// A client whose cluster key differs from the server's says so, at WARN, once; its
// /status names the problem; and nothing is logged at WARN for each retry.
func TestWrongClusterKeyExplainsItself(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) { c.ClusterKey = "MDEyMzQ1Njc4OWFiY2RlZg==" })
	cfg := testutil.WorkerConfig(srv, "w0")
	cfg.ClusterKey = "ZmVkY2JhOTg3NjU0MzIxMA=="
	cfg.LogFormat = "json"
	cfg.DoctorGrace = 500 * time.Millisecond
	w, logs := runWorker(t, cfg)
	testutil.Eventually(t, 10*time.Second, "the status to name the key", func() bool {
		return strings.Contains(w.Status().Problem, "BATON_CLUSTER_KEY")
	})
	// The healthcheck's answer names it too: a client's /status is not published.
	resp, err := http.Get("http://" + w.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "BATON_CLUSTER_KEY") {
		t.Errorf("/readyz answered %d %q, want 503 naming BATON_CLUSTER_KEY", resp.StatusCode, body)
	}
	// Wait for the joiner to retry twice more (every second): still one warning.
	n := len(logs.lines("join failed"))
	testutil.Eventually(t, 10*time.Second, "two more joins", func() bool { return len(logs.lines("join failed")) >= n+2 })
	warns := logs.lines(`"level":"WARN"`)
	if len(warns) != 1 || !strings.Contains(warns[0], "BATON_CLUSTER_KEY") || !strings.Contains(warns[0], `"cause":"join:key"`) {
		t.Fatalf("want one WARN naming BATON_CLUSTER_KEY, got:\n%s", strings.Join(warns, "\n"))
	}
}

// A label that differs from the server's is named too.
func TestWrongClusterLabelExplainsItself(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	cfg := testutil.WorkerConfig(srv, "w0")
	cfg.ClusterLabel = "other"
	cfg.DoctorGrace = 500 * time.Millisecond
	w, _ := runWorker(t, cfg)
	testutil.Eventually(t, 10*time.Second, "the status to name the label", func() bool {
		return strings.Contains(w.Status().Problem, "BATON_CLUSTER_LABEL")
	})
}

// A worker told to stop while its release waits for a server that is gone says so at
// once and returns within the stop's grace (2 s) plus its goodbyes, well inside
// compose's 10 s stop_grace_period: the release's own timeout (3 TTLs, 30 s here)
// was chosen before the stop and does not rule it.
func TestStopDuringAReleaseToNoServerIsBounded(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = 10 * time.Second })
	cfg := testutil.WorkerConfig(srv, "w0")
	cfg.LogFormat = "json"
	cfg.Work = 0
	entered, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cfg.Hooks.Enter = func(string, uint64) {
		once.Do(func() { close(entered); <-proceed })
	}
	logs := &logBuf{t: t}
	w, err := worker.New(cfg, prometheus.NewRegistry(), cli.Logger(logs, "json", new(slog.LevelVar)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker never held the token")
	}
	srv.Close() // the only server is gone while the worker holds the token
	close(proceed)
	testutil.Eventually(t, 10*time.Second, "the worker to be releasing", func() bool { return w.Status().State == "releasing" })

	t0 := time.Now()
	stop()
	testutil.Eventually(t, time.Second, "a stopping line at once", func() bool { return len(logs.lines(`"msg":"stopping"`)) > 0 })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not stop within compose's 10 s stop_grace_period")
	}
	took := time.Since(t0)
	t.Logf("stopped %s after the stop", took.Round(time.Millisecond))
	if took > 7*time.Second {
		t.Errorf("stopped %s after the stop, want about 2 s for the release and 2 s to leave", took)
	}
	if len(logs.lines("release given up: stopping")) != 1 {
		t.Errorf("want the release's failure to say it was given up for the stop")
	}
	logs.mu.Lock()
	logs.t = nopT{}
	logs.mu.Unlock()
}

// A gossip port another process holds stops the worker with an error that names
// BATON_GOSSIP_PORT and what to do.
func TestGossipPortInUseNamesTheVariable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := worker.Config{HTTPAddr: "127.0.0.1:0", GossipBind: "127.0.0.1", GossipPort: port, Join: []string{"127.0.0.1:1"},
		NodeName: "w0", Token: "counter", ClusterLabel: "baton", LogFormat: "text", LogLevel: "info", LocalGossip: true}
	w, err := worker.New(cfg, prometheus.NewRegistry(), testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	err = w.Run(context.Background())
	want := fmt.Sprintf("BATON_GOSSIP_PORT %d: ", port)
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "each process on a host needs its own (0 picks a free one)") {
		t.Fatalf("Run: %v\nwant %q...: each process on a host needs its own (0 picks a free one)", err, want)
	}
}

// A BATON_JOIN that names the server's token port, not its gossip port, is named as
// such (memberlist reads the token protocol's answer as an invalid message type).
func TestJoinThroughTheTokenPortExplainsItself(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	cfg := testutil.WorkerConfig(srv, "w0")
	cfg.Join = []string{srv.TokenAddr()}
	cfg.DoctorGrace = 500 * time.Millisecond
	w, _ := runWorker(t, cfg)
	testutil.Eventually(t, 10*time.Second, "the status to name the gossip port", func() bool {
		return strings.Contains(w.Status().Problem, "is that the gossip port (BATON_GOSSIP_PORT, 7946), not the token port (7000)?")
	})
}
