package main

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// nemesis carries out a plan against the cluster. Faults run concurrently (that is
// the point: real failures overlap), but each target takes one fault at a time: a
// fault whose target is busy when it comes due is skipped, and so is a fault aimed
// at the leader, or at a follower (a server that does not lead), while no leader
// is known.
type nemesis struct {
	c     *cluster
	h     *history
	start time.Time
	log   func(format string, args ...any)

	// Only run's goroutine touches these; a fault's goroutine hands its bookkeeping
	// back on done.
	busy    map[string]bool // workers and servers under a fault, by name
	done    chan func()
	applied int
	byKind  map[string]int // applied, by kind
	skipped int
	running int
}

// run applies faults at their times and returns once the last has healed.
func (n *nemesis) run(ctx context.Context, faults []fault) {
	n.busy, n.done = map[string]bool{}, make(chan func())
	next := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for next < len(faults) || n.running > 0 {
		if next < len(faults) {
			timer.Reset(time.Until(n.start.Add(faults[next].At)))
		}
		select {
		case fn := <-n.done:
			fn()
			continue
		case <-timer.C:
		case <-ctx.Done():
			for n.running > 0 { // they heal what they broke, then return
				(<-n.done)()
			}
			return
		}
		if next < len(faults) {
			n.launch(ctx, faults[next])
			next++
		}
	}
}

// target is what a fault acts on, found when it starts.
type target struct {
	worker  int   // a worker fault's worker; -1 for a server fault
	servers []int // a server fault's servers
	term    uint64
	names   []string // busy while the fault lasts
}

func (n *nemesis) launch(ctx context.Context, f fault) {
	tg := target{worker: -1}
	switch {
	case !isServerFault(f.Kind):
		tg.worker = f.Worker
		if f.Holder {
			if i := n.c.workerIndex(n.h.currentHolder()); i >= 0 {
				tg.worker = i
			}
		}
		tg.names = []string{n.c.workers[tg.worker].name}
	case needsRaftNet(f.Kind) && n.c.raft == nil:
		n.skip(f, "a server alone has no raft traffic")
		return
	case f.Kind == cutFollower || f.Kind == cutLink || f.Kind == misroute:
		l, term := n.c.currentLeader()
		if l < 0 {
			n.skip(f, "no leader known")
			return
		}
		var followers []int
		for i := range n.c.servers {
			if i != l {
				followers = append(followers, i)
			}
		}
		k := f.Follower % len(followers)
		tg.servers, tg.term = []int{followers[k]}, term
		switch f.Kind {
		case cutLink: // the leader first: both ends are under the fault
			tg.servers = []int{l, tg.servers[0]}
		case misroute: // the follower, then the other one, which its connections reach: both under the fault
			if len(followers) < 2 {
				n.skip(f, "no other follower to misroute to")
				return
			}
			tg.servers = append(tg.servers, followers[(k+1)%len(followers)])
		}
	case aimsAtLeader(f.Kind):
		l, term := n.c.currentLeader()
		if l < 0 {
			n.skip(f, "no leader known")
			return
		}
		tg.servers, tg.term = []int{l}, term
	case f.Kind == restartAll:
		for i := range n.c.servers {
			tg.servers = append(tg.servers, i)
		}
	default:
		tg.servers = []int{f.Server}
	}
	for _, i := range tg.servers {
		tg.names = append(tg.names, n.c.servers[i].name)
	}
	for _, name := range tg.names {
		if n.busy[name] {
			n.skip(f, name+" busy")
			return
		}
	}
	for _, name := range tg.names {
		n.busy[name] = true
	}
	n.applied++
	if n.byKind == nil {
		n.byKind = map[string]int{}
	}
	n.byKind[f.Kind]++
	n.running++
	go func() {
		err := n.apply(ctx, f, tg)
		n.done <- func() {
			n.running--
			for _, name := range tg.names {
				delete(n.busy, name)
			}
			if err != nil {
				n.log("fault %s: %v", f, err)
			}
		}
	}()
}

func (n *nemesis) skip(f fault, why string) {
	n.skipped++
	n.h.add(event.Event{Kind: event.Fault, Op: f.Kind, ID: f.ID, Err: "skipped: " + why})
}

// apply carries out one fault and heals it; it always heals, even when ctx ends.
// A server that was killed is healed once it answers /readyz again (it knows a
// leader); restart-all once every server does.
func (n *nemesis) apply(ctx context.Context, f fault, tg target) error {
	ev := event.Event{Kind: event.Fault, Op: f.Kind, ID: f.ID, Dur: int64(f.Dur)}
	var p *proc
	switch {
	case tg.worker >= 0:
		p, _ = n.c.worker(tg.worker)
		ev.Target, ev.W, ev.Inst = p.name, p.name, p.inst
		if f.Holder {
			ev.Err = "aimed at the holder"
		}
	case len(tg.servers) == 1:
		p = n.c.server(tg.servers[0])
		ev.Target, ev.W, ev.Inst = p.name, p.name, p.inst
		switch {
		case aimsAtLeader(f.Kind):
			ev.Err, ev.Term = "aimed at the leader", tg.term
		case f.Kind == cutFollower:
			ev.Err, ev.Term = "aimed at a follower", tg.term
		}
	case f.Kind == cutLink: // named by the follower, whose link to the leader is cut
		leader, follower := n.c.server(tg.servers[0]), n.c.server(tg.servers[1])
		ev.Target, ev.W, ev.Inst = leader.name+"-"+follower.name, follower.name, follower.inst
		ev.Err, ev.Term = "between the leader and a follower", tg.term
	case f.Kind == misroute: // named by the follower that hears no leader meanwhile
		follower, other := n.c.server(tg.servers[0]), n.c.server(tg.servers[1])
		ev.Target, ev.W, ev.Inst = follower.name, follower.name, follower.inst
		ev.Err, ev.Term = "aimed at a follower; reaches "+other.name, tg.term
	default:
		ev.Target = "all"
	}
	heal := event.Event{Kind: event.Heal, Op: f.Kind, ID: f.ID, Target: ev.Target, W: ev.W, Inst: ev.Inst}
	wait := func() {
		t := time.NewTimer(f.Dur) // the fault's length, drawn by the plan
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	var err error
	switch f.Kind {
	case killWorker:
		n.h.add(ev)
		err = p.kill(5 * time.Second)
		wait()
		if ctx.Err() == nil {
			err = n.c.startWorker(tg.worker)
		}
	case stopWorker:
		n.h.add(ev)
		err = p.signal(syscall.SIGSTOP)
		wait()
		_ = p.signal(syscall.SIGCONT)
	case partition, resetWorker:
		s := n.c.workers[tg.worker]
		ev.Err = f.Mode.String()
		n.h.add(ev)
		for _, px := range s.proxies {
			px.cut(f.Mode)
		}
		wait()
		for _, px := range s.proxies {
			px.heal()
		}
	case hupServer:
		n.h.add(ev)
		err = p.signal(syscall.SIGHUP)
	case closeConns:
		n.h.add(ev)
		err = n.c.closeConnections(tg.servers[0])
	case killServer, killLeader:
		n.h.add(ev)
		err = p.kill(5 * time.Second)
		wait()
		if ctx.Err() == nil {
			if err = n.c.startServer(tg.servers[0]); err == nil {
				err = n.c.waitReady(ctx, tg.servers[0], 30*time.Second)
			}
		}
	case pauseLeader:
		n.h.add(ev)
		err = p.signal(syscall.SIGSTOP)
		wait()
		_ = p.signal(syscall.SIGCONT)
	case cutLeader, cutFollower: // its token port stays open: a cut leader's clients still reach it
		n.h.add(ev)
		n.c.raft.cut(tg.servers[0])
		wait()
		n.c.raft.heal(tg.servers[0])
	case cutLink:
		n.h.add(ev)
		n.c.raft.cutLink(tg.servers[0], tg.servers[1])
		wait()
		n.c.raft.healLink(tg.servers[0], tg.servers[1])
	case misroute:
		n.h.add(ev)
		n.c.raft.misroute(tg.servers[0], tg.servers[1])
		wait()
		n.c.raft.endMisroute(tg.servers[0])
	case restartAll:
		n.h.add(ev)
		var ps []*proc
		for _, i := range tg.servers {
			ps = append(ps, n.c.server(i))
		}
		for _, p := range ps { // all at once, as a power cut does
			p.sigkill()
		}
		for _, p := range ps {
			err = errors.Join(err, p.wait(5*time.Second))
		}
		wait()
		if ctx.Err() == nil {
			for _, i := range tg.servers {
				err = errors.Join(err, n.c.startServer(i))
			}
			for _, i := range tg.servers {
				err = errors.Join(err, n.c.waitReady(ctx, i, 30*time.Second))
			}
		}
	default:
		err = fmt.Errorf("unknown fault kind %q", f.Kind)
	}
	n.h.add(heal)
	return err
}
