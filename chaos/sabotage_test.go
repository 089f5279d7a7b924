package main

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestSabotageIsCaught runs real processes with the sabotage switch: workers ignore
// lease.Err() and write without their fence, and the store checks nothing. Frozen
// holders then write after the token has moved on, and the checker must say so. A
// checker that cannot fail proves nothing.
func TestSabotageIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server and workers for about 30 s")
	}
	cfg := defaultRunConfig()
	cfg.For, cfg.Quiet, cfg.Workers, cfg.Seed = 20*time.Second, 5*time.Second, 3, 1
	cfg.Sabotage = true
	cfg.Kinds = []string{stopWorker} // freeze the holder, again and again
	cfg.Holder, cfg.Calm = 1, 0
	cfg.HoldMin, cfg.HoldMax = 100*time.Millisecond, 300*time.Millisecond // a freeze finds it holding
	cfg.Dir = t.TempDir()
	cfg.Log = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	report(&out, cfg, res)
	t.Log("\n" + out.String())
	caught := 0
	for _, r := range res.Checks {
		if r.N == 2 || r.N == 3 {
			caught += r.Violations
		}
	}
	if caught == 0 {
		t.Errorf("sabotaged run: checks 2 and 3 found no violation")
	}
	if res.Applied == 0 {
		t.Errorf("no fault was applied")
	}
}
