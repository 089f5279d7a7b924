package replica

import (
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// StateMachine is the deterministic state that the replicated log drives. The Node
// calls its methods from one goroutine at a time, raft's FSM goroutine, so an
// implementation needs no lock for its own sake; it needs one only for readers of its
// state on other goroutines (a status page, a keepalive answered from memory).
type StateMachine interface {
	// Apply applies committed commands, in log order, and returns one answer per
	// entry (len(answers) == len(entries)). The answer of an entry this node
	// proposed is what Node.Apply returns for it; on other nodes answers are dropped.
	//
	// Apply must be deterministic: the same entries on the same state give the same
	// state and answers on every node, so it reads no clock, configuration or
	// randomness of its own; the proposer puts time and ids into the command. It
	// must not fail: a command it cannot apply is answered with an error value and
	// changes nothing. It must not keep entries[i].Cmd past the call unless it copies
	// it (the log store may reuse the buffer).
	Apply(entries []Entry) []any

	// Snapshot captures the state as it is now and returns its serialisation to be
	// written later, concurrently with further Apply calls: the WriterTo must
	// not read the live state (copy it, or make it immutable). It is called
	// between Apply calls and should be quick.
	Snapshot() (io.WriterTo, error)

	// Restore replaces the whole state with one written by a Snapshot. It is called
	// when the node starts from a stored snapshot and when a leader sends one to a
	// follower that fell behind the log.
	Restore(r io.Reader) error
}

// Entry is one committed command.
type Entry struct {
	// Index is the entry's position in the log: strictly increasing, but not
	// contiguous across Apply calls or within one (raft's own configuration and
	// no-op entries take indexes too). Unique per cluster; a state machine can keep
	// the last applied one to tell a replay.
	Index uint64
	// Term is the raft term in which the leader appended the entry: the same on
	// every node, so a state machine may refuse an entry by it (one decided in an
	// earlier term than it was appended in, say).
	Term uint64
	Cmd  []byte
}

// fsm adapts a StateMachine to raft.BatchingFSM, so that a batch of entries that
// share one log write reaches the state machine in one call.
type fsm struct {
	sm StateMachine
	// applied, when set, is told each batch's size; on the FSM goroutine.
	applied func(entries int)
}

var _ raft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch passes the batch's commands to the state machine and puts each answer
// at its entry's position; configuration entries answer nil.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	entries := make([]Entry, 0, len(logs))
	pos := make([]int, 0, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		entries = append(entries, Entry{Index: l.Index, Term: l.Term, Cmd: l.Data})
		pos = append(pos, i)
	}
	if len(entries) == 0 {
		return out
	}
	answers := f.sm.Apply(entries)
	if len(answers) != len(entries) {
		// A state machine that miscounts may have diverged from its peers: stop
		// here rather than answer clients with another entry's result.
		panic(fmt.Sprintf("replica: StateMachine.Apply returned %d answers for %d entries", len(answers), len(entries)))
	}
	for j, i := range pos {
		out[i] = answers[j]
	}
	if f.applied != nil {
		f.applied(len(entries))
	}
	return out
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	w, err := f.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return snapshot{w}, nil
}

func (f *fsm) Restore(r io.ReadCloser) error {
	defer r.Close()
	return f.sm.Restore(r)
}

// snapshot writes a StateMachine's captured state into raft's snapshot store.
type snapshot struct{ w io.WriterTo }

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.w.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s snapshot) Release() {}
