package replica

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// Errors returned by Node methods; callers use errors.Is.
var (
	// ErrNotLeader is returned (as a *NotLeaderError naming the leader, when one is
	// known) by Apply, Barrier, VerifyLeader and membership changes on a node that
	// is not the leader, or stopped being it before the call was taken. The command
	// was not applied: the caller may send it to the leader.
	ErrNotLeader = errors.New("replica: not the leader")

	// ErrUnknownOutcome is returned by Apply when the command was handed to raft
	// but this node cannot tell whether it commits: leadership was lost while it was
	// in flight, the node was closed, or the context ended while waiting. It may
	// still be applied by a later leader; only a retry that the state machine
	// recognises (a request id) is safe. Such an error never matches ErrNotLeader.
	ErrUnknownOutcome = errors.New("replica: apply: outcome unknown")

	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("replica: node closed")

	// ErrHasState is returned by Bootstrap when this node already has raft state:
	// it bootstrapped before or joined a cluster; nothing was changed.
	ErrHasState = errors.New("replica: already has raft state")
)

// NotLeaderError is the ErrNotLeader that names the leader as this node knows it.
// Both fields are empty while no leader is known (an election is under way).
type NotLeaderError struct {
	Op         string // what was refused: apply, barrier, ...
	LeaderID   string
	LeaderAddr string // the leader's raft address (Config.Advertise)
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" && e.LeaderAddr == "" {
		return fmt.Sprintf("replica: %s: not the leader; no leader known", e.Op)
	}
	return fmt.Sprintf("replica: %s: not the leader; leader is %s at %s", e.Op, e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// notLeader refuses op, naming the current leader as this node sees it.
func (n *Node) notLeader(op string) error {
	addr, id := n.raft.LeaderWithID()
	return &NotLeaderError{Op: op, LeaderID: string(id), LeaderAddr: string(addr)}
}

// opErr turns an error of a raft future that carried no command (Barrier,
// VerifyLeader, membership) into this package's errors.
func (n *Node) opErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader(op)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("replica: %s: %w", op, ErrClosed)
	}
	return fmt.Errorf("replica: %s: %w", op, err)
}

// applyErr turns an error of an Apply future into this package's errors, telling a
// command that was certainly not applied from one that may be.
func (n *Node) applyErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Refused before it was appended to the log.
		return n.notLeader("apply")
	case errors.Is(err, raft.ErrEnqueueTimeout):
		// Never handed to the leader loop.
		return fmt.Errorf("replica: apply not started: %w", context.DeadlineExceeded)
	case errors.Is(err, raft.ErrLeadershipLost):
		// %v, not %w: this error must not match ErrNotLeader, whose callers take
		// it to mean "not applied".
		return fmt.Errorf("%w: leadership lost while committing (%v)", ErrUnknownOutcome, n.notLeader("apply"))
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, ErrClosed)
	}
	// The context ended while waiting (its error is wrapped), or raft failed in a
	// way that says nothing of the entry's fate.
	return fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
}
