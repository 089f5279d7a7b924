package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
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
	Shape          string  `json:"shape"`
	System         string  `json:"system"`
	Sessions       int     `json:"sessions"`
	Reps           int     `json:"reps"`
	SectionsPerSec float64 `json:"sections_per_second"`
	// HandoffsPerSec counts sections whose holder differs from the previous one:
	// a lock a client takes again at once (Redis' retry loop allows it) is no handoff.
	HandoffsPerSec float64 `json:"handoffs_per_second"`
	P50ms          float64 `json:"acquire_p50_ms"`
	P99ms          float64 `json:"acquire_p99_ms"`
	P999ms         float64 `json:"acquire_p999_ms"`
	CPUmsPer1000   float64 `json:"server_cpu_ms_per_1000_sections"`
	RSSMB          float64 `json:"server_rss_mb"`
	Overlaps       int64   `json:"overlaps"`
	// LeaderChanges counts the times a replicated system's leadership moved while
	// measured (summed over the repetitions in a median).
	LeaderChanges int64 `json:"leader_changes,omitempty"`
	// CommitsPerSection and CommitMs are a durable baton's raft commits (log
	// entries proposed and committed: one log write each, on every server) per
	// critical section while measured, and their mean latency from proposal to
	// answer on the leader (baton_raft_commit_seconds).
	CommitsPerSection float64 `json:"commits_per_section,omitempty"`
	CommitMs          float64 `json:"commit_ms,omitempty"`
}

// commitMetrics are the raft commit histogram's count and sum, summed over p's
// servers (only a leader commits).
func commitMetrics(p *proc) (count, sum float64) {
	for _, c := range p.children() {
		g := serverGauges(c.http, "baton_raft_commit_seconds_count", "baton_raft_commit_seconds_sum")
		count += g["baton_raft_commit_seconds_count"]
		sum += g["baton_raft_commit_seconds_sum"]
	}
	return count, sum
}

// procStat returns a process's CPU time (user+system) and resident memory.
func procStat(pid int) (cpu time.Duration, rssMB float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				rssMB = kb / 1024
			}
		}
	}
	return cpu, rssMB
}

// dialAll opens n sessions, 64 at a time, and returns every one it opened (nil where
// it failed) with the first error: the caller closes what is not nil.
func dialAll[T any](n int, dial func(i int) (T, error)) ([]T, error) {
	out := make([]T, n)
	var first error
	var mu sync.Mutex // guards first
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range out {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			v, err := dial(i)
			out[i] = v
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, first
}

// contend runs one shape on one system: sessions lockers loop on their token
// (session i on token i mod tokens) for warmup, then are measured for duration.
func contend(sys *system, p *proc, sh shape, prefix string, warmup, duration time.Duration) (result, error) {
	lockers, dialErr := dialAll(sh.sessions, func(i int) (locker, error) { return sys.dial(p, i) })
	var wg sync.WaitGroup
	defer func() {
		for _, l := range lockers {
			if l != nil {
				l.Close()
			}
		}
	}()
	if dialErr != nil {
		return result{}, dialErr
	}

	inside := make([]atomic.Int32, sh.tokens)
	last := make([]atomic.Int64, sh.tokens)
	shared := make([]int64, sh.tokens) // the shared ints: written only inside the critical section
	var overlaps atomic.Int64
	var measuring atomic.Bool
	lat := make([][]time.Duration, sh.sessions)
	sections := make([]int, sh.sessions)
	handoffs := make([]int, sh.sessions)
	ctx, cancel := context.WithCancel(context.Background())
	var firstErr error
	var errOnce sync.Once
	for i, l := range lockers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := i % sh.tokens
			name := prefix + "-" + strconv.Itoa(t)
			var unlock func() error
			defer func() {
				if unlock != nil {
					_ = unlock()
				}
			}()
			for ctx.Err() == nil {
				var t0 time.Time
				var err error
				if rq, ok := l.(requeuer); ok && unlock != nil {
					t0 = time.Now()
					err = rq.Requeue(ctx) // the last turn's release and this one's acquire, one step
				} else {
					if unlock != nil { // the last turn's release, outside the timing
						err = unlock()
					}
					t0 = time.Now()
					if err == nil {
						unlock, err = l.Lock(ctx, name)
					}
				}
				if err != nil {
					unlock = nil
					if ctx.Err() == nil {
						errOnce.Do(func() { firstErr = err })
					}
					return
				}
				took := time.Since(t0)
				if inside[t].Add(1) != 1 {
					overlaps.Add(1)
				}
				shared[t]++
				handoff := last[t].Swap(int64(i)) != int64(i)
				inside[t].Add(-1)
				if measuring.Load() {
					lat[i] = append(lat[i], took)
					sections[i]++
					if handoff {
						handoffs[i]++
					}
				}
			}
		}()
	}
	time.Sleep(warmup) // load shaping: connections and caches settle before measuring
	cpu0, _ := p.stat()
	leads0 := leadsOf(p)
	var commits0, commitSum0 float64
	if sys.durable && sys.keeps {
		commits0, commitSum0 = commitMetrics(p)
	}
	measuring.Store(true)
	start := time.Now()
	time.Sleep(duration) // the measured window
	measuring.Store(false)
	elapsed := time.Since(start)
	cpu1, rss := p.stat()
	leads := leadsOf(p) - leads0
	var commits, commitSum float64
	if sys.durable && sys.keeps {
		c1, s1 := commitMetrics(p)
		commits, commitSum = c1-commits0, s1-commitSum0
	}
	cancel()
	for _, l := range lockers { // unblocks lockers that ignore ctx (the floor's blocking read)
		if _, ok := l.(*floorLocker); ok {
			l.Close()
		}
	}
	wg.Wait()
	if firstErr != nil {
		return result{}, firstErr
	}
	var all []time.Duration
	var nSections, nHandoffs int
	for i := range lat {
		all = append(all, lat[i]...)
		nSections += sections[i]
		nHandoffs += handoffs[i]
	}
	if nSections == 0 {
		return result{}, errors.New("no critical section completed")
	}
	slices.Sort(all)
	pct := func(q float64) float64 {
		return float64(all[min(len(all)-1, int(q*float64(len(all))))].Microseconds()) / 1000
	}
	res := result{Shape: sh.name, System: sys.name, Sessions: sh.sessions, Reps: 1,
		SectionsPerSec: float64(nSections) / elapsed.Seconds(), HandoffsPerSec: float64(nHandoffs) / elapsed.Seconds(),
		P50ms: pct(0.50), P99ms: pct(0.99), P999ms: pct(0.999),
		CPUmsPer1000: float64((cpu1 - cpu0).Milliseconds()) / float64(nSections) * 1000, RSSMB: rss,
		Overlaps: overlaps.Load(), LeaderChanges: leads}
	if commits > 0 {
		res.CommitsPerSection, res.CommitMs = commits/float64(nSections), commitSum/commits*1000
	}
	return res, nil
}

func idleShapeName(n int) string {
	return fmt.Sprintf("N=%d, one token, %d idle tokens", idleTokensSessions, n)
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

// waitQueued polls the baton server's /status until token has one waiter.
func waitQueued(httpAddr, token string) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		resp, err := http.Get("http://" + httpAddr + "/status")
		if err != nil {
			continue
		}
		var st server.Status
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		for _, t := range st.Tokens {
			if err == nil && t.Name == token && len(t.Queue) == 1 {
				return nil
			}
		}
	}
	return fmt.Errorf("waiter not queued for %q within 10s", token)
}

// killTrials: a holder in its own process holds the token, a waiter queues behind
// it, the holder gets SIGKILL; the time from the kill to the waiter's grant.
func killTrials(p *proc, trials int) ([]float64, error) {
	ctx := context.Background()
	waiter, err := baton.Dial(ctx, baton.Config{Addr: p.addr, Node: "kill-waiter"})
	if err != nil {
		return nil, err
	}
	defer waiter.Close()
	var ms []float64
	for range trials {
		cmd := exec.Command(os.Args[0], "-hold", p.addr)
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
			return nil, fmt.Errorf("holder process: %w", err)
		}
		got := make(chan time.Time, 1)
		go func() {
			defer close(got)
			if l, err := waiter.Acquire(ctx, "kill"); err == nil {
				got <- time.Now()
				_ = l.Release(ctx, l.Record)
			}
		}()
		if err := waitQueued(p.http, "kill"); err != nil {
			return nil, err
		}
		killed := time.Now()
		_ = cmd.Process.Kill()
		at, ok := <-got
		_ = cmd.Wait()
		if !ok {
			return nil, errors.New("waiter failed")
		}
		ms = append(ms, float64(at.Sub(killed).Microseconds())/1000)
	}
	return ms, nil
}

type idleResult struct {
	Sessions    int     `json:"sessions"`
	BeforeMB    float64 `json:"rss_before_mb"`
	ConnectedMB float64 `json:"rss_connected_mb"`
	EndMB       float64 `json:"rss_end_mb"`
	MaxMB       float64 `json:"rss_max_mb"`
	Watched     string  `json:"watched"`
	// RSS at each fifth of the watch: flat or growing is read here, not from the max.
	FifthsMB []float64 `json:"rss_fifths_mb"`
	// From the server's own metrics once connected: where the memory is.
	StackMB    float64 `json:"go_stack_inuse_mb"`
	HeapMB     float64 `json:"go_heap_inuse_mb"`
	Goroutines float64 `json:"goroutines"`
	// The same at the end of the watch.
	EndStackMB float64 `json:"end_go_stack_inuse_mb"`
	EndHeapMB  float64 `json:"end_go_heap_inuse_mb"`
}

// serverGauges reads a few gauges from a baton server's /metrics.
func serverGauges(httpAddr string, names ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && slices.Contains(names, f[0]) {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v
		}
	}
	return out
}

// idleSessions opens n baton sessions that keep alive and do nothing else, then
// watches the server's memory for a while.
func idleSessions(n int, watch time.Duration) (*idleResult, error) {
	p, err := startChild("baton")
	if err != nil {
		return nil, err
	}
	defer p.stop()
	_, before := p.stat()
	clients, dialErr := dialAll(n, func(i int) (*baton.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return baton.Dial(ctx, baton.Config{Addr: p.addr, Node: fmt.Sprintf("idle-%d", i)})
	})
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	if dialErr != nil {
		return nil, dialErr
	}
	_, connected := p.stat()
	r := &idleResult{Sessions: n, BeforeMB: before, ConnectedMB: connected, MaxMB: connected, Watched: watch.String()}
	g := serverGauges(p.http, "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines")
	r.StackMB, r.HeapMB, r.Goroutines = g["go_memstats_stack_inuse_bytes"]/(1<<20), g["go_memstats_heap_inuse_bytes"]/(1<<20), g["go_goroutines"]
	start := time.Now()
	for fifth := 1; fifth <= 5; fifth++ {
		due := start.Add(watch * time.Duration(fifth) / 5)
		for {
			_, rss := p.stat()
			r.MaxMB = max(r.MaxMB, rss)
			if !time.Now().Before(due) {
				r.FifthsMB = append(r.FifthsMB, rss) // the sample at the fifth's end
				break
			}
			time.Sleep(min(time.Second, time.Until(due))) // the sampling interval
		}
	}
	r.EndMB = r.FifthsMB[len(r.FifthsMB)-1]
	if os.Getenv("BENCH_MEMPROFILE") != "" {
		p.signal(syscall.SIGUSR1)
	}
	g = serverGauges(p.http, "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes")
	r.EndStackMB, r.EndHeapMB = g["go_memstats_stack_inuse_bytes"]/(1<<20), g["go_memstats_heap_inuse_bytes"]/(1<<20)
	return r, nil
}

// startIdle starts servers of sys's of their own for the idle-tokens shape, under
// name+idleKey in sv, and makes n tokens there.
func startIdle(sv *servers, sys *system, n int) error {
	p, err := sys.start()
	if err != nil {
		return err
	}
	key := sys.name + idleKey
	sv.procs[key] = p
	return sv.alone(key, func() error {
		if sys.settle != nil {
			if err := sys.settle(p); err != nil {
				return err
			}
		}
		err := makeTokens(sys, p, n)
		if sys.drain != nil {
			sys.drain(p)
		}
		return err
	})
}

// makeTokens takes and gives back n tokens (idle-0, idle-1, ...) once each, from 16
// sessions: each stays in the state with its fence and record, and nobody waits for
// it.
func makeTokens(sys *system, p *proc, n int) error {
	const sessions = 16
	lockers, err := dialAll(sessions, func(i int) (locker, error) { return sys.dial(p, 1_000_000+i) })
	defer func() {
		for _, l := range lockers {
			if l != nil {
				l.Close()
			}
		}
	}()
	if err != nil {
		return err
	}
	ctx := context.Background()
	errs := make(chan error, sessions)
	for i, l := range lockers {
		go func() {
			for t := i; t < n; t += sessions {
				unlock, err := l.Lock(ctx, "idle-"+strconv.Itoa(t))
				if err == nil {
					err = unlock()
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range lockers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
