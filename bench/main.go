// Command bench puts baton beside the physical floor and its peers, in one run, on
// loopback: every server in a process of its own, every client session in this one.
//
// Workload: N sessions contend for one token; each loops acquire, critical section
// (increment a shared int and check nobody else is inside), release; no work. Shapes:
// N = 1, 8, 64, 512 on one token; T tokens with 4 sessions each; K idle baton
// sessions (server memory); holders killed with SIGKILL (next grant). Systems:
//
//	floor  a minimal raw-TCP FIFO token server: one byte a message, one round trip a handoff
//	baton  the real server and client package: sessions, fences, metrics on
//	etcd   concurrency.Mutex on an embedded etcd
//	redis  Debian's redis-server, SET NX PX retried every 1 ms
//
//	cd bench && go run . -duration 10s -reps 3      # the README's table
//	cd bench && go run . -short                      # CI: seconds, no timing asserted
//	cd bench && go run . -chain trace.txt -pids S,C  # where a handoff's time goes (README)
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	systems  []string
	clients  []int
	tokens   int
	idle     int
	idleFor  time.Duration
	duration time.Duration
	warmup   time.Duration
	reps     int
	kills    int
}

func main() {
	serve := flag.String("serve", "", "internal: run this system's server and print its address")
	hold := flag.String("hold", "", "internal: hold the token at this baton address until killed")
	systemsFlag := flag.String("systems", "floor,baton,baton-durable,etcd,redis", "systems to measure")
	clientsFlag := flag.String("clients", "1,8,64,512", "sessions on one token, per shape")
	tokens := flag.Int("tokens", 1000, "tokens for the many-tokens shape, 4 sessions each (0 skips)")
	idle := flag.Int("idle", 10000, "idle baton sessions for the memory shape (0 skips)")
	idleFor := flag.Duration("idle-for", 5*time.Minute, "how long to watch the idle server's memory")
	duration := flag.Duration("duration", 10*time.Second, "measured time per run")
	warmup := flag.Duration("warmup", time.Second, "unmeasured time before each run")
	reps := flag.Int("reps", 3, "repetitions, interleaved across systems; medians reported")
	kills := flag.Int("kills", 20, "baton holder-kill trials (0 skips)")
	short := flag.Bool("short", false, "a quick pass for CI: 1 s runs, 1 repetition, small shapes")
	jsonOut := flag.String("json", "", "write the results as JSON here")
	mdOut := flag.String("md", "", "write the markdown table here too")
	chain := flag.String("chain", "", "read this system-call trace (perf script) and say where a handoff's time goes; with -pids")
	pids := flag.String("pids", "", "the traced server and client process ids, SERVER,CLIENT")
	flag.Parse()
	if *chain != "" {
		if err := runChain(*chain, *pids); err != nil {
			fail(err)
		}
		return
	}
	// Made before the run, not after it: a missing folder must not cost 20 minutes.
	for _, path := range []string{*mdOut, *jsonOut} {
		if path != "" {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				fail(err)
			}
		}
	}

	if *serve != "" {
		runServer(*serve)
		return
	}
	if *hold != "" {
		runHolder(*hold)
		return
	}
	// BENCH_CLIENT_CPUPROFILE profiles this process: the client sessions' side.
	defer cpuProfile("BENCH_CLIENT_CPUPROFILE")()
	o := options{systems: strings.Split(*systemsFlag, ","), tokens: *tokens, idle: *idle, idleFor: *idleFor,
		duration: *duration, warmup: *warmup, reps: *reps, kills: *kills}
	for _, f := range strings.Split(*clientsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fail(fmt.Errorf("-clients: bad count %q", f))
		}
		o.clients = append(o.clients, n)
	}
	if *short {
		o.clients, o.tokens, o.idle, o.idleFor = []int{1, 8}, 50, 200, 2*time.Second
		o.duration, o.warmup, o.reps, o.kills = time.Second, 200*time.Millisecond, 1, 3
	}
	rep, err := run(o)
	if err != nil {
		fail(err)
	}
	md := rep.markdown()
	fmt.Print(md)
	if *mdOut != "" {
		if err := os.WriteFile(*mdOut, []byte(md), 0o644); err != nil {
			fail(err)
		}
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fail(err)
		}
	}
	if rep.Overlaps > 0 {
		fail(fmt.Errorf("%d overlapping critical sections", rep.Overlaps))
	}
}

// runServer runs a system's server as a child process until SIGINT or SIGTERM, with
// the profiling knobs: BENCH_CPUPROFILE (CPU profile of the run), BENCH_MEMPROFILE
// (heap profile on SIGUSR1; the idle shape sends it at the end of its watch) and
// BENCH_SERVER_PROCS (GOMAXPROCS, apart from the benchmark process's).
func runServer(kind string) {
	defer cpuProfile("BENCH_CPUPROFILE")()
	if n, err := strconv.Atoi(os.Getenv("BENCH_SERVER_PROCS")); err == nil && n > 0 {
		runtime.GOMAXPROCS(n)
	}
	if path := os.Getenv("BENCH_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 4096
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			for range usr1 {
				runtime.GC() // the profile shows the heap as of the last GC
				if f, err := os.Create(path); err == nil {
					_ = pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	if err := serveChild(kind, func() { <-sig }); err != nil {
		fail(err)
	}
}

// cpuProfile starts a CPU profile into the file the environment variable env names,
// if it is set; the result stops it.
func cpuProfile(env string) (stop func()) {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fail(err)
	}
	_ = pprof.StartCPUProfile(f)
	return pprof.StopCPUProfile
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

type report struct {
	When     time.Time   `json:"when"`
	Options  string      `json:"options"`
	Results  []result    `json:"results"` // medians per shape and system
	Idle     *idleResult `json:"idle,omitempty"`
	KillMs   []float64   `json:"next_grant_after_kill_ms,omitempty"`
	Overlaps int64       `json:"overlaps"`
}

type shape struct {
	name     string
	sessions int
	tokens   int
}

func run(o options) (*report, error) {
	rep := &report{When: time.Now().UTC(), Options: fmt.Sprintf("%+v", o)}
	var shapes []shape
	for _, n := range o.clients {
		shapes = append(shapes, shape{name: fmt.Sprintf("N=%d, one token", n), sessions: n, tokens: 1})
	}
	if o.tokens > 0 {
		shapes = append(shapes, shape{name: fmt.Sprintf("%d tokens × 4 sessions", o.tokens), sessions: 4 * o.tokens, tokens: o.tokens})
	}
	procs := map[string]*proc{}
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for _, name := range o.systems {
		sys := systems[name]
		if sys == nil {
			return nil, fmt.Errorf("unknown system %q", name)
		}
		p, err := sys.start()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		procs[name] = p
	}
	all := map[string][]result{}
	for r := 0; r < o.reps; r++ {
		for si, sh := range shapes {
			for _, name := range o.systems {
				sys := systems[name]
				if sh.tokens > 1 && !sys.multi {
					continue
				}
				token := fmt.Sprintf("r%d-s%d", r, si)
				var res result
				err := alone(procs, name, func() (err error) {
					res, err = contend(sys, procs[name], sh, token, o.warmup, o.duration)
					return err
				})
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", name, sh.name, err)
				}
				fmt.Fprintf(os.Stderr, "rep %d %-24s %-6s %9.0f sections/s p99 %.3f ms\n", r+1, sh.name, name, res.SectionsPerSec, res.P99ms)
				rep.Overlaps += res.Overlaps
				all[sh.name+"\x00"+name] = append(all[sh.name+"\x00"+name], res)
			}
		}
	}
	for _, sh := range shapes {
		for _, name := range o.systems {
			if rs := all[sh.name+"\x00"+name]; len(rs) > 0 {
				rep.Results = append(rep.Results, median(rs))
			}
		}
	}
	if o.kills > 0 && procs["baton"] != nil {
		if err := alone(procs, "baton", func() (err error) { rep.KillMs, err = killTrials(procs["baton"], o.kills); return err }); err != nil {
			return nil, err
		}
	}
	if o.idle > 0 && slices.Contains(o.systems, "baton") {
		// The idle shape starts a server of its own: every other one is paused.
		if err := alone(procs, "", func() (err error) { rep.Idle, err = idleSessions(o.idle, o.idleFor); return err }); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// alone runs fn with every server but name's stopped (SIGSTOP), then continues
// them. An idle server still runs timers and background work (a freshly started etcd
// most of all: one pass of all four systems at N=512, just started, gave the floor
// and baton 30k handoffs/s, against 38k to 46k with the two alone, and 43k and 39k
// with the others stopped), and the system measured should have the cores to
// itself. No client is connected to a stopped server.
func alone(procs map[string]*proc, name string, fn func() error) error {
	signalOthers := func(sig os.Signal) {
		for n, p := range procs {
			if n != name {
				_ = p.cmd.Process.Signal(sig)
			}
		}
	}
	signalOthers(syscall.SIGSTOP)
	defer signalOthers(syscall.SIGCONT)
	return fn()
}

func median(rs []result) result {
	m := rs[0]
	pick := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	m.SectionsPerSec = pick(func(r result) float64 { return r.SectionsPerSec })
	m.HandoffsPerSec = pick(func(r result) float64 { return r.HandoffsPerSec })
	m.P50ms = pick(func(r result) float64 { return r.P50ms })
	m.P99ms = pick(func(r result) float64 { return r.P99ms })
	m.P999ms = pick(func(r result) float64 { return r.P999ms })
	m.CPUmsPer1000 = pick(func(r result) float64 { return r.CPUmsPer1000 })
	m.RSSMB = pick(func(r result) float64 { return r.RSSMB })
	m.Reps = len(rs)
	return m
}

func (rep *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| shape | system | sections/s | handoffs/s | acquire p50 | p99 | p99.9 | server CPU ms / 1000 sections | server RSS |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	byShape := map[string]map[string]result{}
	var order []string
	for _, r := range rep.Results {
		if byShape[r.Shape] == nil {
			byShape[r.Shape] = map[string]result{}
			order = append(order, r.Shape)
		}
		byShape[r.Shape][r.System] = r
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f | %.3f ms | %.3f ms | %.3f ms | %.1f | %.0f MB |\n", r.Shape, r.System,
			r.SectionsPerSec, r.HandoffsPerSec, r.P50ms, r.P99ms, r.P999ms, r.CPUmsPer1000, r.RSSMB)
	}
	fmt.Fprintf(&b, "\nRatios of baton to each: throughput counts real handoffs (the holder changed) where there are any, else sections (N=1); p99 is acquire latency.\n\n| shape | baton/floor | baton/etcd | baton/redis | p99 baton/floor |\n|---|---:|---:|---:|---:|\n")
	rate := func(r result) float64 {
		if r.HandoffsPerSec > 0 {
			return r.HandoffsPerSec
		}
		return r.SectionsPerSec
	}
	ratio := func(a, c float64) string {
		if c == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a/c)
	}
	for _, s := range order {
		bt, ok := byShape[s]["baton"]
		if !ok {
			continue
		}
		fl, et, rd := byShape[s]["floor"], byShape[s]["etcd"], byShape[s]["redis"]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", s, ratio(rate(bt), rate(fl)), ratio(rate(bt), rate(et)),
			ratio(rate(bt), rate(rd)), ratio(bt.P99ms, fl.P99ms))
	}
	if len(rep.KillMs) > 0 {
		ms := slices.Clone(rep.KillMs)
		slices.Sort(ms)
		fmt.Fprintf(&b, "\nbaton holder killed (SIGKILL), next grant: median %.2f ms, max %.2f ms over %d trials\n", ms[len(ms)/2], ms[len(ms)-1], len(ms))
	}
	if ir := rep.Idle; ir != nil {
		fmt.Fprintf(&b, "\n%d idle baton sessions: server RSS %.1f MB before, %.1f MB connected, %.1f MB after %s (max %.1f MB); "+
			"connected: %.0f goroutines, %.1f MB of goroutine stacks, %.1f MB of heap in use; at the end: %.1f MB of stacks, %.1f MB of heap\n",
			ir.Sessions, ir.BeforeMB, ir.ConnectedMB, ir.EndMB, ir.Watched, ir.MaxMB, ir.Goroutines, ir.StackMB, ir.HeapMB,
			ir.EndStackMB, ir.EndHeapMB)
		fifths := make([]string, len(ir.FifthsMB))
		for i, mb := range ir.FifthsMB {
			fifths[i] = fmt.Sprintf("%.1f", mb)
		}
		fmt.Fprintf(&b, "RSS at each fifth of the %s: %s MB\n", ir.Watched, strings.Join(fifths, ", "))
	}
	return b.String()
}
