package main

import (
	"fmt"
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

// Liveness bounds, from the documented behaviour (README, How it stays correct):
// release → next grant at once; holder dies → within 1 s; holder frozen or cut off →
// when its session expires, one TTL; HUP and close-connections → clients resume in
// well under 1 s; server crash → down for the fault's length, then tokens that were
// held wait one TTL, and clients redial within their 1 s backoff. slack absorbs a
// loaded machine.
const slack = time.Second

// recoverAfter is how long a fault's effects may last after it heals (a redial, the
// grace after a crash); a gap is judged "with no fault active" only outside it.
func (in *checkInput) recoverAfter() time.Duration { return 2*in.TTL + time.Second }

func (in *checkInput) quietGapBound() time.Duration { return 2*in.HoldMax + in.ThinkMax + slack }

func (in *checkInput) faultBound(kind string, dur time.Duration) time.Duration {
	switch kind {
	case killWorker:
		return time.Second + in.HoldMax + slack
	case stopWorker, partition:
		return in.TTL + 2*in.HoldMax + slack
	case hupServer, closeConns:
		return time.Second + in.HoldMax + slack
	case killServer:
		return dur + in.TTL + 2*time.Second + in.HoldMax + slack
	}
	return in.recoverAfter()
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
	grants []*lease // by granted time
	faults []span   // by start
}

func analyse(in *checkInput) *analysis {
	a := &analysis{in: in, leases: map[leaseKey]*lease{}}
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

// at formats a CLOCK_MONOTONIC stamp as seconds since the run's first event.
func (a *analysis) at(t int64) string { return fmt.Sprintf("%.3fs", float64(t-a.t0)/1e9) }

func check(in *checkInput) []checkResult {
	a := analyse(in)
	return []checkResult{a.checkFences(), a.checkOverlap(), a.checkStore(), a.checkReleases(),
		a.checkTrust(), a.checkLiveness(), a.checkProgress(), a.checkExits()}
}

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
		if f.kind == killServer {
			crashes++
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
	r.Counts = strings.Join(parts, "; ")
	return r
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
			}
		case event.Stuck:
			r.violate("%s#%d did not exit within its deadline when told to stop", e.W, e.Inst)
		case "garbage":
			r.violate("%s#%d wrote a line that is not an event: %.80q", e.W, e.Inst, e.Err)
		}
	}
	r.Counts = fmt.Sprintf("processes %d, exits %d (killed or told %d)", spawns, exits, expected)
	return r
}
