package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// hearLeader bounds how long after the faults heal a running server may go without
// naming the leader: an election (the faults may have taken the leader, or its
// quorum, and the servers must elect one; a server that alone lost the leader, its
// connections cut or misrouted, hears the leader's next heartbeat, which raft
// retries at most every half heartbeat timeout, within a fraction of that), and
// slack, in which the watcher's 200 ms between two questions to a server is.
const hearLeader = election + slack

// 9. Every running server hears the leader again after the faults heal: from each
// fault's heal (moved to the last heal of the server faults that overlap it then),
// each server is seen by the watcher naming the leader the harness knows, within
// hearLeader, and a server (re)started shortly before or after within boot +
// hearLeader of its start. A server that stays without it is a violation: a leader
// that goes on sending one server's traffic to another (a connection that reached
// the wrong server and was kept) leaves that server without a leader for good, and
// nothing else in the history shows it while the leader keeps a quorum. A server
// fault that begins first ends the wait: it may take the leader again (the heal of
// that fault is judged in turn), and so do the server's exit and the end of the run.
func (a *analysis) checkHeardLeader() checkResult {
	r := checkResult{N: 9, Name: "servers hear the leader again"}
	var names []string
	for i := range a.in.Servers {
		names = append(names, fmt.Sprintf("s%d", i+1))
	}
	end := a.end()
	// The instants judged: every heal, moved past the server faults active then, with
	// the faults whose heal it judges.
	judged := map[int64][]span{}
	for _, f := range a.faults {
		j := a.afterServerFaults(f.end)
		judged[j] = append(judged[j], f)
	}
	instants := make([]int64, 0, len(judged))
	for j := range judged {
		instants = append(instants, j)
	}
	slices.Sort(instants)
	var heard, cutShort int
	var worst time.Duration
	reported := map[string]int64{} // a server reported without the leader, from when
	for _, j := range instants {
		next := a.nextServerFault(j)
		for _, s := range names {
			l, ok := lifeAt(a.lives[s], j)
			if !ok || l.from >= end {
				continue // not running
			}
			if since, ok := reported[s]; ok {
				if _, heardSince := a.namesLeader(s, l.inst, max(since, l.from), j); !heardSince {
					continue // still the same stretch without the leader, reported already
				}
				delete(reported, s)
			}
			deadline := max(j, l.from+int64(boot)) + int64(hearLeader)
			stop := min(next, l.to, end)
			t, ok := a.namesLeader(s, l.inst, max(j, l.from), min(deadline, stop))
			switch {
			case ok:
				heard++
				worst = max(worst, time.Duration(t-j))
			case deadline <= stop:
				reported[s] = j
				r.violate("%s not seen naming the leader for %s from %s, %s (bound %s%s)", s, time.Duration(deadline-j).Round(time.Millisecond),
					a.at(j), healed(judged[j]), hearLeader, bootNote(l, j))
			default:
				cutShort++
			}
		}
	}
	r.Counts = fmt.Sprintf("instants judged %d (every heal, after the server faults overlapping it), servers seen naming the leader %d, worst %s after (bound %s); waits ended first by a server fault, an exit or the run's end %d",
		len(instants), heard, worst.Round(time.Millisecond), hearLeader, cutShort)
	return r
}

// afterServerFaults is t, or, while a server fault is active at t, the heal of the
// last of the server faults that overlap it from there.
func (a *analysis) afterServerFaults(t int64) int64 {
	for moved := true; moved; {
		moved = false
		for _, f := range a.faults {
			if isServerFault(f.kind) && f.start <= t && f.end > t {
				t, moved = f.end, true
			}
		}
	}
	return t
}

// nextServerFault is when the first server fault after t begins (MaxInt64: none).
func (a *analysis) nextServerFault(t int64) int64 {
	for _, f := range a.faults { // by start
		if f.start > t && isServerFault(f.kind) {
			return f.start
		}
	}
	return math.MaxInt64
}

// lifeAt is the process of a name running at t, or else the next one started after t.
func lifeAt(ls []life, t int64) (life, bool) {
	for _, l := range ls {
		if l.to > t {
			return l, true
		}
	}
	return life{}, false
}

// namesLeader is the first instant in [from, to) at which server s's process inst
// was seen naming the leader the harness knew then: by s's latest role event, of
// that process, and the latest leader event. Both change only at their events, so
// those are the instants to look at.
func (a *analysis) namesLeader(s string, inst int, from, to int64) (int64, bool) {
	roles := a.roles[s]
	at := []int64{from}
	for _, e := range roles {
		if e.T > from && e.T < to {
			at = append(at, e.T)
		}
	}
	for _, e := range a.leads {
		if e.T > from && e.T < to {
			at = append(at, e.T)
		}
	}
	slices.Sort(at)
	for _, t := range at {
		if t >= to {
			break
		}
		k := sort.Search(len(roles), func(k int) bool { return roles[k].T > t }) - 1
		l := sort.Search(len(a.leads), func(l int) bool { return a.leads[l].T > t }) - 1
		if k < 0 || l < 0 {
			continue
		}
		v := roles[k]
		if v.Inst == inst && v.Leader != "" && v.Leader == a.leads[l].W {
			return t, true
		}
	}
	return 0, false
}

// healed names the faults whose heal an instant judges.
func healed(fs []span) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, fmt.Sprintf("%s #%d of %s", f.kind, f.id, f.w))
	}
	if len(parts) == 1 {
		return "after " + parts[0] + " healed"
	}
	return "after " + strings.Join(parts, ", ") + " healed"
}

// bootNote says when a server started within boot of the instant judged, which
// moved its bound.
func bootNote(l life, j int64) string {
	switch {
	case l.from+int64(boot) <= j:
		return ""
	case l.from > j:
		return fmt.Sprintf(" from its start %s later, + boot %s", time.Duration(l.from-j).Round(time.Millisecond), boot)
	}
	return fmt.Sprintf(" from its start %s before, + boot %s", time.Duration(j-l.from).Round(time.Millisecond), boot)
}
