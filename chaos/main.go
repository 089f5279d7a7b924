// Command chaos is baton's nemesis and checker: a randomized, seeded, bounded fault
// run against real processes on loopback. It builds the server and a worker that
// uses the Go client package, starts three replicated servers and the workers,
// applies a fault schedule drawn from the seed (kill, freeze and cut off workers;
// HUP and close-connections on the leader; kill a server; kill or freeze the leader,
// or cut its raft traffic; cut a follower's, or the link between the leader and a
// follower; send the raft connections meant for a follower to the other one; kill
// every server), records a history stamped with CLOCK_MONOTONIC,
// and checks it for every safety and liveness claim (checker.go). It exits 1 if
// any check is violated.
//
//	go run ./chaos -for 3m -seed 42 -workers 5
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	cfg := defaultRunConfig()
	var kinds, dir string
	var keep bool
	flag.DurationVar(&cfg.For, "for", cfg.For, "length of the run, its fault-free end included")
	flag.DurationVar(&cfg.Quiet, "quiet", cfg.Quiet, "fault-free end of the run")
	flag.Uint64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule (0: random, printed)")
	flag.IntVar(&cfg.Workers, "workers", cfg.Workers, "worker processes")
	flag.IntVar(&cfg.Servers, "servers", cfg.Servers, "server processes (BATON_BOOTSTRAP_EXPECT); 1 runs a server alone")
	flag.DurationVar(&cfg.TTL, "ttl", cfg.TTL, "session TTL (BATON_SESSION_TTL)")
	flag.BoolVar(&cfg.Sabotage, "sabotage", false, "workers ignore Err and write unfenced, the store does not check: must fail")
	flag.StringVar(&kinds, "faults", strings.Join(allKinds, ","), "fault kinds to draw from")
	flag.Float64Var(&cfg.Holder, "holder", cfg.Holder, "probability that a worker fault aims at the holder")
	flag.IntVar(&cfg.MaxFault, "max-faults", cfg.MaxFault, "at most this many faults")
	flag.StringVar(&dir, "dir", "", "run directory (default: a new temporary one)")
	flag.BoolVar(&keep, "keep", false, "keep the run directory even when every check passes")
	flag.Parse()
	cfg.Kinds = strings.Split(kinds, ",")
	for _, k := range cfg.Kinds {
		if kindWeight[k] == 0 {
			fmt.Fprintf(os.Stderr, "chaos: unknown fault kind %q (kinds: %s)\n", k, strings.Join(allKinds, ","))
			os.Exit(2)
		}
	}
	if cfg.Servers < 1 || cfg.Workers < 1 {
		fmt.Fprintln(os.Stderr, "chaos: -servers and -workers must be at least 1")
		os.Exit(2)
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64N(1 << 31)
	}
	cfg.Log = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "chaos %s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "baton-chaos-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			os.Exit(1)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	cfg.Dir = dir
	fmt.Printf("chaos: seed %d (replay: go run ./chaos -for %s -workers %d -servers %d -seed %d); run directory %s\n",
		cfg.Seed, cfg.For, cfg.Workers, cfg.Servers, cfg.Seed, dir)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: run failed: %v (logs in %s)\n", err, dir)
		os.Exit(1)
	}
	report(os.Stdout, cfg, res)
	if f, err := os.Create(dir + "/report.txt"); err == nil {
		report(f, cfg, res)
		f.Close()
	}
	if res.Violations > 0 {
		fmt.Printf("chaos: FAILED, seed %d; history and logs in %s\n", cfg.Seed, dir)
		os.Exit(1)
	}
	if !keep {
		os.RemoveAll(dir)
	}
}
