package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Fault kinds. A worker fault takes one worker; a server fault takes one server,
// the leader, a follower, the leader and a follower (cut-link), both followers
// (misroute) or, for restart-all, every server.
const (
	killWorker  = "kill-worker"  // SIGKILL, restarted after Dur
	stopWorker  = "stop-worker"  // SIGSTOP for Dur, then SIGCONT
	partition   = "partition"    // its proxies hold or drop bytes for Dur
	resetWorker = "reset-worker" // its proxies reset every connection both ways, then hold for Dur
	hupServer   = "hup-server"   // SIGHUP the leader: restart in place
	closeConns  = "close-conns"  // POST /admin/close-connections to the leader
	killServer  = "kill-server"  // SIGKILL a server drawn by the plan, restarted on its state after Dur
	killLeader  = "kill-leader"  // SIGKILL the leader, restarted on its state after Dur
	pauseLeader = "pause-leader" // SIGSTOP the leader for Dur, then SIGCONT
	cutLeader   = "cut-leader"   // blackhole the leader's raft traffic for Dur (raftnet.go); its clients still reach it
	cutFollower = "cut-follower" // blackhole a follower's raft traffic for Dur; the leader keeps a quorum
	cutLink     = "cut-link"     // blackhole the raft link between the leader and a follower for Dur; both reach the third
	misroute    = "misroute"     // new raft connections to a follower reach the other follower for Dur (misroute.go)
	restartAll  = "restart-all"  // SIGKILL every server, restarted on their state after Dur
)

var allKinds = []string{killWorker, stopWorker, partition, resetWorker, hupServer, closeConns, killServer, killLeader, pauseLeader,
	cutLeader, cutFollower, cutLink, misroute, restartAll}

// weights of the kinds in a schedule: the faults that race with leases most often.
var kindWeight = map[string]int{killWorker: 3, stopWorker: 4, partition: 4, resetWorker: 2, hupServer: 2, closeConns: 2,
	killServer: 2, killLeader: 3, pauseLeader: 3, cutLeader: 3, cutFollower: 2, cutLink: 2, misroute: 2, restartAll: 1}

func isServerFault(kind string) bool {
	switch kind {
	case hupServer, closeConns, killServer, killLeader, pauseLeader, cutLeader, cutFollower, cutLink, misroute, restartAll:
		return true
	}
	return false
}

// aimsAtLeader says whether a server fault finds its target when it starts: the
// server that leads then.
func aimsAtLeader(kind string) bool {
	return kind == hupServer || kind == closeConns || kind == killLeader || kind == pauseLeader || kind == cutLeader
}

// needsRaftNet says whether a fault acts on raft traffic through the raft proxies
// (a cut, or a misroute): a server alone has none, and is spared these.
func needsRaftNet(kind string) bool {
	return kind == cutLeader || kind == cutFollower || kind == cutLink || kind == misroute
}

// losesLeader says whether a fault takes the leader away (killed, frozen, or cut off
// from the other servers): the others elect another, or, for restart-all, the
// servers elect one when they are back.
func losesLeader(kind string) bool {
	return kind == killLeader || kind == pauseLeader || kind == cutLeader || kind == restartAll
}

// fault is one planned fault. The plan is a pure function of the seed; a fault
// aimed at the holder, the leader or a follower learns its target when it starts.
type fault struct {
	ID       int
	At       time.Duration // from the start of the run
	Kind     string
	Worker   int           // worker faults: the target, unless the holder is aimed at
	Holder   bool          // aim at whoever holds the token then
	Server   int           // kill-server: the target
	Follower int           // cut-follower, cut-link, misroute: the target is the Follower-th server that does not lead when it starts
	Dur      time.Duration // how long it lasts (0 for hup-server, close-conns)
	Mode     proxyMode     // partition: hold or drop; reset-worker: reset
}

func (f fault) String() string {
	s := fmt.Sprintf("#%d %6.2fs %s", f.ID, f.At.Seconds(), f.Kind)
	switch {
	case !isServerFault(f.Kind) && f.Holder:
		s += " holder"
	case !isServerFault(f.Kind):
		s += fmt.Sprintf(" w%d", f.Worker)
	case f.Kind == killServer:
		s += fmt.Sprintf(" s%d", f.Server+1)
	}
	if f.Kind == partition {
		s += " " + f.Mode.String()
	}
	if f.Dur > 0 {
		s += fmt.Sprintf(" %.2fs", f.Dur.Seconds())
	}
	return s
}

// planConfig bounds a schedule.
type planConfig struct {
	Seed    uint64
	Workers int
	Servers int
	TTL     time.Duration
	Start   time.Duration // first fault no earlier
	End     time.Duration // every fault healed by then
	Max     int           // at most this many faults
	Kinds   []string      // allowed kinds (all if empty)
	Holder  float64       // probability that a worker fault aims at the holder
	// Calm is the probability that a fault comes alone: every earlier one has healed
	// and recovered (Recover) before it starts, and it has before the next starts.
	// Isolated faults measure the time to the next grant.
	Calm    float64
	Recover time.Duration
}

// plan draws a seeded, bounded schedule: faults start a random 0.1 to 1.5 TTL apart,
// so that they often overlap, or (with probability Calm) alone, with a calm before
// and after; each is healed before End.
func plan(c planConfig) []fault {
	rng := rand.New(rand.NewPCG(c.Seed, 0x6e656d65736973)) // "nemesis"
	kinds := c.Kinds
	if len(kinds) == 0 {
		kinds = allKinds
	}
	total := 0
	for _, k := range kinds {
		total += kindWeight[k]
	}
	ttl := c.TTL
	between := func(lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}
	var out []fault
	at, healed, calmNext := c.Start, c.Start, false
	for len(out) < c.Max {
		// A calm fault starts after every earlier one has healed and recovered, and
		// the next starts after it has: it is isolated.
		calm := rng.Float64() < c.Calm
		if calm || calmNext {
			at = max(at, healed+c.Recover) + between(ttl/5, ttl)
		} else {
			at += between(ttl/10, 3*ttl/2)
		}
		calmNext = calm
		pick := rng.IntN(total)
		kind := kinds[0]
		for _, k := range kinds {
			if pick < kindWeight[k] {
				kind = k
				break
			}
			pick -= kindWeight[k]
		}
		f := fault{ID: len(out) + 1, At: at, Kind: kind, Worker: rng.IntN(max(c.Workers, 1)), Server: rng.IntN(max(c.Servers, 1))}
		f.Holder = !isServerFault(kind) && rng.Float64() < c.Holder
		switch kind {
		case killWorker:
			f.Dur = between(0, ttl)
		case stopWorker:
			f.Dur = between(ttl/2, 3*ttl)
		case partition:
			f.Dur = between(ttl/2, 3*ttl)
			f.Mode = hold
			if rng.IntN(3) == 0 {
				f.Mode = drop
			}
		case resetWorker:
			f.Dur = between(ttl/2, 2*ttl)
			f.Mode = reset
		case killServer, killLeader:
			f.Dur = between(100*time.Millisecond, 2*ttl)
		case pauseLeader, cutLeader: // longer than the lease and than raft's failure detection
			f.Dur = between(max(ttl, time.Second), max(3*ttl, 3*time.Second))
		case cutFollower, cutLink, misroute: // as long as a cut of the leader: the follower stops hearing it and campaigns
			f.Follower = rng.IntN(max(c.Servers-1, 1))
			f.Dur = between(max(ttl, time.Second), max(3*ttl, 3*time.Second))
		case restartAll:
			f.Dur = between(100*time.Millisecond, time.Second)
		}
		if at >= c.End {
			break
		}
		if at+f.Dur > c.End {
			continue // too long to heal in time: draw again from here
		}
		out = append(out, f)
		healed = max(healed, at+f.Dur)
	}
	return out
}
