package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// nemesis carries out a plan against the cluster. Faults run concurrently (that is
// the point: real failures overlap), but each target takes one fault at a time: a
// fault whose target is busy when it comes due is skipped.
type nemesis struct {
	c     *cluster
	h     *history
	start time.Time
	log   func(format string, args ...any)

	// Only run's goroutine touches these; a fault's goroutine hands its bookkeeping
	// back on done.
	busy       map[int]bool // workers under a fault
	serverBusy bool
	done       chan func()
	applied    int
	skipped    int
	running    int
}

// run applies faults at their times and returns once the last has healed.
func (n *nemesis) run(ctx context.Context, faults []fault) {
	n.busy, n.done = map[int]bool{}, make(chan func())
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

func (n *nemesis) launch(ctx context.Context, f fault) {
	target := -1
	if isServerFault(f.Kind) {
		if n.serverBusy {
			n.skip(f, "server busy")
			return
		}
		n.serverBusy = true
	} else {
		target = f.Worker
		if f.Holder {
			if i := n.c.workerIndex(n.h.currentHolder()); i >= 0 {
				target = i
			}
		}
		if n.busy[target] {
			n.skip(f, "target busy")
			return
		}
		n.busy[target] = true
	}
	n.applied++
	n.running++
	go func() {
		err := n.apply(ctx, f, target)
		n.done <- func() {
			n.running--
			if target >= 0 {
				delete(n.busy, target)
			} else {
				n.serverBusy = false
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
func (n *nemesis) apply(ctx context.Context, f fault, target int) error {
	ev := event.Event{Kind: event.Fault, Op: f.Kind, ID: f.ID, Dur: int64(f.Dur)}
	heal := event.Event{Kind: event.Heal, Op: f.Kind, ID: f.ID}
	var p *proc
	if target >= 0 {
		p, _ = n.c.worker(target)
		ev.Target, ev.W, ev.Inst = p.name, p.name, p.inst
		if f.Holder {
			ev.Err = "aimed at the holder"
		}
	} else {
		p = n.c.currentServer()
		ev.Target, ev.W, ev.Inst = "server", "server", p.inst
	}
	heal.Target, heal.W, heal.Inst = ev.Target, ev.W, ev.Inst
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
			err = n.c.startWorker(target)
		}
	case stopWorker:
		n.h.add(ev)
		err = p.signal(syscall.SIGSTOP)
		wait()
		_ = p.signal(syscall.SIGCONT)
	case partition:
		s := n.c.workers[target]
		ev.Err = f.Mode.String()
		n.h.add(ev)
		s.proxy.cut(f.Mode)
		wait()
		s.proxy.heal()
	case hupServer:
		n.h.add(ev)
		err = p.signal(syscall.SIGHUP)
	case closeConns:
		n.h.add(ev)
		err = n.c.closeConnections()
	case killServer:
		n.h.add(ev)
		err = p.kill(5 * time.Second)
		wait()
		if ctx.Err() == nil {
			if err = n.c.startServer(); err == nil {
				err = n.c.waitReady(ctx, 20*time.Second) // healed once it serves again
			}
		}
	default:
		err = fmt.Errorf("unknown fault kind %q", f.Kind)
	}
	n.h.add(heal)
	return err
}
