package worker

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/baton-dev/baton/internal/cluster"
)

// server is the server the worker dials first: the one that says in the cluster
// that it leads, else any alive server (a single server, which has no election, or
// one that will name the leader in its not_leader answer).
func (w *Worker) server() (cluster.Member, bool) {
	return pick(w.node.Members(), 1)
}

// resolve is the client's Config.Resolve: the token address of the server to try
// for this connect (pick), but not the one the last connect failed at when another
// is known: a dead leader's address may take the whole dial timeout to fail.
func (w *Worker) resolve(context.Context) (string, error) {
	members, n := w.node.Members(), w.connects.Add(1)
	m, ok := pick(members, n)
	if !ok {
		return "", errors.New("no server in the cluster yet")
	}
	if last := w.lastServer.Load(); last != nil && *last == m.TokenAddr() && w.dialErr.Load() != nil {
		if other, ok := pick(members, n+1); ok {
			m = other
		}
	}
	addr := m.TokenAddr()
	w.lastServer.Store(&addr)
	return addr, nil
}

// pick chooses the server for the n-th connect (from 1). Odd connects go to the
// server that says it leads; even ones to the others in turn, which name the leader
// they know. A leader that died still says it leads in the membership until the
// cluster declares it dead, seconds later: meanwhile every other connect reaches a
// live server, which knows the new leader as soon as it is elected.
func pick(members []cluster.Member, n uint64) (cluster.Member, bool) {
	var leader *cluster.Member
	var others []cluster.Member
	for i := range members {
		m := &members[i]
		if m.State != cluster.StateAlive || m.Meta.Role != cluster.RoleServer || m.Meta.Leaving {
			continue
		}
		if m.Meta.Leader && leader == nil {
			leader = m
			continue
		}
		others = append(others, *m)
	}
	slices.SortFunc(others, func(a, b cluster.Member) int { return strings.Compare(a.Name, b.Name) })
	switch {
	case leader != nil && (n%2 == 1 || len(others) == 0):
		return *leader, true
	case len(others) > 0:
		return others[(n/2)%uint64(len(others))], true
	}
	return cluster.Member{}, false
}

// follow is the client's Config.Follow: it approves the leader a follower names
// only if this node knows it as an alive server, so that a hostile or confused
// server cannot send the worker, its node name and its session anywhere else.
// Asked once per not_leader answer; the copy of the members is cheap at that rate.
func (w *Worker) follow(addr string) bool {
	return serverAt(w.node.Members(), addr)
}

// serverAt reports whether addr is the token address of an alive server member
// that is not leaving.
func serverAt(members []cluster.Member, addr string) bool {
	for _, m := range members {
		if m.State == cluster.StateAlive && m.Meta.Role == cluster.RoleServer && !m.Meta.Leaving && m.TokenAddr() == addr {
			return true
		}
	}
	return false
}
