package worker

import (
	"context"
	"errors"

	"github.com/baton-dev/baton/internal/cluster"
)

// server is the server the worker dials: the one that says in the cluster that it
// leads, else any alive server (a single server, which has no election, or one
// that will name the leader in its not_leader answer).
func (w *Worker) server() (cluster.Member, bool) {
	if m, ok := w.node.Leader(); ok {
		return m, true
	}
	return w.node.Server()
}

// resolve is the client's Config.Resolve: the token address of server.
func (w *Worker) resolve(context.Context) (string, error) {
	m, ok := w.server()
	if !ok {
		return "", errors.New("no server in the cluster yet")
	}
	return m.TokenAddr(), nil
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
