// Command bench puts baton beside the physical floor and its peers, in one run, on
// loopback: every server in a process of its own, every client session in this one.
//
// Workload: N sessions contend for one token; each loops acquire, critical section
// (increment a shared int and check nobody else is inside), release; no work. Shapes:
// N = 1, 8, 64, 512 on one token; T tokens with 4 sessions each; N=8 on one token
// beside I idle tokens (-idle-tokens, on servers of their own); K idle baton
// sessions (server memory); holders killed with SIGKILL (next grant). Systems:
//
//	floor          a minimal raw-TCP FIFO token server: one byte a message, one round trip a handoff
//	baton          the real server and client package: sessions, fences, metrics on
//	baton-durable  the same with a state directory: a raft log of one server
//	baton-cluster  three durable servers replicating one log, as compose runs them (not by default)
//	baton-cluster-keyed  the same with a cluster key: raft over TLS, sessions proven (not by default)
//	etcd           concurrency.Mutex on an embedded etcd
//	redis          Debian's redis-server, SET NX PX retried every 1 ms
//
// Each measurement of a durable baton system on one token is held to the disk's
// append+fsync timed in its state directory right before and right after it
// (-fsync): one durable write's time, the ceiling of a durable handoff, of the same
// moment.
//
//	cd bench && go run . -duration 10s -reps 3      # the README's table
//	cd bench && go run . -short                      # CI: seconds, no timing asserted, every system
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
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gometrics "github.com/hashicorp/go-metrics"
)

type options struct {
	systems    []string
	clients    []int
	tokens     int
	idleTokens int
	idle       int
	idleFor    time.Duration
	duration   time.Duration
	warmup     time.Duration
	reps       int
	kills      int
	fsync      time.Duration
}

// defaultSystems are measured when -systems is not given. baton-cluster is not among
// them: with it the full run would take several minutes longer than its budget.
const defaultSystems = "floor,baton,baton-durable,etcd,redis"

func main() {
	serve := flag.String("serve", "", "internal: run this system's server and print its address")
	memberSpec := flag.String("member", "", "internal: with -serve baton-cluster, the member's configuration")
	hold := flag.String("hold", "", "internal: hold the token at this baton address until killed")
	systemsFlag := flag.String("systems", defaultSystems, "systems to measure (also: baton-cluster, baton-cluster-keyed)")
	clientsFlag := flag.String("clients", "1,8,64,512", "sessions on one token, per shape")
	tokens := flag.Int("tokens", 1000, "tokens for the many-tokens shape, 4 sessions each (0 skips)")
	idleTokens := flag.Int("idle-tokens", 0, "also run N=8 on one token beside this many idle tokens, on servers of their own (systems that keep tokens; 0 skips)")
	fsync := flag.Duration("fsync", 2*time.Second, "time the disk's append+fsync in the state directory for half this long right before, and half right after, each measurement of a durable baton system on one token (0 skips)")
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
		runServer(*serve, *memberSpec)
		return
	}
	if *hold != "" {
		runHolder(*hold)
		return
	}
	// BENCH_CLIENT_CPUPROFILE profiles this process: the client sessions' side.
	defer cpuProfile("BENCH_CLIENT_CPUPROFILE", "")()
	o := options{systems: strings.Split(*systemsFlag, ","), tokens: *tokens, idleTokens: *idleTokens, idle: *idle,
		idleFor: *idleFor, duration: *duration, warmup: *warmup, reps: *reps, kills: *kills, fsync: *fsync}
	for _, f := range strings.Split(*clientsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fail(fmt.Errorf("-clients: bad count %q", f))
		}
		o.clients = append(o.clients, n)
	}
	if *short {
		o.clients, o.tokens, o.idleTokens, o.idle, o.idleFor = []int{1, 8}, 50, 100, 200, 2*time.Second
		o.duration, o.warmup, o.reps, o.kills, o.fsync = time.Second, 200*time.Millisecond, 1, 3, 200*time.Millisecond
		if !flagSet("systems") { // CI runs every system, so that none stops working unseen
			o.systems = append(o.systems, "baton-cluster", "baton-cluster-keyed")
		}
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
// the profiling knobs: BENCH_CPUPROFILE (CPU profile of the run; a cluster member
// adds its name to the file's: PATH.bench-s1), BENCH_BLOCKPROFILE (block and mutex
// profiles, written at exit to PATH and PATH.mutex, with the member's name too),
// BENCH_TRACE (an execution trace of the run: `go tool trace -pprof=sched` tells
// how long goroutines waited to run once woken), BENCH_RAFT_METRICS (raft's and
// raft-wal's own timings, summed over the run, written at exit), BENCH_MEMPROFILE (heap profile on
// SIGUSR1; the idle shape sends it at the end of its watch) and BENCH_SERVER_PROCS
// (GOMAXPROCS, apart from the benchmark process's). spec is a cluster member's
// -member.
func runServer(kind, spec string) {
	var m *member
	suffix := ""
	if spec != "" {
		m = new(member)
		if err := json.Unmarshal([]byte(spec), m); err != nil {
			fail(fmt.Errorf("-member: %w", err))
		}
		suffix = "." + m.Name
	}
	defer cpuProfile("BENCH_CPUPROFILE", suffix)()
	defer blockProfile("BENCH_BLOCKPROFILE", suffix)()
	defer execTrace("BENCH_TRACE", suffix)()
	defer raftMetrics("BENCH_RAFT_METRICS", suffix)()
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
	if err := serveChild(kind, m, func() { <-sig }); err != nil {
		fail(err)
	}
}

// cpuProfile starts a CPU profile into the file the environment variable env names,
// with suffix added, if it is set; the result stops it.
func cpuProfile(env, suffix string) (stop func()) {
	f := createNamed(env, suffix)
	if f == nil {
		return func() {}
	}
	_ = pprof.StartCPUProfile(f)
	return pprof.StopCPUProfile
}

// createNamed creates the file the environment variable env names, with suffix
// added; nil if env is not set.
func createNamed(env, suffix string) *os.File {
	path := os.Getenv(env)
	if path == "" {
		return nil
	}
	f, err := os.Create(path + suffix)
	if err != nil {
		fail(err)
	}
	return f
}

// blockProfile records every blocking event and mutex contention from now on, if
// the environment variable env names a file, and the result writes both profiles
// (the mutex one to the path plus ".mutex"), with suffix added.
func blockProfile(env, suffix string) (write func()) {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	runtime.SetBlockProfileRate(1)
	runtime.SetMutexProfileFraction(1)
	return func() {
		for name, file := range map[string]string{"block": path + suffix, "mutex": path + ".mutex" + suffix} {
			f, err := os.Create(file)
			if err != nil {
				fail(err)
			}
			_ = pprof.Lookup(name).WriteTo(f, 0)
			f.Close()
		}
	}
}

// execTrace writes an execution trace into the file the environment variable env
// names, with suffix added, if it is set; the result stops it.
func execTrace(env, suffix string) (stop func()) {
	f := createNamed(env, suffix)
	if f == nil {
		return func() {}
	}
	if err := trace.Start(f); err != nil {
		fail(err)
	}
	return func() { trace.Stop(); f.Close() }
}

// raftMetrics collects what hashicorp/raft measures of itself (its go-metrics
// timers: the leader's log write, each AppendEntries round trip, a follower's log
// write, the commit time, the state machine's apply) for the whole run, if the
// environment variable env names a file, and the result writes each timer's count,
// mean and maximum there, with suffix added. raft reports to go-metrics' global
// sink, which is this process's own: the server sets none.
func raftMetrics(env, suffix string) (write func()) {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	sink := gometrics.NewInmemSink(24*time.Hour, 24*time.Hour) // one interval: the whole run
	cfg := gometrics.DefaultConfig("")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics, cfg.EnableServiceLabel = false, false, false
	if _, err := gometrics.NewGlobal(cfg, sink); err != nil {
		fail(err)
	}
	return func() {
		var b strings.Builder
		fmt.Fprintf(&b, "%-60s %10s %12s %12s\n", "timer", "count", "mean ms", "max ms")
		for _, iv := range sink.Data() {
			names := make([]string, 0, len(iv.Samples))
			for name := range iv.Samples {
				names = append(names, name)
			}
			slices.Sort(names)
			for _, name := range names {
				v := iv.Samples[name]
				fmt.Fprintf(&b, "%-60s %10d %12.3f %12.3f\n", name, v.Count, v.Sum/float64(max(v.Count, 1)), v.Max)
			}
		}
		if err := os.WriteFile(path+suffix, []byte(b.String()), 0o644); err != nil {
			fail(err)
		}
	}
}

// flagSet says whether the flag named name was given.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

type report struct {
	When    time.Time `json:"when"`
	Options string    `json:"options"`
	Results []result  `json:"results"` // medians per shape and system
	// Adjacent are the measurements of durable baton systems on one token, each with
	// the disk's append+fsync timed right before and right after it, for AdjacentEach
	// in all.
	Adjacent     []adjacent  `json:"adjacent_disk,omitempty"`
	AdjacentEach string      `json:"adjacent_disk_time,omitempty"`
	Idle         *idleResult `json:"idle,omitempty"`
	KillMs       []float64   `json:"next_grant_after_kill_ms,omitempty"`
	Overlaps     int64       `json:"overlaps"`
}

type shape struct {
	name     string
	sessions int
	tokens   int
	// idleTokens are made beforehand, on servers of their own.
	idleTokens int
}

// idleTokensSessions is the sessions on one token beside -idle-tokens idle ones.
const idleTokensSessions = 8

// idleKey marks, in run's map of servers, a system's servers for the idle-tokens shape.
const idleKey = "+idle"

func run(o options) (*report, error) {
	rep := &report{When: time.Now().UTC(), Options: fmt.Sprintf("%+v", o)}
	var shapes []shape
	for _, n := range o.clients {
		shapes = append(shapes, shape{name: fmt.Sprintf("N=%d, one token", n), sessions: n, tokens: 1})
	}
	if o.tokens > 0 {
		shapes = append(shapes, shape{name: fmt.Sprintf("%d tokens × 4 sessions", o.tokens), sessions: 4 * o.tokens, tokens: o.tokens})
	}
	if o.idleTokens > 0 {
		shapes = append(shapes, shape{name: idleShapeName(o.idleTokens), sessions: idleTokensSessions, tokens: 1, idleTokens: o.idleTokens})
	}
	sv := &servers{procs: map[string]*proc{}, stopped: map[string]bool{}}
	defer sv.stopAll()
	for _, name := range o.systems {
		sys := systems[name]
		if sys == nil {
			return nil, fmt.Errorf("unknown system %q", name)
		}
		p, err := sys.start()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		sv.procs[name] = p
	}
	if o.idleTokens > 0 {
		for _, name := range o.systems {
			if sys := systems[name]; sys.keeps {
				if err := startIdle(sv, sys, o.idleTokens); err != nil {
					return nil, fmt.Errorf("%s with %d idle tokens: %w", name, o.idleTokens, err)
				}
			}
		}
	}
	if o.fsync > 0 {
		rep.AdjacentEach = o.fsync.String()
	}
	all := map[string][]result{}
	for r := 0; r < o.reps; r++ {
		for si, sh := range shapes {
			for _, name := range o.systems {
				sys := systems[name]
				if sh.tokens > 1 && !sys.multi || sh.idleTokens > 0 && !sys.keeps {
					continue
				}
				key := name
				if sh.idleTokens > 0 {
					key += idleKey
				}
				token := fmt.Sprintf("r%d-s%d", r, si)
				var res result
				var before, after []time.Duration
				p := sv.procs[key]
				err := sv.alone(key, func() (err error) {
					if sys.settle != nil {
						if err := sys.settle(p); err != nil {
							return err
						}
					}
					measure := func() error {
						res, err = contend(sys, p, sh, token, o.warmup, o.duration)
						if sys.drain != nil {
							sys.drain(p) // before the disk is timed after: the goodbyes commit
						}
						return err
					}
					if dir := p.stateDir(); dir != "" && sh.tokens == 1 && o.fsync > 0 {
						before, after, err = timeAround(dir, o.fsync, measure)
						return err
					}
					return measure()
				})
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", name, sh.name, err)
				}
				if before != nil {
					a := adjacent{Shape: sh.name, System: name, Rep: r + 1, Rate: rate(res), Before: summarize(p.stateDir(), before),
						After: summarize(p.stateDir(), after), Both: summarize(p.stateDir(), append(before, after...))}
					p50, mean, _, _ := a.ratios()
					fmt.Fprintf(os.Stderr, "rep %d %-24s %-13s disk p50/mean before %.3f/%.3f ms, after %.3f/%.3f ms: %.2f× of 1/p50, %.2f× of 1/mean\n",
						r+1, sh.name, name, a.Before.P50ms, a.Before.MeanMs, a.After.P50ms, a.After.MeanMs, p50, mean)
					rep.Adjacent = append(rep.Adjacent, a)
				}
				moved := ""
				if res.LeaderChanges > 0 {
					moved = fmt.Sprintf(" (the leadership moved %d times while measured)", res.LeaderChanges)
				}
				fmt.Fprintf(os.Stderr, "rep %d %-24s %-13s %9.0f sections/s p99 %.3f ms%s\n", r+1, sh.name, name, res.SectionsPerSec, res.P99ms, moved)
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
	if o.kills > 0 && sv.procs["baton"] != nil {
		if err := sv.alone("baton", func() (err error) { rep.KillMs, err = killTrials(sv.procs["baton"], o.kills); return err }); err != nil {
			return nil, err
		}
	}
	if o.idle > 0 && slices.Contains(o.systems, "baton") {
		// The idle shape starts a server of its own: every other one is paused.
		if err := sv.alone("", func() (err error) { rep.Idle, err = idleSessions(o.idle, o.idleFor); return err }); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// servers are a run's servers, by system name (and idleKey), and which of them are
// stopped (SIGSTOP).
type servers struct {
	procs   map[string]*proc
	stopped map[string]bool
}

// alone runs fn with every server but name's stopped (SIGSTOP) and name's running.
// An idle server still runs timers and background work (a freshly started etcd
// most of all: one pass of all four systems at N=512, just started, gave the floor
// and baton 30k handoffs/s, against 38k to 46k with the two alone, and 43k and 39k
// with the others stopped), and the system measured should have the cores to
// itself. No client is connected to a stopped server.
//
// The others stay stopped afterwards, until the alone that runs them: continued for
// the moment between two measurements, a server would wake to timers that expired
// while it was stopped (a raft cluster starts an election, memberlist suspects its
// peers) and be stopped again in the middle of what they started.
func (sv *servers) alone(name string, fn func() error) error {
	for n, p := range sv.procs {
		if n != name && !sv.stopped[n] {
			p.signal(syscall.SIGSTOP)
			sv.stopped[n] = true
		}
	}
	if p := sv.procs[name]; p != nil && sv.stopped[name] {
		p.signal(syscall.SIGCONT)
		sv.stopped[name] = false
	}
	return fn()
}

// stopAll continues every server and stops it.
func (sv *servers) stopAll() {
	var wg sync.WaitGroup
	for n, p := range sv.procs {
		if sv.stopped[n] {
			p.signal(syscall.SIGCONT)
		}
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
}

// rate is what a result's ratios compare: real handoffs (the holder changed) where
// there are any, else sections (N=1).
func rate(r result) float64 {
	if r.HandoffsPerSec > 0 {
		return r.HandoffsPerSec
	}
	return r.SectionsPerSec
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
	m.CommitsPerSection = pick(func(r result) float64 { return r.CommitsPerSection })
	m.CommitMs = pick(func(r result) float64 { return r.CommitMs })
	m.Reps = len(rs)
	m.LeaderChanges = 0
	for _, r := range rs {
		m.LeaderChanges += r.LeaderChanges
	}
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
		if fl.Reps+et.Reps+rd.Reps == 0 { // none of them ran this shape
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", s, ratio(rate(bt), rate(fl)), ratio(rate(bt), rate(et)),
			ratio(rate(bt), rate(rd)), ratio(bt.P99ms, fl.P99ms))
	}
	rep.durableMarkdown(&b, byShape, order, ratio)
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

// durableMarkdown writes the durable systems' ratios: to the disk's ceiling of the
// same moment, to baton in memory, to etcd, and with idle tokens to without.
func (rep *report) durableMarkdown(b *strings.Builder, byShape map[string]map[string]result, order []string,
	ratio func(a, c float64) string) {
	rep.adjacentMarkdown(b)
	has := func(system string) bool {
		for _, s := range order {
			if _, ok := byShape[s][system]; ok {
				return true
			}
		}
		return false
	}
	if !has("baton-durable") && !has("baton-cluster") {
		return
	}
	fmt.Fprintf(b, "\nDurable baton: baton-durable is one server with a state directory, baton-cluster three replicating one log "+
		"(its CPU and RSS are the three servers' sums).\n\n"+
		"The disk columns are the medians of the per-repetition ratios above.\n\n"+
		"| shape | durable/in memory | durable/disk ceiling (1/p50) | durable/(1/mean) | cluster/in memory | cluster/durable | cluster/etcd | cluster p99/durable p99 |\n"+
		"|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range order {
		r := byShape[s]
		du, okDu := r["baton-durable"]
		cl, okCl := r["baton-cluster"]
		if !okDu && !okCl {
			continue
		}
		mem, et := rate(r["baton"]), rate(r["etcd"])
		ceil, meanCeil := "–", "–"
		if p50, mean, ok := rep.adjacentMedians(s, "baton-durable"); ok {
			ceil, meanCeil = fmt.Sprintf("%.2f×", p50), fmt.Sprintf("%.2f×", mean)
		}
		cells := []string{"–", ceil, meanCeil, "–", "–", "–", "–"}
		if okDu {
			cells[0] = ratio(rate(du), mem)
		}
		if okCl {
			cells[3], cells[5] = ratio(rate(cl), mem), ratio(rate(cl), et)
			if okDu {
				cells[4], cells[6] = ratio(rate(cl), rate(du)), ratio(cl.P99ms, du.P99ms)
			}
		}
		fmt.Fprintf(b, "| %s | %s |\n", s, strings.Join(cells, " | "))
	}
	// What a handoff cost the log: commits per section (each one log write on every
	// server) and how long one took on the leader.
	fmt.Fprintf(b, "\nRaft commits per critical section, and a commit's mean latency on the leader (baton_raft_commit_seconds):\n\n"+
		"| shape | system | commits / section | mean commit |\n|---|---|---:|---:|\n")
	for _, s := range order {
		for _, name := range []string{"baton-durable", "baton-cluster"} {
			if r, ok := byShape[s][name]; ok && r.CommitsPerSection > 0 {
				fmt.Fprintf(b, "| %s | %s | %.2f | %.3f ms |\n", s, name, r.CommitsPerSection, r.CommitMs)
			}
		}
	}
	// The idle-tokens shape against the same shape without them.
	for _, s := range order {
		idle := byShape[s]
		base := byShape[fmt.Sprintf("N=%d, one token", idleTokensSessions)]
		if !strings.HasSuffix(s, "idle tokens") || base == nil {
			continue
		}
		fmt.Fprintf(b, "\n%s against N=%d without them (servers of their own, the same run):\n\n| system | without | with | with/without | p99 with/without |\n|---|---:|---:|---:|---:|\n",
			s, idleTokensSessions)
		for _, name := range []string{"baton", "baton-durable", "baton-cluster"} {
			w, okW := idle[name]
			wo, okWo := base[name]
			if okW && okWo {
				fmt.Fprintf(b, "| %s | %.0f | %.0f | %s | %s |\n", name, rate(wo), rate(w), ratio(rate(w), rate(wo)), ratio(w.P99ms, wo.P99ms))
			}
		}
	}
	for _, s := range order {
		if cl, ok := byShape[s]["baton-cluster"]; ok && cl.LeaderChanges > 0 {
			fmt.Fprintf(b, "\nbaton-cluster, %s: the leadership moved %d times while measured.\n", s, cl.LeaderChanges)
		}
	}
}
