package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// leaderLoss is what happened after the faults of one kind that took the leader
// away: how long until the harness saw another leader (a higher term), and until
// the next grant. Figures, not a check: check 6 judges the isolated ones.
type leaderLoss struct {
	kind              string
	toLeader, toGrant []time.Duration
	noLeader, noGrant int // none seen before the run stopped
	// cut-leader: how long the cut-off leader was still seen leading (check 6 bounds it).
	stepDown []time.Duration
	// The leases held when the fault began, by how their release went: accepted
	// (the holder kept its lease across the failover, rule 7), refused, unknown.
	held map[string]int
}

// leaderFigures says how leadership went: the leaders the harness saw and, per
// kind of fault that took the leader away (kill-server counts when it hit the
// leader), the time to a new leader and to the next grant.
func (a *analysis) leaderFigures() (changes int, losses []*leaderLoss) {
	changes = max(len(a.leads)-1, 0)
	var grants []int64
	for _, g := range a.grants {
		if a.in.Stopping == 0 || g.granted < a.in.Stopping {
			grants = append(grants, g.granted)
		}
	}
	slices.Sort(grants)
	type release struct {
		t     int64
		class string
	}
	released := map[leaseKey]*release{}
	for _, e := range a.in.Events {
		k := leaseKey{e.W, e.Inst, e.Fence}
		switch e.Kind {
		case event.Release:
			released[k] = &release{t: e.T, class: event.Unknown}
		case event.ReleaseRet:
			if r := released[k]; r != nil {
				r.class = e.Class
			}
		}
	}
	per := map[string]*leaderLoss{}
	for _, f := range a.faults {
		// the leader and its term when the fault began
		k := sort.Search(len(a.leads), func(k int) bool { return a.leads[k].T > f.start }) - 1
		if k < 0 {
			continue
		}
		led := a.leads[k]
		if !losesLeader(f.kind) && (f.kind != killServer || f.w != led.W) {
			continue
		}
		x := per[f.kind]
		if x == nil {
			x = &leaderLoss{kind: f.kind, held: map[string]int{}}
			per[f.kind] = x
		}
		for _, g := range a.grants {
			if r := released[leaseKey{g.w, g.inst, g.fence}]; g.granted <= f.start && r != nil && r.t > f.start {
				x.held[r.class]++
			}
		}
		next := -1
		for j := k + 1; j < len(a.leads); j++ {
			if a.leads[j].Term > led.Term {
				next = j
				break
			}
		}
		if f.kind == cutLeader {
			if d, seen := a.steppedDown(f); seen {
				x.stepDown = append(x.stepDown, d)
			}
		}
		if next < 0 {
			x.noLeader++
		} else {
			x.toLeader = append(x.toLeader, time.Duration(a.leads[next].T-f.start))
		}
		if g := sort.Search(len(grants), func(g int) bool { return grants[g] > f.start }); g < len(grants) {
			x.toGrant = append(x.toGrant, time.Duration(grants[g]-f.start))
		} else {
			x.noGrant++
		}
	}
	for _, k := range allKinds {
		if x := per[k]; x != nil {
			losses = append(losses, x)
		}
	}
	return changes, losses
}

// spread formats durations as "median m, worst w" (the lower median of an even count).
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("median %s, worst %s", s[(len(s)-1)/2].Round(10*time.Millisecond), s[len(s)-1].Round(10*time.Millisecond))
}

func (x *leaderLoss) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d: new leader %s", x.kind, len(x.toLeader)+x.noLeader, spread(x.toLeader))
	if x.noLeader > 0 {
		fmt.Fprintf(&b, " (%d not seen)", x.noLeader)
	}
	if x.kind == cutLeader {
		fmt.Fprintf(&b, "; the cut-off one stepped down %s", spread(x.stepDown))
	}
	fmt.Fprintf(&b, "; next grant %s", spread(x.toGrant))
	if x.noGrant > 0 {
		fmt.Fprintf(&b, " (%d none)", x.noGrant)
	}
	fmt.Fprintf(&b, "; leases held then %d, released ok after it %d (refused %d, unknown %d)",
		x.held[event.OK]+x.held[event.Refused]+x.held[event.Unknown], x.held[event.OK], x.held[event.Refused], x.held[event.Unknown])
	return b.String()
}

// partialCut is what followed the faults of one kind that cut part of the servers'
// raft traffic, or sent a follower's to the other follower, and left the leader a
// quorum (cut-follower, cut-link, misroute): whether the leadership moved all the
// same, the time to the next grant, and what the follower under the fault did: it
// hears no leader and campaigns (seen as a candidate), and after the heal it hears
// the leader again and names it. Faults overlap, and two cuts at
// once can leave the leader without a quorum, so the moves of the leadership are
// also counted among the faults that came alone. Figures, not a check: check 6
// judges the isolated ones' time to the next grant.
type partialCut struct {
	kind         string
	n, alone     int // alone: no other fault began or healed within an election of it
	moved        int // a leader of a higher term was seen from the cut to an election after its heal
	movedAlone   int
	toGrant      []time.Duration
	noGrant      int
	campaigned   int             // the cut follower was seen as a candidate during the cut
	settled      []time.Duration // from the heal until it was seen naming the leader (0 if it was then)
	neverSettled int             // not seen naming the leader before the run stopped
}

// partialFigures says, per kind of fault that cut a follower or a link, or
// misrouted a follower's connections, what followed it (partialCut). A move of the leadership is looked for until an
// election after the heal: were the cut follower's term to go up during the cut
// (no pre-vote), the leader would hear of it at the heal and step down.
func (a *analysis) partialFigures() []*partialCut {
	var grants []int64
	for _, g := range a.grants {
		if a.in.Stopping == 0 || g.granted < a.in.Stopping {
			grants = append(grants, g.granted)
		}
	}
	slices.Sort(grants)
	within := int64(election)
	end := a.end()
	per := map[string]*partialCut{}
	for i, f := range a.faults {
		if f.kind != cutFollower && f.kind != cutLink && f.kind != misroute {
			continue
		}
		x := per[f.kind]
		if x == nil {
			x = &partialCut{kind: f.kind}
			per[f.kind] = x
		}
		x.n++
		alone := true
		for j, o := range a.faults {
			if i != j && o.start <= f.end+within && o.end+within >= f.start {
				alone = false
				break
			}
		}
		if alone {
			x.alone++
		}
		// the leader's term when the fault began
		var term uint64
		if k := sort.Search(len(a.leads), func(k int) bool { return a.leads[k].T > f.start }) - 1; k >= 0 {
			term = a.leads[k].Term
		}
		for _, l := range a.leads {
			if l.T > f.start && l.T <= f.end+within && l.Term > term {
				x.moved++
				if alone {
					x.movedAlone++
				}
				break
			}
		}
		if g := sort.Search(len(grants), func(g int) bool { return grants[g] > f.start }); g < len(grants) {
			x.toGrant = append(x.toGrant, time.Duration(grants[g]-f.start))
		} else {
			x.noGrant++
		}
		for _, e := range a.roles[f.w] {
			if e.T > f.start && e.T <= f.end && e.Op == "candidate" {
				x.campaigned++
				break
			}
		}
		// Settled once the follower names the leader the harness knows (check 9's
		// test), not by its state: a follower may know no leader.
		t, ok := int64(0), false
		if l, running := lifeAt(a.lives[f.w], f.end); running {
			t, ok = a.namesLeader(f.w, l.inst, max(f.end, l.from), end)
		}
		if ok {
			x.settled = append(x.settled, time.Duration(t-f.end))
		} else {
			x.neverSettled++
		}
	}
	var out []*partialCut
	for _, k := range allKinds {
		if x := per[k]; x != nil {
			out = append(out, x)
		}
	}
	return out
}

func (x *partialCut) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d: leadership moved %d (alone: %d of %d); next grant %s", x.kind, x.n, x.moved, x.movedAlone, x.alone, spread(x.toGrant))
	if x.noGrant > 0 {
		fmt.Fprintf(&b, " (%d none)", x.noGrant)
	}
	who := "the cut follower"
	if x.kind == misroute {
		who = "the misrouted follower"
	}
	fmt.Fprintf(&b, "; %s campaigned %d, naming the leader after the heal %s", who, x.campaigned, spread(x.settled))
	if x.neverSettled > 0 {
		fmt.Fprintf(&b, " (%d not seen)", x.neverSettled)
	}
	return b.String()
}
