package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/replica"
)

// runFailover measures, trials times, how long a three-node internal/replica cluster
// with DefaultConfig's timeouts and durable stores takes from the leader's loss to
// the first command committed by a new leader: what a client waits through when the
// leader dies. The leader is closed without handing over, so the followers learn
// of the loss only by missing heartbeats, as after a kill -9.
func runFailover(dir string, trials int) error {
	var elect, commit []time.Duration
	for trial := range trials {
		e, c, err := failoverOnce(filepath.Join(dir, fmt.Sprintf("failover-%d", trial)))
		if err != nil {
			return fmt.Errorf("trial %d: %w", trial, err)
		}
		elect, commit = append(elect, e), append(commit, c)
	}
	d := replica.DefaultConfig()
	fmt.Printf("# failover: %d trials, 3 nodes, HeartbeatTimeout %s, ElectionTimeout %s, LeaderLeaseTimeout %s\n",
		trials, d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout)
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"leader closed -> new leader known", elect}, {"leader closed -> first commit", commit}} {
		p50, p99 := percentiles(m.d)
		fmt.Printf("%-36s min %7s  p50 %7s  max %7s\n", m.name, minDur(m.d).Round(time.Millisecond), p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	}
	return nil
}

func minDur(d []time.Duration) time.Duration {
	m := d[0]
	for _, v := range d {
		m = min(m, v)
	}
	return m
}

// nopSM is a state machine that keeps nothing.
type nopSM struct{}

func (nopSM) Apply(e []replica.Entry) []any  { return make([]any, len(e)) }
func (nopSM) Snapshot() (io.WriterTo, error) { return strings.NewReader(""), nil }
func (nopSM) Restore(io.Reader) error        { return nil }

func failoverOnce(dir string) (elect, commit time.Duration, err error) {
	if err := os.RemoveAll(dir); err != nil { // a failed run's leftovers
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	var nodes []*replica.Node
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	var servers []replica.Server
	for i := range 3 {
		cfg := replica.DefaultConfig()
		cfg.ID = fmt.Sprintf("n%d", i)
		cfg.Dir = filepath.Join(dir, cfg.ID)
		cfg.BindAddr = "127.0.0.1:0"
		n, err := replica.Open(cfg, nopSM{})
		if err != nil {
			return 0, 0, err
		}
		nodes = append(nodes, n)
		servers = append(servers, replica.Server{ID: n.ID(), Addr: n.Addr(), Voter: true})
	}
	for _, n := range nodes {
		if err := n.Bootstrap(servers); err != nil {
			return 0, 0, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, err := applyOnLeader(ctx, nodes, "x")
	for err == nil && !leader.IsLeader() { // it lost the leadership since: pick again
		leader, err = applyOnLeader(ctx, nodes, "x")
	}
	if err != nil {
		return 0, 0, err
	}
	var rest []*replica.Node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	start := time.Now()
	leader.Close()
	// Wait for a survivor to know a new leader, then apply there until it commits.
	for {
		l, changed := rest[0].Leadership()
		if l.LeaderID != "" && l.LeaderID != leader.ID() {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
	elect = time.Since(start)
	if _, err := applyOnLeader(ctx, rest, "y"); err != nil {
		return 0, 0, err
	}
	return elect, time.Since(start), nil
}

// applyOnLeader applies cmd on whichever of nodes leads, following the leadership
// while it moves, and returns the node that committed it.
func applyOnLeader(ctx context.Context, nodes []*replica.Node, cmd string) (*replica.Node, error) {
	for {
		for _, n := range nodes {
			if !n.IsLeader() {
				continue
			}
			_, err := n.Apply(ctx, []byte(cmd))
			if err == nil {
				return n, nil
			}
			if !errors.Is(err, replica.ErrNotLeader) && !errors.Is(err, replica.ErrUnknownOutcome) {
				return nil, err
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		time.Sleep(time.Millisecond) // between polls while an election settles
	}
}
