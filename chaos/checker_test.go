package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

const ms = int64(time.Millisecond)

// cleanHistory is n honest turns of w0 and w1 taking the token in turn, 100 ms
// apart: acquire, grant, check, store write, release, answer. Turn i has fence i+1
// and finds counter i.
func cleanHistory(n int) *checkInput {
	var ev []event.Event
	add := func(e event.Event) { ev = append(ev, e) }
	for _, w := range []string{"w0", "w1"} {
		add(event.Event{T: 1, Kind: event.Spawn, W: w, Inst: 1})
	}
	for i := range n {
		w := fmt.Sprintf("w%d", i%2)
		t := int64(i+1) * 100 * ms
		f, c := uint64(i+1), uint64(i)
		add(event.Event{T: t - 90*ms, Kind: event.Acquire, W: w, Inst: 1})
		add(event.Event{T: t, Kind: event.Grant, W: w, Inst: 1, Fence: f, Counter: c, Call: t - 90*ms})
		add(event.Event{T: t + 10*ms, Kind: event.Check, W: w, Inst: 1, Fence: f, Trusted: true, Acted: true})
		add(event.Event{T: t + 11*ms, Kind: event.Store, W: w, Inst: 1, Fence: f, Sent: f, Accepted: true})
		add(event.Event{T: t + 50*ms, Kind: event.Release, Op: "release", W: w, Inst: 1, Fence: f, Counter: c + 1})
		add(event.Event{T: t + 60*ms, Kind: event.ReleaseRet, Op: "release", W: w, Inst: 1, Fence: f, Class: event.OK})
	}
	end := int64(n+1) * 100 * ms
	for _, w := range []string{"w0", "w1"} {
		add(event.Event{T: end + 10*ms, Kind: event.Exit, W: w, Inst: 1, Expected: true})
	}
	return &checkInput{Events: ev, Workers: []string{"w0", "w1"}, TTL: time.Second, HoldMax: 50 * time.Millisecond,
		ThinkMax: 10 * time.Millisecond, Stopping: end,
		Final: tokenStatus{Name: "counter", Fence: uint64(n), Counter: uint64(n), Releases: uint64(n)}}
}

// find returns the index of the first event of kind for w and fence.
func find(t *testing.T, in *checkInput, kind, w string, fence uint64) int {
	t.Helper()
	for i, e := range in.Events {
		if e.Kind == kind && e.W == w && e.Fence == fence {
			return i
		}
	}
	t.Fatalf("no %s of %s fence %d", kind, w, fence)
	return -1
}

func TestChecker(t *testing.T) {
	cases := []struct {
		name string
		mod  func(t *testing.T, in *checkInput)
		want []int // checks that must report violations; the others must not
	}{
		{"clean", func(*testing.T, *checkInput) {}, nil},
		{"fence granted twice", func(t *testing.T, in *checkInput) {
			in.Events[find(t, in, event.Grant, "w1", 4)].Fence = 3
			for _, k := range []string{event.Check, event.Store, event.Release, event.ReleaseRet} {
				in.Events[find(t, in, k, "w1", 4)].Fence = 3
			}
			in.Final.Fence, in.Final.Releases, in.Final.Counter = 10, 10, 10
		}, []int{1, 4}},
		{"fence goes back after a crash", func(t *testing.T, in *checkInput) {
			// w0 asks after fence 6 was received and is granted fence 4 again
			for _, k := range []string{event.Grant, event.Check, event.Store, event.Release, event.ReleaseRet} {
				in.Events[find(t, in, k, "w0", 7)].Fence = 4
			}
		}, []int{1, 3, 4}},
		{"overlap without a freeze", func(t *testing.T, in *checkInput) {
			// w0 (fence 3) checks and writes again after w1 got fence 4; the store
			// refuses, but w0 was never frozen
			in.Events = append(in.Events,
				event.Event{T: 410 * ms, Kind: event.Check, W: "w0", Inst: 1, Fence: 3, Trusted: true, Acted: true},
				event.Event{T: 415 * ms, Kind: event.Store, W: "w0", Inst: 1, Fence: 3, Sent: 3})
		}, []int{2}},
		{"overlap of a frozen holder, late write refused", func(t *testing.T, in *checkInput) {
			in.TTL = 100 * time.Millisecond // so that the run's end is after the fault's effects (check 7)
			in.Events = append(in.Events,
				event.Event{T: 320 * ms, Kind: event.Fault, Op: stopWorker, ID: 1, W: "w0", Inst: 1},
				event.Event{T: 405 * ms, Kind: event.Heal, Op: stopWorker, ID: 1, W: "w0", Inst: 1},
				event.Event{T: 410 * ms, Kind: event.Check, W: "w0", Inst: 1, Fence: 3, Trusted: true, Acted: true},
				event.Event{T: 415 * ms, Kind: event.Store, W: "w0", Inst: 1, Fence: 3, Sent: 3})
		}, nil},
		{"overlap of a frozen holder, late write accepted", func(t *testing.T, in *checkInput) {
			in.TTL = 100 * time.Millisecond
			in.Events = append(in.Events,
				event.Event{T: 320 * ms, Kind: event.Fault, Op: stopWorker, ID: 1, W: "w0", Inst: 1},
				event.Event{T: 405 * ms, Kind: event.Heal, Op: stopWorker, ID: 1, W: "w0", Inst: 1},
				event.Event{T: 406 * ms, Kind: event.Check, W: "w0", Inst: 1, Fence: 3, Trusted: true, Acted: true},
				event.Event{T: 407 * ms, Kind: event.Store, W: "w0", Inst: 1, Fence: 3, Sent: 3, Accepted: true})
		}, []int{2}}, // before w1's first write: the fence could not stop it
		{"grant received late by a frozen worker, late write refused", func(t *testing.T, in *checkInput) {
			// w0 was frozen before Acquire returned fence 3; it resumes after fence 4
			// went to w1 and is told (wrongly) that its lease is valid
			in.TTL = 100 * time.Millisecond
			for k, at := range map[string]int64{event.Grant: 402, event.Check: 403, event.Store: 404, event.Release: 405, event.ReleaseRet: 406} {
				in.Events[find(t, in, k, "w0", 3)].T = at * ms
			}
			c := &in.Events[find(t, in, event.Check, "w0", 3)]
			c.Past, c.Late = true, int64(50*time.Millisecond)
			in.Events[find(t, in, event.Store, "w0", 3)].Accepted = false
			in.Events = append(in.Events,
				event.Event{T: 250 * ms, Kind: event.Fault, Op: stopWorker, ID: 1, W: "w0", Inst: 1},
				event.Event{T: 401 * ms, Kind: event.Heal, Op: stopWorker, ID: 1, W: "w0", Inst: 1})
		}, []int{5}},
		{"frozen holder's late write accepted after a newer one", func(t *testing.T, in *checkInput) {
			in.TTL = 100 * time.Millisecond
			in.Events = append(in.Events,
				event.Event{T: 320 * ms, Kind: event.Fault, Op: stopWorker, ID: 1, W: "w0", Inst: 1},
				event.Event{T: 405 * ms, Kind: event.Heal, Op: stopWorker, ID: 1, W: "w0", Inst: 1},
				event.Event{T: 412 * ms, Kind: event.Check, W: "w0", Inst: 1, Fence: 3, Trusted: true, Acted: true},
				event.Event{T: 413 * ms, Kind: event.Store, W: "w0", Inst: 1, Fence: 3, Sent: 3, Accepted: true})
		}, []int{2, 3}},
		{"store accepts a lower fence", func(t *testing.T, in *checkInput) {
			in.Events = append(in.Events,
				event.Event{T: 455 * ms, Kind: event.Store, W: "w1", Inst: 1, Fence: 2, Accepted: true})
		}, []int{3}},
		{"release applied but reported refused (issue 13)", func(t *testing.T, in *checkInput) {
			r := &in.Events[find(t, in, event.ReleaseRet, "w0", 5)]
			r.Class, r.Err = event.Refused, "baton: stale fence: stale fence 5: current is 7"
		}, []int{4}},
		{"release reported ok but lost", func(t *testing.T, in *checkInput) {
			// the grant after fence 5 found the counter unchanged: 5's release did not apply
			for i := range in.Events {
				if e := &in.Events[i]; e.Kind == event.Grant && e.Fence >= 6 {
					e.Counter--
				}
				if e := &in.Events[i]; e.Kind == event.Release && e.Fence >= 6 {
					e.Counter--
				}
			}
			in.Final.Counter--
			in.Final.Releases--
		}, []int{4}},
		{"release outcome unknown, applied", func(t *testing.T, in *checkInput) {
			r := &in.Events[find(t, in, event.ReleaseRet, "w0", 5)]
			r.Class, r.Err = event.Unknown, "baton: outcome unknown"
		}, nil},
		{"release unanswered (killed), not applied", func(t *testing.T, in *checkInput) {
			// w1 is killed after sending its release of fence 20, the last; the
			// server reclaims the token and the record stays at 19
			i := find(t, in, event.ReleaseRet, "w1", 20)
			in.Events = append(in.Events[:i], in.Events[i+1:]...)
			in.Final.Counter, in.Final.Releases = 19, 19
		}, nil},
		{"counter differs from accepted releases", func(t *testing.T, in *checkInput) {
			in.Final.Releases = 11
		}, []int{4}},
		{"lease valid after its deadline (issue 13)", func(t *testing.T, in *checkInput) {
			c := &in.Events[find(t, in, event.Check, "w1", 2)]
			c.Past, c.Late = true, int64(140*time.Millisecond)
		}, []int{5}},
		{"lease reported lost after its deadline", func(t *testing.T, in *checkInput) {
			c := &in.Events[find(t, in, event.Check, "w1", 2)]
			c.Past, c.Late, c.Trusted, c.Acted, c.Err = true, int64(time.Millisecond), false, false, "baton: session expired"
		}, nil},
		{"no grant for long with no fault", func(t *testing.T, in *checkInput) {
			delayFromFence6(in, 2*time.Second)
		}, []int{6}},
		{"isolated fault heals slowly", func(t *testing.T, in *checkInput) {
			delayFromFence6(in, 3*time.Second)
			in.Events = append(in.Events,
				event.Event{T: 555 * ms, Kind: event.Fault, Op: hupServer, ID: 1, W: "server", Inst: 1},
				event.Event{T: 555 * ms, Kind: event.Heal, Op: hupServer, ID: 1, W: "server", Inst: 1})
		}, []int{6}},
		{"leader lost, next grant within an election and a redial", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			delayFromFence6(in, 4*time.Second)
			in.Events = append(in.Events,
				event.Event{T: 555 * ms, Kind: event.Fault, Op: killLeader, ID: 1, W: "s1", Inst: 1},
				event.Event{T: 900 * ms, Kind: event.Heal, Op: killLeader, ID: 1, W: "s1", Inst: 1})
		}, nil},
		{"leader lost, no grant for too long", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			delayFromFence6(in, 7*time.Second)
			in.Events = append(in.Events,
				event.Event{T: 555 * ms, Kind: event.Fault, Op: pauseLeader, ID: 1, W: "s1", Inst: 1},
				event.Event{T: 3 * time.Second.Nanoseconds(), Kind: event.Heal, Op: pauseLeader, ID: 1, W: "s1", Inst: 1})
		}, []int{6}},
		{"leader cut off, steps down, next grant within an election and a redial", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			delayFromFence6(in, 4*time.Second)
			in.Events = append(in.Events, cutLeaderEvents(555, 2000, []string{"leader@50", "follower@800", "leader@5000"}, "follower@4000")...)
		}, nil},
		{"cut-off leader seen leading throughout the cut", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			in.TTL = 100 * time.Millisecond // the run's end after the fault's effects (check 7)
			delayFromFence6(in, 4*time.Second)
			in.Events = append(in.Events, cutLeaderEvents(555, 3000, []string{"leader@50"}, "follower@900")...)
		}, []int{6}},
		{"cut-off leader steps down too late", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			in.TTL = 100 * time.Millisecond // the run's end after the fault's effects (check 7)
			delayFromFence6(in, 4*time.Second)
			in.Events = append(in.Events, cutLeaderEvents(555, 3000, []string{"leader@50", "follower@2700"}, "follower@900")...)
		}, []int{6}},
		{"leadership moved before the cut: nothing to step down from", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			in.TTL = 100 * time.Millisecond // the run's end after the fault's effects (check 7)
			delayFromFence6(in, 4*time.Second)
			in.Events = append(in.Events, cutLeaderEvents(555, 2000, []string{"leader@50", "follower@500"}, "follower@900")...)
		}, nil},
		{"cut-off leader, no grant for too long", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			delayFromFence6(in, 7*time.Second)
			in.Events = append(in.Events, cutLeaderEvents(555, 2000, []string{"leader@50", "follower@800"}, "follower@4000")...)
		}, []int{6}},
		{"follower cut off, the token flows on", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			in.TTL = 100 * time.Millisecond  // the run's end after the fault's effects (check 7)
			delayFromFence6(in, time.Second) // 1.045 s from the cut to the next grant: within a quiet gap
			in.Events = append(in.Events, partialCutEvents(cutFollower, "s3", "s3", 555, 1000, nil)...)
		}, nil},
		{"follower cut off, no grant for longer than a quiet gap", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			in.TTL = 100 * time.Millisecond
			delayFromFence6(in, 1500*time.Millisecond)
			in.Events = append(in.Events, partialCutEvents(cutFollower, "s3", "s3", 555, 1000, nil)...)
		}, []int{6}},
		{"follower misrouted, no grant for longer than a quiet gap", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			in.TTL = 100 * time.Millisecond
			delayFromFence6(in, 1500*time.Millisecond)
			in.Events = append(in.Events, partialCutEvents(misroute, "s3", "s3", 555, 1000, nil)...)
		}, []int{6}},
		{"link cut, next grant within an election and a redial", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			delayFromFence6(in, 4*time.Second)
			in.Events = append(in.Events, partialCutEvents(cutLink, "s1-s2", "s2", 555, 2000, nil)...)
		}, nil},
		{"link cut, no grant for too long", func(t *testing.T, in *checkInput) {
			in.Servers = 3
			delayFromFence6(in, 7*time.Second)
			in.Events = append(in.Events, partialCutEvents(cutLink, "s1-s2", "s2", 555, 2000, nil)...)
		}, []int{6}},
		{"a worker makes no progress after the last fault", func(t *testing.T, in *checkInput) {
			in.Events = append(in.Events,
				event.Event{T: 5 * ms, Kind: event.Fault, Op: closeConns, ID: 1, W: "server", Inst: 1},
				event.Event{T: 5 * ms, Kind: event.Heal, Op: closeConns, ID: 1, W: "server", Inst: 1})
			in.TTL = 100 * time.Millisecond // effects over by 1.205 s
			// from fence 11 on, w1 takes w0's turns too
			for i := range in.Events {
				if e := &in.Events[i]; e.W == "w0" && e.Fence >= 11 {
					e.W = "w1"
				}
			}
		}, []int{7}},
		{"a worker exits by itself", func(t *testing.T, in *checkInput) {
			in.Events = append(in.Events, event.Event{T: 700 * ms, Kind: event.Exit, W: "w1", Inst: 1, Err: "exit status 2"})
		}, []int{8}},
		{"a worker will not stop", func(t *testing.T, in *checkInput) {
			in.Events = append(in.Events, event.Event{T: 1700 * ms, Kind: event.Stuck, W: "w1", Inst: 1})
		}, []int{8}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := cleanHistory(20)
			tc.mod(t, in)
			expectViolations(t, in, tc.want)
		})
	}
}

// expectViolations checks in (its events put in order) and fails unless exactly
// the checks in want report violations; it returns the results.
func expectViolations(t *testing.T, in *checkInput, want []int) []checkResult {
	t.Helper()
	sort.SliceStable(in.Events, func(i, j int) bool { return in.Events[i].T < in.Events[j].T })
	res := check(in)
	wanted := map[int]bool{}
	for _, n := range want {
		wanted[n] = true
	}
	var b strings.Builder
	for _, r := range res {
		fmt.Fprintf(&b, "check %d %s: %d: %s %q\n", r.N, r.Name, r.Violations, r.Counts, r.Examples)
	}
	for _, r := range res {
		if wanted[r.N] && r.Violations == 0 {
			t.Errorf("check %d (%s) found nothing\n%s", r.N, r.Name, &b)
		}
		if !wanted[r.N] && r.Violations > 0 {
			t.Errorf("check %d (%s) reported %d violations\n%s", r.N, r.Name, r.Violations, &b)
		}
	}
	return res
}

// TestCheckerHeardLeader: check 9 on a 10 s history of three servers, s2 leading
// in term 2 from the start, and a misroute of s3 (its connections reach s1) from
// 1 s to 3 s: s3 hears no leader during it, and must be seen naming s2 again
// within hearLeader (4 s) of the heal, unless a server fault comes first; a
// server (re)started around the heal has its boot allowance, and is not credited
// with what its previous process said.
func TestCheckerHeardLeader(t *testing.T) {
	cases := []struct {
		name   string
		events []string // added to the history (heardEvent)
		want   []int
		says   string // check 9's examples must contain it
	}{
		{"the misrouted follower hears the leader again within the bound",
			[]string{"role s3#1 follower:s2@3200"}, nil, ""},
		{"at once: it named the leader at the heal",
			[]string{"role s3#1 follower:s2@2990"}, nil, ""},
		{"the misrouted follower never hears the leader again",
			nil, []int{9}, "s3 not seen naming the leader for 4s from 3.000s, after misroute #1 of s3 healed (bound 4s)"},
		{"it hears the leader only after the bound",
			[]string{"role s3#1 follower:s2@7500"}, []int{9}, "s3 not seen naming the leader"},
		{"it names another leader than the one the harness knows",
			[]string{"role s3#1 follower:s1@3200"}, []int{9}, "s3 not seen naming the leader"},
		{"a server fault before the bound ends the wait; the next heal is judged",
			[]string{"fault s1#2 cut-follower@4000", "heal s1#2 cut-follower@5000", "role s3#1 follower:s2@5500"}, nil, ""},
		{"after that server fault too, it never hears the leader",
			[]string{"fault s1#2 cut-follower@4000", "heal s1#2 cut-follower@5000"}, []int{9}, "from 5.000s, after cut-follower #2 of s1 healed"},
		{"faults overlapping at the heal are judged after the last of them",
			[]string{"fault s1#2 cut-follower@2500", "heal s1#2 cut-follower@4000", "role s3#1 follower:s2@7500"}, nil, ""},
		{"a server restarted at the heal has its boot allowance",
			[]string{"fault s1#2 kill-server@2500", "exit s1#1 @2500", "spawn s1#2 @2900", "heal s1#2 kill-server@3000",
				"role s3#1 follower:s2@3200", "role s1#2 follower:s2@8500"}, nil, ""},
		{"and no more",
			[]string{"fault s1#2 kill-server@2500", "exit s1#1 @2500", "spawn s1#2 @2900", "heal s1#2 kill-server@3000",
				"role s3#1 follower:s2@3200", "role s1#2 follower:s2@9000"},
			[]int{9}, "s1 not seen naming the leader for 5.9s from 3.000s, after misroute #1 of s3, kill-server #2 of s1 healed (bound 4s from its start 100ms before, + boot 2s)"},
		{"a restarted server is not credited with its previous process's view",
			[]string{"fault s1#2 kill-server@2500", "exit s1#1 @2500", "spawn s1#2 @2900", "heal s1#2 kill-server@3000",
				"role s3#1 follower:s2@3200"}, []int{9}, "s1 not seen naming the leader"},
		{"a server that is down is not judged",
			[]string{"exit s1#1 @2500", "role s3#1 follower:s2@3200"}, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := cleanHistory(100) // grants every 100 ms for 10 s
			in.Servers = 3
			in.TTL = 100 * time.Millisecond // the run's end after the faults' effects (check 7)
			for _, s := range []string{"s1", "s2", "s3"} {
				in.Events = append(in.Events, event.Event{T: 1, Kind: event.Spawn, W: s, Inst: 1})
			}
			in.Events = append(in.Events, event.Event{T: 50 * ms, Kind: event.Lead, W: "s2", Term: 2})
			for _, line := range []string{"fault s3#1 misroute@1000", "heal s3#1 misroute@3000",
				"role s1#1 follower:s2@50", "role s2#1 leader:s2@50", "role s3#1 follower:s2@50", "role s3#1 candidate@1400"} {
				in.Events = append(in.Events, heardEvent(t, line))
			}
			for _, line := range tc.events {
				in.Events = append(in.Events, heardEvent(t, line))
			}
			res := expectViolations(t, in, tc.want)
			if tc.says != "" && !strings.Contains(fmt.Sprint(res[8].Examples), tc.says) {
				t.Errorf("check 9 says %q, want %q in it", res[8].Examples, tc.says)
			}
		})
	}
}

// heardEvent is one event of TestCheckerHeardLeader, from "kind w#n what@ms":
// "role s3#1 follower:s2@3200" (s3's first process follows s2, by its /status;
// "candidate" names none), "fault s1#2 cut-follower@4000" and "heal s1#2
// cut-follower@5000" (fault 2, aimed at s1), "spawn s1#2 @2900" and "exit s1#1
// @2500" (s1's second process started, its first killed by the nemesis).
func heardEvent(t *testing.T, line string) event.Event {
	t.Helper()
	var kind, who, what string
	if n, _ := fmt.Sscan(line, &kind, &who, &what); n != 3 {
		t.Fatalf("bad event %q", line)
	}
	w, nText, _ := strings.Cut(who, "#")
	op, at, _ := strings.Cut(what, "@")
	var n int
	var atMs int64
	if _, err := fmt.Sscan(nText, &n); err != nil {
		t.Fatalf("bad event %q: %v", line, err)
	}
	if _, err := fmt.Sscan(at, &atMs); err != nil {
		t.Fatalf("bad event %q: %v", line, err)
	}
	e := event.Event{T: atMs * ms, W: w}
	switch kind {
	case "role":
		e.Kind, e.Inst = event.Role, n
		e.Op, e.Leader, _ = strings.Cut(op, ":")
	case "fault":
		e.Kind, e.Op, e.Target, e.ID, e.Inst = event.Fault, op, w, n, 1
	case "heal":
		e.Kind, e.Op, e.Target, e.ID, e.Inst = event.Heal, op, w, n, 1
	case "spawn":
		e.Kind, e.Inst = event.Spawn, n
	case "exit":
		e.Kind, e.Inst, e.Expected = event.Exit, n, true
	default:
		t.Fatalf("bad event kind in %q", line)
	}
	return e
}

// TestPlan: a schedule is a function of its seed, bounded in count and time, and
// every fault heals before the end.
func TestPlan(t *testing.T) {
	c := planConfig{Seed: 42, Workers: 5, Servers: 3, TTL: time.Second, Start: time.Second, End: 240 * time.Second, Max: 1000,
		Holder: 0.5, Calm: 0.2, Recover: 3 * time.Second}
	a, b := plan(c), plan(c)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("same seed, different plans")
	}
	c.Seed = 43
	if fmt.Sprint(a) == fmt.Sprint(plan(c)) {
		t.Fatal("different seeds, same plan")
	}
	kinds := map[string]int{}
	for _, f := range a {
		if f.At < c.Start || f.At+f.Dur > c.End {
			t.Errorf("%s outside [%s, %s]", f, c.Start, c.End)
		}
		if f.Server < 0 || f.Server >= c.Servers {
			t.Errorf("%s: server %d of %d", f, f.Server, c.Servers)
		}
		if (f.Kind == pauseLeader || needsRaftNet(f.Kind)) && (f.Dur < c.TTL || f.Dur > 3*c.TTL) {
			t.Errorf("%s: a pause of the leader or a raft cut outside [TTL, 3 TTL]", f)
		}
		if (f.Kind == cutFollower || f.Kind == cutLink || f.Kind == misroute) && (f.Follower < 0 || f.Follower >= c.Servers-1) {
			t.Errorf("%s: follower %d of %d servers that do not lead", f, f.Follower, c.Servers-1)
		}
		kinds[f.Kind]++
	}
	for _, k := range allKinds {
		if kinds[k] == 0 {
			t.Errorf("no %s in %d faults", k, len(a))
		}
	}
	isolated := 0
	for i, f := range a {
		alone := true
		for j, o := range a {
			if i != j && o.At <= f.At+f.Dur+c.Recover && o.At+o.Dur+c.Recover >= f.At {
				alone = false
			}
		}
		if alone {
			isolated++
		}
	}
	if isolated == 0 {
		t.Errorf("no isolated fault in %d", len(a))
	}
	c.Max = 3
	if n := len(plan(c)); n != 3 {
		t.Errorf("Max 3: %d faults", n)
	}
}

// TestLeaderFigures: after a leader is killed, the time to the next leader (a
// higher term) and to the next grant, and whether the lease held then was released.
func TestLeaderFigures(t *testing.T) {
	in := cleanHistory(30) // grants every 100 ms from 100 ms
	in.Events = append(in.Events,
		event.Event{T: 50 * ms, Kind: event.Lead, W: "s1", Term: 2},
		// w0 holds fence 11 (granted at 1.1 s, released at 1.15 s) when s1 dies at 1.12 s
		event.Event{T: 1120 * ms, Kind: event.Fault, Op: killLeader, W: "s1", Target: "s1", ID: 1},
		event.Event{T: 1500 * ms, Kind: event.Heal, Op: killLeader, W: "s1", Target: "s1", ID: 1},
		event.Event{T: 1170 * ms, Kind: event.Lead, W: "s2", Term: 3},
		// a follower's kill is no loss of the leader
		event.Event{T: 2050 * ms, Kind: event.Fault, Op: killServer, W: "s3", Target: "s3", ID: 2},
		event.Event{T: 2060 * ms, Kind: event.Heal, Op: killServer, W: "s3", Target: "s3", ID: 2},
	)
	sort.SliceStable(in.Events, func(i, j int) bool { return in.Events[i].T < in.Events[j].T })
	changes, losses := analyse(in).leaderFigures()
	if changes != 1 {
		t.Errorf("leader changes %d, want 1", changes)
	}
	if len(losses) != 1 || losses[0].kind != killLeader {
		t.Fatalf("losses %v, want one kill-leader", losses)
	}
	x := losses[0]
	if !slices.Equal(x.toLeader, []time.Duration{50 * time.Millisecond}) {
		t.Errorf("to the next leader %v, want 50ms", x.toLeader)
	}
	if !slices.Equal(x.toGrant, []time.Duration{80 * time.Millisecond}) {
		t.Errorf("to the next grant %v, want 80ms", x.toGrant)
	}
	if x.held[event.OK] != 1 || len(x.held) != 1 {
		t.Errorf("held %v, want one released ok", x.held)
	}
	t.Log(x)
}

// TestLeaderFiguresCutLeader: a cut-off leader counts as a loss of the leader, with
// the time until it was seen not leading.
func TestLeaderFiguresCutLeader(t *testing.T) {
	in := cleanHistory(30)
	in.Events = append(in.Events, cutLeaderEvents(1120, 2500, []string{"leader@50", "follower@1420"}, "follower@1400")...)
	sort.SliceStable(in.Events, func(i, j int) bool { return in.Events[i].T < in.Events[j].T })
	_, losses := analyse(in).leaderFigures()
	if len(losses) != 1 || losses[0].kind != cutLeader {
		t.Fatalf("losses %v, want one cut-leader", losses)
	}
	x := losses[0]
	if !slices.Equal(x.stepDown, []time.Duration{300 * time.Millisecond}) {
		t.Errorf("stepped down after %v, want 300ms", x.stepDown)
	}
	if !slices.Equal(x.toLeader, []time.Duration{580 * time.Millisecond}) {
		t.Errorf("to the next leader %v, want 580ms", x.toLeader)
	}
	if !strings.Contains(x.String(), "stepped down median 300ms") {
		t.Errorf("figures %q do not say when it stepped down", x)
	}
	t.Log(x)
}

// TestPartialFigures: after a cut of a follower or of a link, whether the
// leadership moved, the time to the next grant, and what the cut follower did.
func TestPartialFigures(t *testing.T) {
	in := cleanHistory(150) // grants every 100 ms from 100 ms to 15 s
	for _, s := range []string{"s1", "s2", "s3"} {
		in.Events = append(in.Events, event.Event{T: 1, Kind: event.Spawn, W: s, Inst: 1})
	}
	in.Events = append(in.Events, event.Event{T: 50 * ms, Kind: event.Lead, W: "s1", Term: 2})
	// s3 cut off from 1.12 s to 2.5 s: it campaigns and follows s1 again 200 ms after the heal
	in.Events = append(in.Events, partialCutEvents(cutFollower, "s3", "s3", 1120, 2500, []string{"follower:s1@50", "candidate@1500", "follower:s1@2700"})...)
	// the link s1-s2 cut from 6 s to 7 s; s2 campaigns; s3 leads in term 3 at 7.3 s
	in.Events = append(in.Events, partialCutEvents(cutLink, "s1-s2", "s2", 6000, 7000, []string{"follower:s1@50", "candidate@6400", "follower:s3@7300"})...)
	in.Events = append(in.Events, event.Event{T: 7300 * ms, Kind: event.Lead, W: "s3", Term: 3})
	// s1 misrouted from 10.5 s to 11.5 s: it campaigns, falls back to follower
	// knowing no leader at 11.6 s, and names s3 at 11.9 s
	in.Events = append(in.Events, roleEvent("s1", "follower:s3@7400"))
	in.Events = append(in.Events, partialCutEvents(misroute, "s1", "s1", 10500, 11500, []string{"candidate@10900", "follower@11600", "follower:s3@11900"})...)
	sort.SliceStable(in.Events, func(i, j int) bool { return in.Events[i].T < in.Events[j].T })
	got := analyse(in).partialFigures()
	if len(got) != 3 || got[0].kind != cutFollower || got[1].kind != cutLink || got[2].kind != misroute {
		t.Fatalf("figures %v, want a cut-follower, a cut-link and a misroute", got)
	}
	f, l, m := got[0], got[1], got[2]
	if f.n != 1 || f.alone != 1 || f.moved != 0 || !slices.Equal(f.toGrant, []time.Duration{80 * time.Millisecond}) ||
		f.campaigned != 1 || !slices.Equal(f.settled, []time.Duration{200 * time.Millisecond}) {
		t.Errorf("cut-follower: %+v; want 1 alone, not moved, next grant 80ms, campaigned, naming the leader 200ms after the heal", *f)
	}
	if l.n != 1 || l.alone != 1 || l.moved != 1 || l.movedAlone != 1 || !slices.Equal(l.toGrant, []time.Duration{100 * time.Millisecond}) ||
		l.campaigned != 1 || !slices.Equal(l.settled, []time.Duration{300 * time.Millisecond}) {
		t.Errorf("cut-link: %+v; want 1 alone, moved, next grant 100ms, campaigned, naming the new leader 300ms after the heal", *l)
	}
	if m.n != 1 || m.alone != 1 || m.moved != 0 || m.campaigned != 1 || !slices.Equal(m.settled, []time.Duration{400 * time.Millisecond}) {
		t.Errorf("misroute: %+v; want 1 alone, not moved, campaigned, naming the leader 400ms after the heal (not at 100ms, following none)", *m)
	}
	if !strings.Contains(l.String(), "leadership moved 1 (alone: 1 of 1)") {
		t.Errorf("figures %q do not say the leadership moved", l)
	}
	if !strings.Contains(m.String(), "the misrouted follower campaigned 1, naming the leader after the heal median 400ms") {
		t.Errorf("figures %q do not say when the misrouted follower named the leader", m)
	}
	for _, x := range got {
		t.Log(x)
	}
}

// partialCutEvents is a cut-follower or cut-link (target, named by the follower w)
// from start to heal (ms), and w's own raft states (roleEvent) as the watcher saw
// them.
func partialCutEvents(kind, target, w string, start, heal int64, roles []string) []event.Event {
	ev := []event.Event{
		{T: start * ms, Kind: event.Fault, Op: kind, ID: int(start), W: w, Target: target, Inst: 1, Term: 2},
		{T: heal * ms, Kind: event.Heal, Op: kind, ID: int(start), W: w, Target: target, Inst: 1},
	}
	for _, s := range roles {
		ev = append(ev, roleEvent(w, s))
	}
	return ev
}

// roleEvent is server w's own raft state as the watcher saw it (its first
// process), from "state@ms" or "state:leader@ms" (the leader it names).
func roleEvent(w, s string) event.Event {
	state, at, _ := strings.Cut(s, "@")
	var t int64
	fmt.Sscan(at, &t)
	e := event.Event{T: t * ms, Kind: event.Role, W: w, Inst: 1}
	e.Op, e.Leader, _ = strings.Cut(state, ":")
	return e
}

// cutLeaderEvents is a cut-leader of s1 from start to heal (ms), s1's own raft
// states ("state@ms") as the watcher saw them, and s2's ("follower@ms" then
// leader one term up, 300 ms later).
func cutLeaderEvents(start, heal int64, s1 []string, s2 string) []event.Event {
	ev := []event.Event{
		{T: 50 * ms, Kind: event.Lead, W: "s1", Term: 2},
		{T: start * ms, Kind: event.Fault, Op: cutLeader, ID: 1, W: "s1", Target: "s1", Inst: 1, Err: "aimed at the leader", Term: 2},
		{T: heal * ms, Kind: event.Heal, Op: cutLeader, ID: 1, W: "s1", Target: "s1", Inst: 1},
	}
	for _, s := range s1 {
		ev = append(ev, roleEvent("s1", s))
	}
	f := roleEvent("s2", s2)
	ev = append(ev, f, event.Event{T: f.T + 300*ms, Kind: event.Role, W: "s2", Op: "leader", Term: 3},
		event.Event{T: f.T + 300*ms, Kind: event.Lead, W: "s2", Term: 3})
	return ev
}

// delayFromFence6 moves the grants from fence 6 on, the exits and the end of the
// run d later: a gap in the token's flow of d.
func delayFromFence6(in *checkInput, d time.Duration) {
	for i := range in.Events {
		if e := &in.Events[i]; e.Fence >= 6 || e.Kind == event.Exit {
			e.T += int64(d)
		}
	}
	in.Stopping += int64(d)
}
