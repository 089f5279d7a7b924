package cluster

import (
	"math"
	"time"

	"github.com/hashicorp/memberlist"
)

// A name announced at a second address while the cluster still takes the node at
// the first for alive is one of two things, and they need opposite words:
//
//   - a node that restarted at a new address (a container recreated) before its old
//     instance was declared dead: memberlist keeps the old address until then, and
//     then lets the new instance have the name (DeadNodeReclaimTime). Nothing is
//     wrong; it passes within memberlist's failure detection.
//   - two live processes with one name (BATON_NODE_NAME, or one hostname): the first
//     keeps answering at its address, and the two processes' sessions take each
//     other for reboots and end each other's, over and over. A mistake to fix.
//
// So a conflict is first only noted (INFO), and judged once failure detection has
// had its time, twice over: the name still alive at its first address at both looks
// is the mistake (ERROR, with the fix, and again at most once a minute while
// announcements at the other address keep coming); a name that moved, or whose
// first instance died, was a restart. Two looks, because the bound below is
// memberlist's usual timing, not a hard one: its suspicion scales with members it
// has not yet reaped, and its probes stretch when this node is slow (Lifeguard).

// conflict is a name announced at a second address.
type conflict struct {
	addr, other string    // where the cluster knows it; where it was announced too
	last        time.Time // the latest announcement at the other address
	reported    time.Time // when it was last reported as two processes; zero: not yet
	looks       int       // judgements made: two processes at the second
	judge       *time.Timer
}

// NotifyConflict implements memberlist.ConflictDelegate: other claims the name of
// existing, which the cluster takes for alive at another address.
func (n *Node) NotifyConflict(existing, other *memberlist.Node) {
	now := time.Now()
	name := existing.Name
	n.mu.Lock()
	c := n.conflicts[name]
	if c != nil && c.reported.IsZero() { // being judged
		c.last = now
		n.mu.Unlock()
		return
	}
	// memberlist calls this with its node lock held: the count of members is ours.
	wait := n.detection.within(n.aliveLocked())
	if c != nil && now.Sub(c.last) < 2*wait { // reported, and still announced
		c.last = now
		again := now.Sub(c.reported) >= time.Minute
		if again {
			c.reported = now
		}
		n.mu.Unlock()
		if again {
			n.reportTwins(name, c.addr, other.Address())
		}
		return
	}
	c = &conflict{addr: existing.Address(), other: other.Address(), last: now}
	c.judge = time.AfterFunc(wait, func() { n.judgeConflict(name, c, wait) })
	n.conflicts[name] = c
	n.mu.Unlock()
	n.log.Info("a node announced itself at another address while its instance at the first is still taken for alive: "+
		"a restart at a new address, given the name once the old instance is declared dead; or two processes with one name, reported if it lasts",
		"node", name, "addr", c.addr, "other_addr", c.other, "judged_in", (2 * wait).Round(time.Millisecond))
}

// judgeConflict decides, once failure detection has had its time (wait) twice,
// whether c was a restart (the name moved, or its first instance is no longer
// alive) or two processes (still alive at its first address).
func (n *Node) judgeConflict(name string, c *conflict, wait time.Duration) {
	select {
	case <-n.stop:
		return
	default:
	}
	n.mu.Lock()
	if n.conflicts[name] != c {
		n.mu.Unlock()
		return
	}
	m := n.members[name]
	twins := m != nil && m.State == StateAlive && m.Gossip == c.addr
	c.looks++
	switch {
	case twins && c.looks < 2:
		c.judge = time.AfterFunc(wait, func() { n.judgeConflict(name, c, wait) })
		n.mu.Unlock()
		return
	case twins:
		c.reported = time.Now()
	default:
		delete(n.conflicts, name)
	}
	n.mu.Unlock()
	if twins {
		n.reportTwins(name, c.addr, c.other)
		return
	}
	n.log.Info("a node restarted at a new address", "node", name, "addr", c.addr, "now_at", c.other)
}

func (n *Node) reportTwins(name, addr, other string) {
	n.log.Error("two processes use one node name: give each its own BATON_NODE_NAME (the default is the hostname)",
		"node", name, "addr", addr, "other_addr", other)
}

// stopJudging stops the conflicts' timers (Close).
func (n *Node) stopJudging() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conflicts {
		c.judge.Stop()
	}
}

// aliveLocked counts the members alive, this node among them. With n.mu held.
func (n *Node) aliveLocked() int {
	alive := 0
	for _, m := range n.members {
		if m.State == StateAlive {
			alive++
		}
	}
	return alive
}

// deathDetection is how memberlist's failure detection is timed.
type deathDetection struct {
	probeInterval, probeTimeout time.Duration
	suspicionMult, maxMult      int
}

func detectionOf(mc *memberlist.Config) deathDetection {
	return deathDetection{probeInterval: mc.ProbeInterval, probeTimeout: mc.ProbeTimeout,
		suspicionMult: mc.SuspicionMult, maxMult: mc.SuspicionMaxTimeoutMult}
}

// within bounds how long memberlist takes, in a cluster of members nodes, to
// declare a node that stopped answering dead: a probe round to suspect it, and
// the longest suspicion (memberlist's suspicionTimeout times its maximum multiple,
// which no confirmations shorten), with a second probe round of margin.
func (d deathDetection) within(members int) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(members))))
	suspicion := time.Duration(float64(d.suspicionMult)*scale*float64(d.probeInterval)) * time.Duration(max(1, d.maxMult))
	return suspicion + 2*(d.probeInterval+d.probeTimeout)
}
