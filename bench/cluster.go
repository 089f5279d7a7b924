package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/baton-dev/baton"
)

// baton-cluster is baton as compose deploys it: three servers, each in a child process
// of its own with a state directory of its own, that find each other through
// memberlist (BATON_JOIN) and replicate the state by raft (BATON_BOOTSTRAP_EXPECT=3).
// Only the leader serves clients. Each child says on its stdout, after its address
// line, "leading" and "following" as it starts and stops serving, so that the
// benchmark knows the leader without asking the servers while it measures.
//
// Every system's servers are stopped (SIGSTOP) while another is measured. When the
// three continue, their raft timers have all expired: the leader finds it has not
// heard from a quorum within its lease and steps down, the followers that they have
// not heard from a leader, and an election follows. So before each measurement the
// benchmark waits for one server to have led for leaderStable (settle).

// clusterSize is how many servers baton-cluster runs.
const clusterSize = 3

// leaderStable is how long one server must have led, alone, before a measurement on
// the cluster starts: longer than raft's election timeout (internal/replica), so that
// the election the continue set off is over.
const leaderStable = 2 * time.Second

// member configures one server of the cluster: the -member value of its child.
type member struct {
	Name string   `json:"name"`
	Join []string `json:"join"`
	Key  string   `json:"key,omitempty"` // BATON_CLUSTER_KEY: raft over TLS, sessions proven
}

// benchKey is baton-cluster-keyed's cluster key (base64 of 32 bytes).
const benchKey = "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktISE="

// startCluster starts the servers, each expecting the others, and waits for a leader.
// Every port is the kernel's pick (0): the first server starts joining nobody, and
// the others join it at the gossip address it reported. Ports picked in advance and
// handed to a child later could meanwhile be taken by another child's own picks.
func startCluster() (*proc, error) { return startClusterWith("") }

// startKeyedCluster is startCluster with a cluster key.
func startKeyedCluster() (*proc, error) { return startClusterWith(benchKey) }

func startClusterWith(key string) (*proc, error) {
	p := &proc{}
	if key != "" {
		var err error
		if p.key, err = base64.StdEncoding.DecodeString(key); err != nil {
			return nil, err
		}
	}
	var join []string
	for i := range clusterSize {
		spec, _ := json.Marshal(member{Name: fmt.Sprintf("bench-s%d", i+1), Join: join, Key: key})
		c, err := startChild("baton-cluster", "-member", string(spec))
		if err == nil && c.gossip == "" {
			err = errors.New("baton-cluster: a member reported no gossip address")
		}
		if err != nil {
			p.stop()
			return nil, err
		}
		if join == nil {
			join = []string{c.gossip}
		}
		p.members = append(p.members, c)
		go c.followLeading()
	}
	if err := p.settle(60 * time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// followLeading reads a cluster child's "leading" and "following" lines until it
// exits.
func (p *proc) followLeading() {
	sc := bufio.NewScanner(p.out)
	for sc.Scan() {
		switch sc.Text() {
		case "leading":
			p.leads.Add(1)
			p.leading.Store(true)
		case "following":
			p.leading.Store(false)
		}
	}
}

// leader returns the one member that serves clients, nil if none does or, for a
// moment during a change, more than one says so.
func (p *proc) leader() *proc {
	var l *proc
	for _, m := range p.members {
		if m.leading.Load() {
			if l != nil {
				return nil
			}
			l = m
		}
	}
	return l
}

// leaderChanges counts the times a member started to lead.
func (p *proc) leaderChanges() int64 {
	var n int64
	for _, m := range p.members {
		n += m.leads.Load()
	}
	return n
}

// settle waits, up to timeout, until one member has led for leaderStable with no
// change of leader in between.
func (p *proc) settle(timeout time.Duration) error {
	var cur *proc
	var changes int64
	var since time.Time
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) { // polling interval
		l, n := p.leader(), p.leaderChanges()
		if l != cur || n != changes {
			cur, changes, since = l, n, time.Now()
			continue
		}
		if cur != nil && time.Since(since) >= leaderStable {
			return nil
		}
	}
	return fmt.Errorf("baton-cluster: no server led for %s within %s", leaderStable, timeout)
}

// resolveLeader is the clients' Resolve: the token address of the member that leads.
func (p *proc) resolveLeader(context.Context) (string, error) {
	if l := p.leader(); l != nil {
		return l.addr, nil
	}
	return "", errors.New("baton-cluster: no server leads")
}

// isMember is the clients' Follow: a not_leader is followed to the cluster's own
// servers only.
func (p *proc) isMember(addr string) bool {
	for _, m := range p.members {
		if m.addr == addr {
			return true
		}
	}
	return false
}

func dialCluster(p *proc, id int) (locker, error) {
	return dialBatonWith(baton.Config{Resolve: p.resolveLeader, Follow: p.isMember, ClusterKey: p.key}, id)
}

// leadsOf is a cluster's leaderChanges, 0 for any other system.
func leadsOf(p *proc) int64 {
	if p.members == nil {
		return 0
	}
	return p.leaderChanges()
}

// watchLeading reports, on the child's stdout, each time srv starts or stops
// serving clients, until stop is closed.
func watchLeading(leading func() bool, stop <-chan struct{}) {
	was := false
	t := time.NewTicker(10 * time.Millisecond) // how soon the benchmark learns of a change
	defer t.Stop()
	for {
		if now := leading(); now != was {
			was = now
			if now {
				fmt.Println("leading")
			} else {
				fmt.Println("following")
			}
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
