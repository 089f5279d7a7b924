package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// runConfig is one chaos run.
type runConfig struct {
	For      time.Duration // faults happen in the first For, less Quiet
	Quiet    time.Duration // the fault-free end of the run (check 7)
	Seed     uint64
	Workers  int
	Servers  int // BATON_BOOTSTRAP_EXPECT
	TTL      time.Duration
	Sabotage bool
	Kinds    []string // fault kinds (all if empty)
	Holder   float64  // probability that a worker fault aims at the holder
	Calm     float64  // probability that a fault comes alone (schedule.go)
	MaxFault int

	HoldMin, HoldMax, ThinkMax time.Duration
	Requeue                    float64
	AcquireTimeout             time.Duration

	Dir                  string // run directory: binaries, logs, state, history
	ServerBin, WorkerBin string // built into Dir when empty
	Log                  func(format string, args ...any)
}

func defaultRunConfig() runConfig {
	return runConfig{For: 3 * time.Minute, Quiet: 8 * time.Second, Workers: 5, Servers: 3, TTL: time.Second, Holder: 0.5, Calm: 0.1,
		MaxFault: 100000, HoldMin: 20 * time.Millisecond, HoldMax: 120 * time.Millisecond,
		ThinkMax: 20 * time.Millisecond, Requeue: 0.5, AcquireTimeout: 30 * time.Second,
		Log: func(string, ...any) {}}
}

// runResult is what a run found.
type runResult struct {
	Plan       []fault
	Applied    int
	ByKind     map[string]int // applied, by kind
	Skipped    int
	Checks     []checkResult
	Violations int
	Final      tokenStatus
	Events     int
	Grants     int
	// Leaders the harness saw change, and what followed each loss of the leader.
	LeaderChanges int
	Losses        []*leaderLoss
	Partial       []*partialCut // what followed the cuts of a follower or of a link to it
	Raft          *raftNetStats // the raft proxies' connections; nil with a server alone
	// MisroutedRefused is how many raft connections the servers refused as meant for
	// another (their counters at the end, since each one's last start); -1 if not
	// read.
	MisroutedRefused int
}

// build compiles the server and the worker into dir/bin.
func build(ctx context.Context, dir string) (server, worker string, err error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "bin")
	for _, pkg := range []string{"server", "chaos/worker"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, filepath.Base(pkg)), "./"+pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build ./%s: %w\n%s", pkg, err, b)
		}
	}
	return filepath.Join(bin, "server"), filepath.Join(bin, "worker"), nil
}

// freshStateDir is the servers' BATON_STATE_DIR in the run directory dir, emptied of
// what a previous run in the same directory (-dir) left there: a server refuses a
// state directory written in the other mode or for other server names, and a run
// starts from nothing in any case (the seed replays a schedule, not a state).
// removed says whether there was anything to remove. Nothing else in dir is
// touched.
func freshStateDir(dir string) (path string, removed bool, err error) {
	path = filepath.Join(dir, "state")
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return path, false, nil
	}
	if err := os.RemoveAll(path); err != nil {
		return "", false, fmt.Errorf("removing the state of a previous run: %w", err)
	}
	return path, true, nil
}

// run is one chaos run: start everything, apply the plan, let the cluster settle
// fault-free for cfg.Quiet, stop the workers and then the server, read the record,
// check the history. Every child is killed when it returns, however it returns.
func run(ctx context.Context, cfg runConfig) (res *runResult, err error) {
	// A hard deadline: the run's own length plus room to start and to stop.
	ctx, cancel := context.WithTimeout(ctx, cfg.For+cfg.Quiet+3*time.Minute)
	defer cancel()
	if cfg.ServerBin == "" {
		if cfg.ServerBin, cfg.WorkerBin, err = build(ctx, cfg.Dir); err != nil {
			return nil, err
		}
	}
	hf, err := os.Create(filepath.Join(cfg.Dir, "history.jsonl"))
	if err != nil {
		return nil, err
	}
	defer hf.Close()
	h := newHistory(hf)
	servers, err := newServers(cfg.Servers)
	if err != nil {
		return nil, err
	}
	stateDir, removed, err := freshStateDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if removed {
		cfg.Log("removed the state a previous run left in %s", stateDir)
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	var raftKey [32]byte // the servers' raft runs over TLS under every fault
	_, _ = rand.Read(raftKey[:])
	c := &cluster{cfg: cfg, h: h, servers: servers, adminToken: hex.EncodeToString(tok[:]), raftKey: base64.StdEncoding.EncodeToString(raftKey[:]),
		stateDir: stateDir, hc: &http.Client{Timeout: 5 * time.Second}, leader: -1, seen: -1,
		crashes: map[string]int{}}
	c.ps = &procs{h: h, logDir: cfg.Dir, onExit: c.onExit}
	if cfg.Servers > 1 {
		var ports []int
		for _, s := range servers {
			ports = append(ports, s.raftPort)
		}
		from := func(conn net.Conn) int { return peerProcess(conn, c.serverPids()) }
		if c.raft, err = newRaftNet(ports, from); err != nil {
			return nil, err
		}
		defer c.raft.close()
	}
	defer c.ps.killAll() // also after a panic: no child outlives the harness
	defer func() {
		c.mu.Lock()
		c.ending = true
		c.mu.Unlock()
	}()
	wctx, stopWatch := context.WithCancel(ctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		c.watch(wctx)
	}()
	defer func() {
		stopWatch()
		<-watching
	}()

	if c.store, err = startStore(h, !cfg.Sabotage); err != nil {
		return nil, err
	}
	defer c.store.close()
	for i := range c.servers {
		if err := c.startServer(i); err != nil {
			return nil, err
		}
	}
	for i := range c.servers {
		if err := c.waitReady(ctx, i, 30*time.Second); err != nil {
			return nil, err
		}
	}
	if _, err := c.waitLeader(ctx, 10*time.Second); err != nil {
		return nil, err
	}
	for i := range cfg.Workers {
		s := &workerSlot{idx: i, name: fmt.Sprintf("w%d", i)}
		for _, srv := range c.servers {
			p, err := startProxy(func() string { return srv.tokenAddr })
			if err != nil {
				return nil, err
			}
			defer p.close()
			s.proxies = append(s.proxies, p)
		}
		c.workers = append(c.workers, s)
	}
	for i := range cfg.Workers {
		if err := c.startWorker(i); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Workers {
		_, started := c.worker(i)
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			return nil, fmt.Errorf("worker w%d had no session within 20s (see %s/w%d.log)", i, cfg.Dir, i)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	start := time.Now()
	faults := plan(planConfig{Seed: cfg.Seed, Workers: cfg.Workers, Servers: cfg.Servers, TTL: cfg.TTL, Start: cfg.TTL,
		End: max(cfg.For-cfg.Quiet, cfg.TTL), Max: cfg.MaxFault, Kinds: cfg.Kinds, Holder: cfg.Holder,
		Calm: cfg.Calm, Recover: (&checkInput{TTL: cfg.TTL}).recoverAfter()})
	cfg.Log("plan: %d faults in %s, then %s without faults", len(faults), cfg.For-cfg.Quiet, cfg.Quiet)
	nem := &nemesis{c: c, h: h, start: start, log: cfg.Log}
	nem.run(ctx, faults)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg.Log("faults done: %d applied, %d skipped; quiet until %s", nem.applied, nem.skipped, cfg.For)
	quiet := time.NewTimer(max(time.Until(start.Add(cfg.For)), cfg.Quiet)) // the experiment's own length
	select {
	case <-quiet.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	// At rest: stop the workers (each gives back what it holds), then read the record.
	c.mu.Lock()
	c.ending = true
	c.mu.Unlock()
	stopping := event.Now()
	h.add(event.Event{Kind: "stopping"})
	done := make(chan struct{}, max(cfg.Workers, cfg.Servers))
	for i := range cfg.Workers {
		p, _ := c.worker(i)
		go func() {
			if err := p.stop(15 * time.Second); err != nil {
				h.add(event.Event{Kind: event.Stuck, W: p.name, Inst: p.inst})
				_ = p.kill(5 * time.Second)
			}
			done <- struct{}{}
		}()
	}
	for range cfg.Workers {
		<-done
	}
	in := &checkInput{Servers: cfg.Servers, TTL: cfg.TTL, HoldMax: cfg.HoldMax, ThinkMax: cfg.ThinkMax, Stopping: stopping}
	for _, s := range c.workers {
		in.Workers = append(in.Workers, s.name)
	}
	if l, err := c.waitLeader(ctx, 20*time.Second); err != nil {
		in.FinalErr = err.Error()
	} else if in.Final, err = c.status(l, "counter"); err != nil {
		in.FinalErr = err.Error()
	}
	misroutedRefused := -1
	if c.raft != nil {
		if n, err := c.misroutedRefusals(); err != nil {
			cfg.Log("reading the servers' raft_misrouted counters: %v", err)
		} else {
			misroutedRefused = n
		}
	}
	stopWatch()
	<-watching
	for i := range c.servers { // all at once, as docker compose down does
		p := c.server(i)
		go func() {
			if err := p.stop(15 * time.Second); err != nil {
				h.add(event.Event{Kind: event.Stuck, W: p.name, Inst: p.inst})
				_ = p.kill(5 * time.Second)
			}
			done <- struct{}{}
		}()
	}
	for range c.servers {
		<-done
	}
	in.Events = h.snapshot()
	res = &runResult{Plan: faults, Applied: nem.applied, ByKind: nem.byKind, Skipped: nem.skipped, Final: in.Final, Events: len(in.Events),
		MisroutedRefused: misroutedRefused}
	if c.raft != nil {
		st := c.raft.stats()
		res.Raft = &st
	}
	for _, e := range in.Events {
		if e.Kind == event.Grant {
			res.Grants++
		}
	}
	res.Checks = check(in)
	a := analyse(in)
	res.LeaderChanges, res.Losses = a.leaderFigures()
	res.Partial = a.partialFigures()
	for _, r := range res.Checks {
		res.Violations += r.Violations
	}
	return res, nil
}

// report prints a run's verdict.
func report(w io.Writer, cfg runConfig, res *runResult) {
	fmt.Fprintf(w, "seed %d, %d workers, TTL %s, %s (sabotage %v): %d faults applied, %d skipped; %d grants; %d events\n",
		cfg.Seed, cfg.Workers, cfg.TTL, cfg.For, cfg.Sabotage, res.Applied, res.Skipped, res.Grants, res.Events)
	kinds := map[string]int{}
	for _, f := range res.Plan {
		kinds[f.Kind]++
	}
	var ks []string
	for _, k := range allKinds {
		if kinds[k] > 0 {
			ks = append(ks, fmt.Sprintf("%s %d (%d)", k, kinds[k], res.ByKind[k]))
		}
	}
	fmt.Fprintf(w, "planned (applied): %s\n", strings.Join(ks, ", "))
	fmt.Fprintf(w, "servers %d; leader changes seen %d\n", cfg.Servers, res.LeaderChanges)
	if res.Raft != nil {
		fmt.Fprintf(w, "raft connections through the proxies %d, of unknown origin %d (blocked while any server is cut, or a link to theirs), sent to another server by a misroute %d\n",
			res.Raft.Accepted, res.Raft.Unknown, res.Raft.Misrouted)
		if res.MisroutedRefused >= 0 {
			fmt.Fprintf(w, "raft connections the servers refused as meant for another (raft_misrouted, their counters at the end, since each one's last start) %d\n",
				res.MisroutedRefused)
		}
	}
	for _, x := range res.Losses {
		fmt.Fprintf(w, "    after %s\n", x)
	}
	for _, x := range res.Partial {
		fmt.Fprintf(w, "    after %s\n", x)
	}
	for _, r := range res.Checks {
		fmt.Fprintf(w, "check %d %-32s violations %d: %s\n", r.N, r.Name, r.Violations, r.Counts)
		for _, ex := range r.Examples {
			fmt.Fprintf(w, "    %s\n", ex)
		}
	}
	fmt.Fprintf(w, "violations: %d\n", res.Violations)
}
