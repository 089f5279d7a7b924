package replica

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
)

// Leadership is a node's view of who leads.
type Leadership struct {
	IsLeader   bool   // this node is the leader
	LeaderID   string // empty while no leader is known
	LeaderAddr string
	Term       uint64 // the raft term when the view was taken
}

// IsLeader reports whether this node is the leader at this instant, by its own
// belief: a leader cut off from its quorum still says true until its lease check
// notices, about LeaderLeaseTimeout after its last contact with a quorum (and
// longer if its process was paused). VerifyLeader proves it.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Term is this node's current raft term. A leader's term never changes while it
// leads: a new term means it lost the leadership, if only for a moment.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// HasLog reports whether this node's log holds a cluster: entries or a snapshot,
// its own bootstrap's or a leader's. A node without one may still bootstrap.
func (n *Node) HasLog() bool { return n.raft.LastIndex() > 0 }

// Leader returns the leader's id and address as this node knows them; both are
// empty while none is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// Leadership returns this node's current view of the leadership and a channel that
// is closed at its next change: wait on it, then call Leadership again. A change
// is a different leader, or this node gaining or losing the leadership; a term that
// passes with the same leader is not one.
func (n *Node) Leadership() (Leadership, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lead, n.changed
}

// WaitLeader waits until this node knows a leader (itself or another) and returns
// that view: after Open, before the first Apply; after a leader loss, before
// following the new one.
func (n *Node) WaitLeader(ctx context.Context) (Leadership, error) {
	for {
		l, changed := n.Leadership()
		if l.LeaderID != "" && (!l.IsLeader || n.IsLeader()) {
			return l, nil
		}
		select {
		case <-changed:
		case <-n.closing:
			return Leadership{}, ErrClosed
		case <-ctx.Done():
			return Leadership{}, fmt.Errorf("replica: wait for a leader: %w", ctx.Err())
		}
	}
}

// watch follows raft's leadership signals until Close: NotifyCh (this node gained
// or lost the leadership; raft blocks until it is read) and leader observations
// (another node leads, or none). Each signal is only a prompt: the view is read
// afresh from raft, so a dropped observation costs nothing once another comes.
func (n *Node) watch() {
	defer n.wg.Done()
	n.refresh()
	for {
		select {
		case <-n.notifyCh:
		case <-n.obsCh:
		case <-n.closing:
			return
		}
		n.refresh()
	}
}

// refresh reads the leadership from raft and, when it changed, publishes it.
func (n *Node) refresh() {
	addr, id := n.raft.LeaderWithID()
	l := Leadership{
		IsLeader:   n.raft.State() == raft.Leader,
		LeaderID:   string(id),
		LeaderAddr: string(addr),
		Term:       n.raft.CurrentTerm(),
	}
	n.mu.Lock()
	old := n.lead
	if l.IsLeader == old.IsLeader && l.LeaderID == old.LeaderID && l.LeaderAddr == old.LeaderAddr {
		n.lead.Term = l.Term
		n.mu.Unlock()
		return
	}
	n.lead = l
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()

	n.log.Info("raft leadership", "leader", l.LeaderID, "leader_addr", l.LeaderAddr, "is_leader", l.IsLeader, "term", l.Term)
	if n.cfg.Hooks.LeaderChange != nil {
		n.cfg.Hooks.LeaderChange(l)
	}
}
