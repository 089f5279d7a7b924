package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// Liveness bounds, from the documented behaviour (README, How it stays correct;
// docs/replication.md): release → next grant at once; holder dies → within 1 s;
// holder frozen or cut off → when its session expires, one TTL; HUP and
// close-connections → clients resume in well under 1 s. Leader lost (killed,
// frozen, or every server killed) → raft elects another within election, clients
// find it within redial, and the holder, which keeps its lease across the failover,
// releases; restart-all adds its downtime and boot. A follower cut off, or its
// connections misrouted → nothing: the leader commits with the other follower.
// slack absorbs a loaded machine.
const (
	slack = time.Second
	// election: raft notices a lost leader within three times its 300 ms heartbeat
	// timeout, then elects within one or two rounds of 300 to 600 ms.
	election = 3 * time.Second
	// redial: a client's back-off (at most 1 s) before each of the connects that
	// find the new leader: one that fails (a dead server, or a follower that knows no
	// leader yet) and one sent to the leader a follower named.
	redial = 2 * time.Second
	// boot: a server process starting and replaying its log.
	boot = 2 * time.Second
	// stepDown: a leader cut off from the other servers steps down once no quorum
	// answered within its lease (at most raft's 300 ms timeout, checked as often),
	// and the harness asks each server its state every 200 ms: 1 s, + slack.
	stepDown = time.Second + slack
)

// recoverAfter is how long a fault's effects may last after it heals (a redial, the
// grace after a crash); a gap is judged "with no fault active" only outside it.
func (in *checkInput) recoverAfter() time.Duration { return 2*in.TTL + time.Second }

func (in *checkInput) quietGapBound() time.Duration { return 2*in.HoldMax + in.ThinkMax + slack }

func (in *checkInput) faultBound(kind string, dur time.Duration) time.Duration {
	switch kind {
	case killWorker, resetWorker: // the server takes a reset for the holder's death
		return time.Second + in.HoldMax + slack
	case stopWorker, partition:
		return in.TTL + 2*in.HoldMax + slack
	case hupServer, closeConns:
		return time.Second + in.HoldMax + slack
	case cutFollower:
		// The leader still hears the other follower: a quorum of two of three, which
		// commits every entry and renews its lease, so no election, no redial, and
		// no client connected to the cut server (clients talk to the leader only).
		// The token flows as with no fault: from any instant, the next grant comes
		// within the longest gap between grants with no fault active.
		return in.quietGapBound()
	case misroute:
		// As a cut follower: the leader keeps its quorum with the other follower,
		// which refuses the connections meant for the misrouted one and is
		// otherwise untouched, and no client talks to a follower.
		return in.quietGapBound()
	case cutLink:
		// The leader keeps a quorum through the other follower. The cut follower
		// hears no leader and campaigns, but the other follower, which hears one,
		// refuses it (raft's requestPreVote and requestVote), and with pre-vote
		// (on unless PreVoteDisabled) its term does not even go up. Were it to go
		// up, the leader would hear of it at the heal and step down: an election,
		// which the bound allows, as for a lost leader.
		return election + redial + in.HoldMax + slack
	case killServer, killLeader, pauseLeader, cutLeader: // a follower's loss costs nothing
		if in.Servers > 1 {
			return election + redial + in.HoldMax + slack
		}
		return dur + boot + election + redial + in.HoldMax + slack // a server alone: down for dur
	case restartAll:
		return dur + boot + election + redial + in.HoldMax + slack
	}
	return in.recoverAfter()
}

// 6. Liveness: the longest gap between grants with no fault active (nor recovering),
// and each isolated fault's time to the next grant, against the bounds above.
func (a *analysis) checkLiveness() checkResult {
	r := checkResult{N: 6, Name: "liveness"}
	rec := int64(a.in.recoverAfter())
	var ts []int64
	for _, g := range a.grants {
		if a.in.Stopping == 0 || g.granted < a.in.Stopping {
			ts = append(ts, g.granted)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	busy := func(from, to int64) bool {
		for _, f := range a.faults {
			if f.start <= to && f.end+rec >= from {
				return true
			}
		}
		return false
	}
	bound := a.in.quietGapBound()
	var gaps int
	var longest time.Duration
	for i := 1; i < len(ts); i++ {
		if busy(ts[i-1], ts[i]) {
			continue
		}
		gaps++
		d := time.Duration(ts[i] - ts[i-1])
		longest = max(longest, d)
		if d > bound {
			r.violate("no grant for %s from %s with no fault active (bound %s)", d.Round(time.Millisecond), a.at(ts[i-1]), bound)
		}
	}
	parts := []string{fmt.Sprintf("quiet gaps %d, longest %s (bound %s)", gaps, longest.Round(time.Millisecond), bound)}
	type agg struct {
		n     int
		worst time.Duration
		bound time.Duration
	}
	per := map[string]*agg{}
	for i, f := range a.faults {
		isolated := true
		for j, o := range a.faults {
			if i != j && o.start <= f.end+rec && o.end+rec >= f.start {
				isolated = false
				break
			}
		}
		if !isolated {
			continue
		}
		k := sort.Search(len(ts), func(k int) bool { return ts[k] > f.start })
		if k == len(ts) {
			continue // the run stopped first
		}
		d := time.Duration(ts[k] - f.start)
		b := a.in.faultBound(f.kind, f.dur)
		x := per[f.kind]
		if x == nil {
			x = &agg{}
			per[f.kind] = x
		}
		x.n++
		x.worst = max(x.worst, d)
		x.bound = max(x.bound, b)
		if d > b {
			r.violate("%s of %s at %s: next grant after %s (bound %s)", f.kind, f.w, a.at(f.start), d.Round(time.Millisecond), b)
		}
	}
	for _, k := range allKinds {
		if x := per[k]; x != nil {
			parts = append(parts, fmt.Sprintf("%s isolated %d, worst %s (bound %s)", k, x.n, x.worst.Round(time.Millisecond), x.bound.Round(time.Millisecond)))
		}
	}
	// Every cut-off leader, isolated or not, steps down while it is cut off: a leader
	// that cannot reach a quorum must stop acting as one (replication rule 3).
	var cuts int
	var slowest time.Duration
	for _, f := range a.faults {
		if f.kind != cutLeader {
			continue
		}
		d, seen := a.steppedDown(f)
		switch {
		case seen:
			cuts++
			slowest = max(slowest, d)
			if d > stepDown {
				r.violate("%s of %s at %s: seen leading until %s later (bound %s)", f.kind, f.w, a.at(f.start), d.Round(time.Millisecond), stepDown)
			}
		case time.Duration(f.end-f.start) > stepDown:
			cuts++
			r.violate("%s of %s at %s: seen leading throughout the %s cut", f.kind, f.w, a.at(f.start), time.Duration(f.end-f.start).Round(time.Millisecond))
		}
	}
	if cuts > 0 {
		parts = append(parts, fmt.Sprintf("cut-off leaders stepped down %d, slowest %s (bound %s)", cuts, slowest.Round(time.Millisecond), stepDown))
	}
	r.Counts = strings.Join(parts, "; ")
	return r
}

// steppedDown is how long after f began its server was first seen not leading, by
// its own /status (0 if it was not leading then: the leadership had moved before
// the fault); seen is false if no such answer came before f healed.
func (a *analysis) steppedDown(f span) (d time.Duration, seen bool) {
	for _, e := range a.roles[f.w] {
		switch {
		case e.T <= f.start:
			if e.Op != "leader" {
				d, seen = 0, true
			} else {
				seen = false
			}
		case e.T > f.end:
			return d, seen
		case e.Op != "leader" && !seen:
			return time.Duration(e.T - f.start), true
		case e.Op != "leader":
			return d, seen
		}
	}
	return d, seen
}

// 7. Every worker makes progress (a grant and a successful release) after the last
// fault has healed and its effects have passed.
func (a *analysis) checkProgress() checkResult {
	r := checkResult{N: 7, Name: "progress after the last fault"}
	var healed int64
	for _, f := range a.faults {
		healed = max(healed, f.end)
	}
	from := healed + int64(a.in.recoverAfter())
	if len(a.faults) == 0 && len(a.in.Events) > 0 {
		from = a.in.Events[0].T
	}
	to := a.in.Stopping
	if to == 0 && len(a.in.Events) > 0 {
		to = a.in.Events[len(a.in.Events)-1].T
	}
	grants, oks := map[string]int{}, map[string]int{}
	for _, e := range a.in.Events {
		if e.T < from || e.T > to {
			continue
		}
		switch {
		case e.Kind == event.Grant:
			grants[e.W]++
		case e.Kind == event.ReleaseRet && e.Class == event.OK:
			oks[e.W]++
		}
	}
	var parts []string
	for _, w := range a.in.Workers {
		parts = append(parts, fmt.Sprintf("%s %d/%d", w, grants[w], oks[w]))
		if grants[w] == 0 || oks[w] == 0 {
			r.violate("%s: %d grants, %d releases ok from %s to %s", w, grants[w], oks[w], a.at(from), a.at(to))
		}
	}
	r.Counts = fmt.Sprintf("window %.1fs; grants/releases ok: %s", float64(to-from)/1e9, strings.Join(parts, ", "))
	return r
}

// 8. No process exits except when killed or told to (and then with status 0), and
// every worker speaks the event protocol.
func (a *analysis) checkExits() checkResult {
	r := checkResult{N: 8, Name: "no unexpected exits"}
	var spawns, exits, expected int
	unexpected, why := map[string]int{}, map[string]string{}
	var names []string
	for _, e := range a.in.Events {
		switch e.Kind {
		case event.Spawn:
			spawns++
		case event.Exit:
			exits++
			if e.Expected {
				expected++
			} else {
				r.violate("%s#%d exited by itself at %s: %s", e.W, e.Inst, a.at(e.T), e.Err)
				if unexpected[e.W] == 0 {
					names, why[e.W] = append(names, e.W), e.Err
				}
				unexpected[e.W]++
			}
		case event.Stuck:
			r.violate("%s#%d did not exit within its deadline when told to stop", e.W, e.Inst)
		case "garbage":
			r.violate("%s#%d wrote a line that is not an event: %.80q", e.W, e.Inst, e.Err)
		}
	}
	r.Counts = fmt.Sprintf("processes %d, exits %d (killed or told %d)", spawns, exits, expected)
	for _, w := range names {
		r.Counts += fmt.Sprintf("; %s exited by itself %d times, first: %s", w, unexpected[w], why[w])
	}
	return r
}
