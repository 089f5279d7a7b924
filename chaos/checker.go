package main

// The checker: the history indexed once (analyse), then nine checks, each with its
// counts and up to five examples: safety in check_safety.go (1 to 5), liveness and
// processes in check_liveness.go (6 to 8), every server hearing the leader again
// after the faults in check_heard.go (9).

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// checkInput is what the checker judges: the history and the server's record at rest.
type checkInput struct {
	Events   []event.Event // ordered by T
	Final    tokenStatus   // the server's /status for the token, after every worker left
	FinalErr string        // why Final is missing, if it is
	Workers  []string
	Servers  int
	TTL      time.Duration
	HoldMax  time.Duration
	ThinkMax time.Duration
	// Stopping is when the workers were told to stop (CLOCK_MONOTONIC): grants and
	// gaps after it are not judged for liveness.
	Stopping int64
}

// checkResult is one check's verdict with the counts it is based on.
type checkResult struct {
	N          int
	Name       string
	Counts     string
	Violations int
	Examples   []string
}

func (r *checkResult) violate(format string, args ...any) {
	r.Violations++
	if len(r.Examples) < 5 {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// lease is what the history says about one grant.
type lease struct {
	w       string
	inst    int
	fence   uint64
	counter uint64 // the record at grant
	call    int64  // Acquire (or Requeue) called
	granted int64  // it returned
	acted   int64  // the last check after which the worker wrote (0: none)
	stores  []event.Event
}

func (l *lease) String() string {
	return fmt.Sprintf("%s#%d fence %d", l.w, l.inst, l.fence)
}

type leaseKey struct {
	w     string
	inst  int
	fence uint64
}

// span is a fault from its start to its heal.
type span struct {
	id         int
	kind       string
	w          string
	inst       int
	start, end int64
	dur        time.Duration
}

// analysis is the history indexed for the checks.
type analysis struct {
	in     *checkInput
	t0     int64
	leases map[leaseKey]*lease
	grants []*lease                 // by granted time
	faults []span                   // by start
	leads  []event.Event            // the leaders the harness saw, in order
	roles  map[string][]event.Event // each server's own raft states, in order, by name
	lives  map[string][]life        // each name's processes, in order
}

// life is one process: from its spawn to its exit (MaxInt64 while it runs).
type life struct {
	inst     int
	from, to int64
}

func analyse(in *checkInput) *analysis {
	a := &analysis{in: in, leases: map[leaseKey]*lease{}, roles: map[string][]event.Event{}, lives: map[string][]life{}}
	if len(in.Events) > 0 {
		a.t0 = in.Events[0].T
	}
	open := map[int]*span{}
	for _, e := range in.Events {
		k := leaseKey{e.W, e.Inst, e.Fence}
		switch e.Kind {
		case event.Grant:
			l := &lease{w: e.W, inst: e.Inst, fence: e.Fence, counter: e.Counter, call: e.Call, granted: e.T}
			a.leases[k] = l
			a.grants = append(a.grants, l)
		case event.Check:
			if l := a.leases[k]; l != nil && e.Acted {
				l.acted = e.T
			}
		case event.Store:
			if l := a.leases[k]; l != nil {
				l.stores = append(l.stores, e)
			}
		case event.Lead:
			a.leads = append(a.leads, e)
		case event.Role:
			a.roles[e.W] = append(a.roles[e.W], e)
		case event.Spawn:
			a.lives[e.W] = append(a.lives[e.W], life{inst: e.Inst, from: e.T, to: math.MaxInt64})
		case event.Exit:
			if ls := a.lives[e.W]; len(ls) > 0 && ls[len(ls)-1].inst == e.Inst {
				ls[len(ls)-1].to = e.T
			}
		case event.Fault:
			if !strings.HasPrefix(e.Err, "skipped") {
				s := &span{id: e.ID, kind: e.Op, w: e.W, inst: e.Inst, start: e.T, end: -1, dur: time.Duration(e.Dur)}
				open[e.ID] = s
			}
		case event.Heal:
			if s := open[e.ID]; s != nil {
				s.end = e.T
				a.faults = append(a.faults, *s)
				delete(open, e.ID)
			}
		}
	}
	for _, s := range open { // never healed: lasts to the end
		s.end = in.Events[len(in.Events)-1].T
		a.faults = append(a.faults, *s)
	}
	sort.Slice(a.faults, func(i, j int) bool { return a.faults[i].start < a.faults[j].start })
	return a
}

// end is when the run's judged part ends: when the workers were told to stop (the
// watcher's last answers come soon after), else the last event.
func (a *analysis) end() int64 {
	if a.in.Stopping == 0 && len(a.in.Events) > 0 {
		return a.in.Events[len(a.in.Events)-1].T
	}
	return a.in.Stopping
}

// at formats a CLOCK_MONOTONIC stamp as seconds since the run's first event.
func (a *analysis) at(t int64) string { return fmt.Sprintf("%.3fs", float64(t-a.t0)/1e9) }

func check(in *checkInput) []checkResult {
	a := analyse(in)
	return []checkResult{a.checkFences(), a.checkOverlap(), a.checkStore(), a.checkReleases(),
		a.checkTrust(), a.checkLiveness(), a.checkProgress(), a.checkExits(), a.checkHeardLeader()}
}
