// Command baton-bench measures baton on loopback: the server runs in a child
// process, N clients contend for one token in this one (acquire, increment, check
// nobody else is inside, release); then holders in their own processes are killed
// to time the next grant. It prints a markdown table and can write JSON.
//
//	go run ./cmd/baton-bench -clients 1,8,64 -duration 10s -kills 20
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
)

type result struct {
	Clients      int     `json:"clients"`
	Seconds      float64 `json:"seconds"`
	Handoffs     int     `json:"handoffs"`
	PerSecond    float64 `json:"handoffs_per_second"`
	P50ms        float64 `json:"acquire_p50_ms"`
	P99ms        float64 `json:"acquire_p99_ms"`
	P999ms       float64 `json:"acquire_p999_ms"`
	Overlaps     int64   `json:"overlaps"`
	ServerCPUms  float64 `json:"server_cpu_ms_per_1000_handoffs"`
	KillMedianMs float64 `json:"next_grant_after_kill_median_ms,omitempty"`
	KillMaxMs    float64 `json:"next_grant_after_kill_max_ms,omitempty"`
}

func main() {
	serve := flag.Bool("serve", false, "internal: run the server and print its token address")
	hold := flag.String("hold", "", "internal: acquire the token at this address, print the fence, wait to be killed")
	clientsFlag := flag.String("clients", "8", "comma-separated client counts")
	duration := flag.Duration("duration", 10*time.Second, "measured time per run")
	warmup := flag.Duration("warmup", time.Second, "unmeasured time before each run")
	kills := flag.Int("kills", 20, "holder-kill trials (0 skips them)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	flag.Parse()
	switch {
	case *serve:
		runServer()
		return
	case *hold != "":
		runHolder(*hold)
		return
	}
	var counts []int
	for _, f := range strings.Split(*clientsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fail(fmt.Errorf("-clients: bad count %q", f))
		}
		counts = append(counts, n)
	}
	srv, addr, httpAddr, err := startServerProcess()
	if err != nil {
		fail(err)
	}
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()

	var results []result
	for i, n := range counts {
		r, err := contend(addr, srv.Process.Pid, n, *warmup, *duration, fmt.Sprintf("run%d", i))
		if err != nil {
			fail(err)
		}
		results = append(results, r)
	}
	if *kills > 0 {
		med, max, err := killTrials(addr, httpAddr, *kills)
		if err != nil {
			fail(err)
		}
		results[0].KillMedianMs, results[0].KillMaxMs = med, max
	}
	fmt.Println("| clients | handoffs/s | acquire p50 | p99 | p99.9 | server CPU per 1000 handoffs | overlaps |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Printf("| %d | %.0f | %.3f ms | %.3f ms | %.3f ms | %.1f ms | %d |\n", r.Clients, r.PerSecond, r.P50ms, r.P99ms, r.P999ms, r.ServerCPUms, r.Overlaps)
	}
	if *kills > 0 {
		fmt.Printf("\nholder process killed (SIGKILL), next grant: median %.2f ms, max %.2f ms over %d trials\n",
			results[0].KillMedianMs, results[0].KillMaxMs, *kills)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fail(err)
		}
	}
	for _, r := range results {
		if r.Overlaps != 0 {
			fail(fmt.Errorf("%d overlapping critical sections with %d clients", r.Overlaps, r.Clients))
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "baton-bench:", err)
	os.Exit(1)
}

func runServer() {
	cfg := server.DefaultConfig()
	cfg.TokenAddr, cfg.HTTPAddr, cfg.GossipBind, cfg.GossipPort, cfg.NodeName = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0, "bench-server"
	srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		err = srv.Open()
	}
	if err != nil {
		fail(err)
	}
	fmt.Println(srv.TokenAddr(), srv.HTTPAddr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	srv.Close()
}

func runHolder(addr string) {
	ctx := context.Background()
	c, err := baton.Dial(ctx, baton.Config{Addr: addr, Node: fmt.Sprintf("holder-%d", os.Getpid())})
	if err != nil {
		fail(err)
	}
	l, err := c.Acquire(ctx, "kill")
	if err != nil {
		fail(err)
	}
	fmt.Println(l.Fence)
	select {} // until killed
}

func startServerProcess() (*exec.Cmd, string, string, error) {
	cmd := exec.Command(os.Args[0], "-serve")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 {
		return nil, "", "", fmt.Errorf("server process said %q: %v", line, err)
	}
	return cmd, f[0], f[1], nil
}

// waitQueued polls the server's /status until token has one waiter.
func waitQueued(httpAddr, token string) error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + httpAddr + "/status")
		if err == nil {
			var st server.Status
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			for _, t := range st.Tokens {
				if err == nil && t.Name == token && len(t.Queue) == 1 {
					return nil
				}
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("waiter not queued for %q within 5s", token)
}

// cpuTime is a process's user+system CPU time from /proc.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

func contend(addr string, serverPid, n int, warmup, duration time.Duration, token string) (result, error) {
	ctx := context.Background()
	clients := make([]*baton.Client, n)
	for i := range clients {
		c, err := baton.Dial(ctx, baton.Config{Addr: addr, Node: fmt.Sprintf("bench-%s-%d", token, i)})
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		clients[i] = c
	}
	var inside, overlaps atomic.Int64
	var measuring atomic.Bool
	var shared int64 // the shared int the critical section increments
	lat := make([][]time.Duration, n)
	handoffs := make([]int, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				l, err := c.Acquire(ctx, token)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				took := time.Since(t0)
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				shared++
				inside.Add(-1)
				if err := l.Release(ctx, baton.Record{Counter: l.Record.Counter + 1}); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				if measuring.Load() {
					lat[i] = append(lat[i], took)
					handoffs[i]++
				}
			}
		}()
	}
	time.Sleep(warmup) // load shaping: let connections and caches settle before measuring
	cpu0 := cpuTime(serverPid)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	cpu := cpuTime(serverPid) - cpu0
	close(stop)
	wg.Wait()
	if firstErr != nil {
		return result{}, firstErr
	}
	var all []time.Duration
	total := 0
	for i := range lat {
		all = append(all, lat[i]...)
		total += handoffs[i]
	}
	if total == 0 {
		return result{}, errors.New("no handoff measured")
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
	}
	return result{Clients: n, Seconds: elapsed.Seconds(), Handoffs: total, PerSecond: float64(total) / elapsed.Seconds(),
		P50ms: pct(0.50), P99ms: pct(0.99), P999ms: pct(0.999), Overlaps: overlaps.Load(),
		ServerCPUms: float64(cpu.Milliseconds()) / float64(total) * 1000}, nil
}

// killTrials: a holder in its own process holds the token, a waiter queues behind
// it, the holder gets SIGKILL; the time to the waiter's grant is measured.
func killTrials(addr, httpAddr string, trials int) (median, max float64, err error) {
	ctx := context.Background()
	waiter, err := baton.Dial(ctx, baton.Config{Addr: addr, Node: "kill-waiter"})
	if err != nil {
		return 0, 0, err
	}
	defer waiter.Close()
	var ms []float64
	for range trials {
		cmd := exec.Command(os.Args[0], "-hold", addr)
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return 0, 0, err
		}
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
			return 0, 0, fmt.Errorf("holder process: %w", err)
		}
		got := make(chan time.Time, 1)
		go func() {
			l, err := waiter.Acquire(ctx, "kill")
			if err != nil {
				close(got)
				return
			}
			got <- time.Now()
			_ = l.Release(ctx, l.Record)
		}()
		if err := waitQueued(httpAddr, "kill"); err != nil {
			return 0, 0, err
		}
		killed := time.Now()
		_ = cmd.Process.Kill()
		at, ok := <-got
		_ = cmd.Wait()
		if !ok {
			return 0, 0, errors.New("waiter failed")
		}
		ms = append(ms, float64(at.Sub(killed).Microseconds())/1000)
	}
	slices.Sort(ms)
	return ms[len(ms)/2], ms[len(ms)-1], nil
}
