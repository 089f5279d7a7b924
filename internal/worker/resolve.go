package worker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/cluster"
)

// server is the server the worker dials first: the one that says in the cluster
// that it leads, else any alive server (a single server, which has no election, or
// one that will name the leader in its not_leader answer).
func (w *Worker) server() (cluster.Member, bool) {
	return pick(w.members(), 1, nil, w.replicated.Load())
}

// members are the cluster's members; once one replicates, the worker remembers
// that the servers it must use do (pick).
func (w *Worker) members() []cluster.Member {
	members := w.node.Members()
	if !w.replicated.Load() && slices.ContainsFunc(members, func(m cluster.Member) bool { return m.Meta.Role == cluster.RoleServer && replicates(m) }) {
		w.replicated.Store(true)
	}
	return members
}

// resolve is the client's Config.Resolve: the token address of the server to try
// for this connect (pick), avoiding a server whose last connect failed when
// another is known: a dead leader's address may take a connect timeout to fail.
func (w *Worker) resolve(context.Context) (string, error) {
	now := time.Now()
	m, ok := pick(w.members(), w.connects.Add(1), func(addr string) bool { return w.unreachable.Recently(addr, now) }, w.replicated.Load())
	if !ok {
		return "", errors.New("no server in the cluster yet")
	}
	return m.TokenAddr(), nil
}

// connected is the client's Config.OnConnect: the doctor reads the last failure,
// and resolve and follow avoid a server that did not answer for a while.
func (w *Worker) connected(server string, err error) {
	if err == nil {
		w.dialErr.Store(nil)
	} else {
		w.dialErr.Store(&err)
	}
	w.unreachable.Connected(server, err, time.Now())
}

// pick chooses the server for the n-th connect (from 1), among the alive servers
// that avoid does not reject (all of them if it rejects every one). Odd connects go
// to the server that says it leads, of the highest term if several do; even ones to
// the others in turn, which name the leader they know. A leader that died still
// says it leads in the membership until the cluster declares it dead, seconds
// later: meanwhile every other connect reaches a live server, which knows the new
// leader as soon as it is elected.
//
// A server that does not replicate (no raft port), set up by mistake beside a
// replicated cluster, owns tokens of its own: connects go only to the replicated
// servers when one is alive, or when replicated says one was seen (a cluster
// restarting must not send its clients to the stray one meanwhile).
func pick(members []cluster.Member, n uint64, avoid func(addr string) bool, replicated bool) (cluster.Member, bool) {
	var servers []cluster.Member
	for _, m := range members {
		if m.State == cluster.StateAlive && m.Meta.Role == cluster.RoleServer && !m.Meta.Leaving {
			servers = append(servers, m)
		}
	}
	if replicated || slices.ContainsFunc(servers, replicates) {
		servers = slices.DeleteFunc(servers, func(m cluster.Member) bool { return !replicates(m) })
	}
	if avoid != nil {
		if kept := slices.DeleteFunc(slices.Clone(servers), func(m cluster.Member) bool { return avoid(m.TokenAddr()) }); len(kept) > 0 {
			servers = kept
		}
	}
	if len(servers) == 0 {
		return cluster.Member{}, false
	}
	slices.SortFunc(servers, func(a, b cluster.Member) int { return strings.Compare(a.Name, b.Name) })
	leader := -1
	for i, m := range servers {
		if m.Meta.Leader && (leader < 0 || m.Meta.Term > servers[leader].Meta.Term) {
			leader = i
		}
	}
	if leader < 0 {
		return servers[(n/2)%uint64(len(servers))], true
	}
	others := slices.Delete(slices.Clone(servers), leader, leader+1)
	if n%2 == 1 || len(others) == 0 {
		return servers[leader], true
	}
	return others[(n/2)%uint64(len(others))], true
}

func replicates(m cluster.Member) bool { return m.Meta.RaftPort > 0 }

// follow is the client's Config.Follow: it approves the leader a follower names
// only if this node knows it as an alive server that answered its last connect, so that a hostile or confused
// server cannot send the worker, its node name and its session anywhere else.
// Asked once per not_leader answer; the copy of the members is cheap at that rate.
func (w *Worker) follow(addr string) bool {
	return serverAt(w.node.Members(), addr) && !w.unreachable.Recently(addr, time.Now())
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
