//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

// failoverBound is how soon the token must move again after the leader is lost:
// an election (raft's timeouts are 300 ms; on a busy 2-core machine several
// rounds may be needed), then at most one TTL, the grace a new leader gives every
// session before it expires any, and slack for the clients to reconnect.
func (d *deployment) failoverBound() time.Duration { return 2*d.ttl + 5*time.Second }

// loseLeader takes the leader away with inject, and checks what users rely on: a
// follower takes over, the token moves again within failoverBound, fences never go
// back, no two clients' critical sections overlap, and counter = accepted releases.
// Then heal gives the old leader back, and the cluster must become whole again with
// it as a follower.
//
// It reports the leader-loss → next grant time: from the moment the docker command
// was issued to the first grant the new leader made, by the new leader's clock (the
// host's: its /status lists its latest grants with their time).
func (d *deployment) loseLeader(what string, inject, heal func(container)) {
	d.t.Helper()
	d.settled(60*time.Second, "before the "+what)
	since := time.Now() // what the clients do from here on is checked
	st0, lc, err := d.leader()
	if err != nil {
		d.fatalf("%v", err)
	}
	before := tokenOf(st0.Tokens)
	at := time.Now()
	inject(lc)
	injected := time.Since(at)

	var lead server.Status
	var elected time.Duration
	var grant server.Event
	d.eventually(d.failoverBound()+10*time.Second, "another server to lead and grant the token after the "+what, func() bool {
		st, c, err := d.leader()
		if err != nil || c.Node == lc.Node {
			return false
		}
		if elected == 0 {
			elected = time.Since(at)
		}
		lead = st
		for _, g := range st.Grants {
			if g.Kind == "grant" && g.Token == "counter" && g.Time.After(at) {
				grant = g
				return true
			}
		}
		return false
	})
	moved := grant.Time.Sub(at)
	d.t.Logf("%s of leader %s (term %d, fence %d; `docker` took %s): %s leads (term %d), seen %s after; its first grant %s after (fence %d to %s)",
		what, lc.Node, st0.Raft.Term, before.Fence, injected.Round(time.Millisecond), lead.Raft.ID, lead.Raft.Term,
		elected.Round(time.Millisecond), moved.Round(time.Millisecond), grant.Fence, grant.Node)
	// Where the time went, by the clocks of this host (the containers share it): when
	// the process died (a kill: docker's record of the exit), when the new leader
	// began to serve (its "leader" event), and its first grant.
	if what == "kill" {
		if died, err := time.Parse(time.RFC3339Nano, d.docker("inspect", "-f", "{{.State.FinishedAt}}", lc.ID)); err == nil {
			serving := "?"
			for _, e := range lead.Events {
				if e.Kind == "leader" && e.Time.After(at) {
					serving = e.Time.Sub(died).Round(time.Millisecond).String()
				}
			}
			d.t.Logf("from the leader's death (%s after the command): serving again %s after, first grant %s after",
				died.Sub(at).Round(time.Millisecond), serving, grant.Time.Sub(died).Round(time.Millisecond))
		}
	}
	if moved > d.failoverBound() {
		d.errorf("the token moved again %s after the %s, want within %s (an election, then one TTL of grace)", moved, what, d.failoverBound())
	}
	// The old leader may have decided a grant it never committed (its status showed
	// it; no client ever got it): the new leader may grant that number once more.
	if grant.Fence < before.Fence {
		d.errorf("fence went back: %d granted after the %s, %d before", grant.Fence, what, before.Fence)
	}
	d.checkToken(what)
	first := d.firstGrantAfter(grant.Time.Add(-time.Millisecond), 30*time.Second, "a client's critical section under the new leader")
	d.t.Logf("a client's first critical section under the new leader began %s after the %s (fence %d)", first.Start.Sub(at).Round(time.Millisecond), what, first.Fence)

	// A holder that stays alive keeps its lease across a failover (rule 7), if it
	// finds the new leader within the TTL of grace: reported, not judged, as on a busy
	// machine the clients may take about as long as the suite's 3 s TTL to get there.
	if st, _, err := d.leader(); err == nil {
		var reclaims []string
		for _, e := range st.Events {
			if e.Kind == "reclaim" && e.Time.After(at) {
				reclaims = append(reclaims, fmt.Sprintf("%s of %s (fence %d) %s after", e.Detail, e.Node, e.Fence, e.Time.Sub(at).Round(time.Millisecond)))
			}
		}
		d.t.Logf("reclaims by the new leader since the %s: %d %v", what, len(reclaims), reclaims)
	}

	healAt := time.Now()
	heal(lc)
	d.settled(90*time.Second, "after the "+what+" was undone")
	st, _, err := d.leader()
	if err != nil {
		d.fatalf("%v", err)
	}
	d.t.Logf("%s back: the cluster whole %s after the %s was undone; %s leads (term %d)", lc.Node,
		time.Since(healAt).Round(time.Millisecond), what, st.Raft.ID, st.Raft.Term)
	d.checkToken("the " + what + " undone")

	// What the clients saw from just before the fault: no overlap, fences rising.
	var ivs []worker.Interval
	outcomes := map[string]int{}
	for _, iv := range d.sections() {
		if iv.Start.After(since) {
			ivs = append(ivs, iv)
			outcomes[iv.Outcome]++
		}
	}
	d.checkSections(ivs)
	var seen []string
	for o, n := range outcomes {
		seen = append(seen, fmt.Sprintf("%s %d", o, n))
	}
	slices.Sort(seen)
	d.t.Logf("%d critical sections since just before the %s checked for overlap and rising fences; releases: %s", len(ivs), what, strings.Join(seen, ", "))
}

// checkToken checks the token on the leader: counter = accepted releases.
func (d *deployment) checkToken(when string) {
	d.t.Helper()
	tk := d.token()
	if tk.Counter != tk.Releases {
		d.errorf("after %s: counter %d != accepted releases %d", when, tk.Counter, tk.Releases)
	}
}

// 10. `docker kill` of the leader: a follower takes over; the killed server, started
// again from its directory in the volume, comes back as a follower.
func scenarioKillLeader(d *deployment, _ time.Time) {
	d.loseLeader("kill",
		func(c container) { d.docker("kill", "-s", "KILL", c.ID) },
		// docker kill is a stop by hand: restart: always does not bring it back.
		func(c container) { d.docker("start", c.ID) })
}

// 11. `docker pause` of the leader, then unpause: a follower takes over; the old
// leader, frozen mid-term, learns it was deposed and follows.
func scenarioPauseLeader(d *deployment, _ time.Time) {
	d.loseLeader("pause",
		func(c container) { d.docker("pause", c.ID) },
		func(c container) { d.docker("unpause", c.ID) })
}

// 12. `docker network disconnect` of the leader, then connect: the others elect a
// leader; the old one, cut off from every client and server, follows once back.
func scenarioDisconnectLeader(d *deployment, _ time.Time) {
	network := d.project + "_default"
	d.loseLeader("network disconnect",
		func(c container) { d.docker("network", "disconnect", network, c.ID) },
		func(c container) { d.docker("network", "connect", network, c.ID) })
}
