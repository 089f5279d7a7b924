package replica

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/raft"
)

// Bootstrap starts a cluster whose voters are servers plus this node, if this node
// has no raft state; otherwise it returns ErrHasState and changes nothing. It is for
// discovery-driven bootstrap (Consul's bootstrap_expect): once a node has found the
// expected number of servers, each of them calls Bootstrap with the same set, and
// they elect a leader among themselves.
func (n *Node) Bootstrap(servers []Server) error {
	if n.isClosed() {
		return ErrClosed
	}
	err := n.raft.BootstrapCluster(n.configuration(servers)).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return ErrHasState
	}
	return n.opErr("bootstrap", err)
}

// AddVoter adds a voting server, or updates the address of one already there (a
// server that came back under a new address), and returns once the new
// configuration has committed. Leader only; changes go one at a time.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	if n.isClosed() {
		return ErrClosed
	}
	n.member.Lock()
	defer n.member.Unlock()
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx))
	if err := await(ctx, f); err != nil {
		return n.opErr(fmt.Sprintf("add voter %s at %s", id, addr), err)
	}
	n.log.Info("raft server added", "id", id, "addr", addr)
	return nil
}

// RemoveServer removes a server from the configuration and returns once that has
// committed. Leader only; changes go one at a time. Removing the leader itself makes
// it step down once the change commits.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if n.isClosed() {
		return ErrClosed
	}
	n.member.Lock()
	defer n.member.Unlock()
	f := n.raft.RemoveServer(raft.ServerID(id), 0, enqueueTimeout(ctx))
	if err := await(ctx, f); err != nil {
		return n.opErr("remove server "+id, err)
	}
	n.log.Info("raft server removed", "id", id)
	return nil
}

// Servers returns the latest raft configuration (it may not have committed yet).
func (n *Node) Servers(ctx context.Context) ([]Server, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	f := n.raft.GetConfiguration()
	if err := await(ctx, f); err != nil {
		return nil, n.opErr("configuration", err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// Status is a node's raft state for /status and the status page.
type Status struct {
	ID           string   `json:"id"`
	Addr         string   `json:"addr"`
	State        string   `json:"state"` // leader, follower, candidate, shutdown
	Leader       string   `json:"leader"`
	LeaderAddr   string   `json:"leader_addr"`
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	LastIndex    uint64   `json:"last_index"`
	Servers      []Server `json:"servers"`
}

// Status returns this node's raft state.
func (n *Node) Status(ctx context.Context) (Status, error) {
	servers, err := n.Servers(ctx)
	if err != nil {
		return Status{}, err
	}
	id, addr := n.Leader()
	return Status{
		ID:           n.id,
		Addr:         n.addr,
		State:        strings.ToLower(n.raft.State().String()),
		Leader:       id,
		LeaderAddr:   addr,
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastIndex:    n.raft.LastIndex(),
		Servers:      servers,
	}, nil
}
