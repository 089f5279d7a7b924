package main

import (
	"fmt"
	"sort"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// 1. Every grant's fence is unique and strictly increasing per token across server
// crashes: no fence granted twice; a grant asked for after another was received
// has a greater fence; the server's fence at rest is at least every fence seen.
func (a *analysis) checkFences() checkResult {
	r := checkResult{N: 1, Name: "fences unique, increasing"}
	byFence := map[uint64]*lease{}
	var maxFence uint64
	for _, g := range a.grants {
		if o := byFence[g.fence]; o != nil {
			r.violate("fence %d granted twice: %s at %s and %s at %s", g.fence, o, a.at(o.granted), g, a.at(g.granted))
		}
		byFence[g.fence] = g
		maxFence = max(maxFence, g.fence)
	}
	// prefix maxima of fences by receive time
	byT := append([]*lease(nil), a.grants...)
	sort.Slice(byT, func(i, j int) bool { return byT[i].granted < byT[j].granted })
	pre := make([]uint64, len(byT))
	who := make([]*lease, len(byT))
	for i, g := range byT {
		pre[i], who[i] = g.fence, g
		if i > 0 && pre[i-1] > g.fence {
			pre[i], who[i] = pre[i-1], who[i-1]
		}
	}
	for _, g := range a.grants {
		i := sort.Search(len(byT), func(i int) bool { return byT[i].granted >= g.call }) - 1
		if i >= 0 && pre[i] >= g.fence {
			r.violate("%s asked for at %s but fence %d (%s) had been received before, at %s",
				g, a.at(g.call), pre[i], who[i], a.at(who[i].granted))
		}
	}
	crashes := 0
	for _, f := range a.faults {
		switch f.kind {
		case killServer, killLeader:
			crashes++
		case restartAll:
			crashes += a.in.Servers
		}
	}
	if a.in.FinalErr == "" && a.in.Final.Fence < maxFence {
		r.violate("server's fence at rest %d < fence %d seen by a client", a.in.Final.Fence, maxFence)
	}
	r.Counts = fmt.Sprintf("grants %d, distinct fences %d, server crashes %d, max fence %d, server fence %d",
		len(a.grants), len(byFence), crashes, maxFence, a.in.Final.Fence)
	return r
}

// frozen says whether worker w#inst was stopped at some time in [from, to].
func (a *analysis) frozen(w string, inst int, from, to int64) bool {
	for _, f := range a.faults {
		if f.kind == stopWorker && f.w == w && f.inst == inst && f.start <= to && f.end >= from {
			return true
		}
	}
	return false
}

// 2. The critical sections of two clients that both still trusted their lease
// never overlap: a section runs from the grant's receipt to the last check after
// which the worker wrote. An overlap is excused only when the worker of the lease
// with the lower fence was frozen (SIGSTOP) between asking for it and the overlap,
// and the store refused every write it made from the overlap on.
func (a *analysis) checkOverlap() checkResult {
	r := checkResult{N: 2, Name: "no overlapping trusted sections"}
	var cs []*lease
	for _, l := range a.grants {
		if l.acted > 0 {
			cs = append(cs, l)
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].granted < cs[j].granted })
	pairs := 0
	stales, excused := map[*lease]bool{}, map[*lease]bool{}
	var active []*lease
	for _, b := range cs {
		keep := active[:0]
		for _, l := range active {
			if l.acted > b.granted {
				keep = append(keep, l)
			}
		}
		active = keep
		for _, o := range active {
			if o.w == b.w && o.inst == b.inst {
				continue // one process, one loop: its own sections cannot overlap
			}
			pairs++
			stale, newer := o, b
			if b.fence < o.fence {
				stale, newer = b, o
			}
			from := max(stale.granted, newer.granted)
			refused := true
			for _, s := range stale.stores {
				if s.T >= from && s.Accepted {
					refused = false
				}
			}
			stales[stale] = true
			// frozen at any time since it asked: a freeze may also have delayed the
			// grant's receipt
			if a.frozen(stale.w, stale.inst, min(stale.call, stale.granted), from) && refused {
				excused[stale] = true
				continue
			}
			why := "not frozen"
			if !refused {
				why = "the store accepted its late write"
			}
			r.violate("%s trusted until %s, after %s was granted at %s (%s)", stale, a.at(stale.acted), newer, a.at(newer.granted), why)
		}
		active = append(active, b)
	}
	r.Counts = fmt.Sprintf("sections %d; trusted past a later grant %d (overlapping pairs %d), of which excused (frozen, late write refused) %d",
		len(cs), len(stales), pairs, len(excused))
	return r
}

// 3. The store never accepted a fence lower than one it had accepted.
func (a *analysis) checkStore() checkResult {
	r := checkResult{N: 3, Name: "store fences never go back"}
	var writes, accepted int
	var top uint64
	for _, e := range a.in.Events {
		if e.Kind != event.Store {
			continue
		}
		writes++
		if !e.Accepted {
			continue
		}
		accepted++
		if e.Fence < top {
			r.violate("store accepted %s#%d fence %d at %s after fence %d", e.W, e.Inst, e.Fence, a.at(e.T), top)
		}
		top = max(top, e.Fence)
	}
	r.Counts = fmt.Sprintf("writes %d, accepted %d, refused %d", writes, accepted, writes-accepted)
	return r
}

// 4. At rest, counter = accepted releases = releases the clients saw succeed (plus
// those whose outcome they could not know), and no release was both applied and
// reported refused. Whether a release of fence F applied is read from the record:
// the next grant seen after F (or, after the last grant, the server's record at
// rest) shows F's counter + 1 if and only if it did, since only the holder of the
// current fence can change the record and grants nobody saw were never released.
func (a *analysis) checkReleases() checkResult {
	r := checkResult{N: 4, Name: "release outcomes truthful"}
	if a.in.FinalErr != "" {
		r.violate("no server record at rest: %s", a.in.FinalErr)
		r.Counts = "not judged"
		return r
	}
	// the first grant seen of each fence, by fence
	seen := map[uint64]*lease{}
	var fences []uint64
	for _, g := range a.grants {
		if seen[g.fence] == nil {
			seen[g.fence] = g
			fences = append(fences, g.fence)
		}
	}
	sort.Slice(fences, func(i, j int) bool { return fences[i] < fences[j] })
	applied := func(fence, value uint64) (bool, string) {
		i := sort.Search(len(fences), func(i int) bool { return fences[i] > fence })
		if i < len(fences) {
			g := seen[fences[i]]
			return g.counter == value, fmt.Sprintf("%s got counter %d", g, g.counter)
		}
		return a.in.Final.Counter == value, fmt.Sprintf("server's counter at rest %d", a.in.Final.Counter)
	}
	type rel struct {
		call  event.Event
		class string
		err   string
	}
	rels := map[leaseKey]*rel{}
	var order []leaseKey
	for _, e := range a.in.Events {
		k := leaseKey{e.W, e.Inst, e.Fence}
		switch e.Kind {
		case event.Release:
			rels[k] = &rel{call: e, class: event.Unknown, err: "no answer (killed, or the run ended)"}
			order = append(order, k)
		case event.ReleaseRet:
			if x := rels[k]; x != nil {
				x.class, x.err = e.Class, e.Err
			}
		}
	}
	n := map[string]int{}
	var nApplied, unknownApplied int
	for _, k := range order {
		x := rels[k]
		ok, why := applied(k.fence, x.call.Counter)
		n[x.class]++
		if ok {
			nApplied++
		}
		switch {
		case x.class == event.Refused && ok:
			n["refused-but-applied"]++
			r.violate("%s#%d %s fence %d at %s reported refused (%q) but applied: %s",
				k.w, k.inst, x.call.Op, k.fence, a.at(x.call.T), x.err, why)
		case x.class == event.OK && !ok:
			n["ok-but-lost"]++
			r.violate("%s#%d %s fence %d at %s reported ok but not applied: %s", k.w, k.inst, x.call.Op, k.fence, a.at(x.call.T), why)
		case x.class == event.Unknown && ok:
			unknownApplied++
		}
	}
	f := a.in.Final
	if f.Counter != f.Releases {
		r.violate("counter %d != releases the server accepted %d", f.Counter, f.Releases)
	}
	if uint64(nApplied) != f.Releases {
		r.violate("releases applied by the history %d != releases the server accepted %d", nApplied, f.Releases)
	}
	r.Counts = fmt.Sprintf("counter %d, server releases %d, applied by history %d; calls %d: ok %d, refused %d, unknown %d (applied %d); refused-but-applied %d, ok-but-lost %d",
		f.Counter, f.Releases, nApplied, len(order), n[event.OK], n[event.Refused], n[event.Unknown], unknownApplied,
		n["refused-but-applied"], n["ok-but-lost"])
	return r
}

// 5. No lease was reported valid (Err() == nil) after the client's own trust
// deadline had passed by its clock.
func (a *analysis) checkTrust() checkResult {
	r := checkResult{N: 5, Name: "no trust past the deadline"}
	var checks, past, pastRefused int
	var worst time.Duration
	for _, e := range a.in.Events {
		if e.Kind != event.Check {
			continue
		}
		checks++
		if !e.Past {
			continue
		}
		past++
		if !e.Trusted {
			pastRefused++
			continue
		}
		worst = max(worst, time.Duration(e.Late))
		r.violate("%s#%d fence %d: Err() nil at %s, %s after its trust deadline", e.W, e.Inst, e.Fence, a.at(e.T), time.Duration(e.Late).Round(time.Microsecond))
	}
	r.Counts = fmt.Sprintf("checks %d, past the deadline %d (reported lost %d, reported valid %d, worst %s late)",
		checks, past, pastRefused, past-pastRefused, worst.Round(time.Microsecond))
	return r
}
