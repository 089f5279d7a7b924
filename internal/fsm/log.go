package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/baton-dev/baton/internal/replica"
)

// AppendBatch adds c to a log entry being built: a server proposes one entry per
// batch of commands, so that the batch shares one write to the log. Each command is
// framed by its length in four bytes, filled in once it is encoded.
func AppendBatch(entry []byte, c *Command) []byte {
	at := len(entry)
	entry = c.Append(append(entry, 0, 0, 0, 0))
	binary.BigEndian.PutUint32(entry[at:], uint32(len(entry)-at-4))
	return entry
}

// ErrStaleBatch answers an entry whose batch was decided in a term other than the
// one raft appended it in: its leader lost the leadership and won it again in
// between, and others may have committed entries that the state it decided on
// lacked. The entry is applied nowhere.
var ErrStaleBatch = errors.New("fsm: batch decided in an earlier term")

// EachInBatch decodes a log entry's commands in order and calls fn with each.
func EachInBatch(entry []byte, fn func(*Command) error) error {
	var c Command
	for len(entry) > 0 {
		if len(entry) < 4 {
			return fmt.Errorf("%w: batch framing", ErrBadCommand)
		}
		n := binary.BigEndian.Uint32(entry)
		if uint64(n) > uint64(len(entry)-4) {
			return fmt.Errorf("%w: batch framing", ErrBadCommand)
		}
		if err := c.Decode(entry[4 : 4+n]); err != nil {
			return err
		}
		if err := fn(&c); err != nil {
			return err
		}
		entry = entry[4+n:]
	}
	return nil
}

// Log is the state machine as a replicated log drives it (replica.StateMachine):
// every server applies every committed entry, each a batch of commands, to a State
// of its own. What followed is not needed here (only a leader answers clients), so
// the effects are dropped. Safe for concurrent use: the log applies on its own
// goroutine while the server may read or copy the state.
type Log struct {
	mu        sync.Mutex // guards st, stopped
	st        *State[struct{}]
	maxTokens int
	// stopped: an entry of a newer version came (ErrNewerLog), and nothing after
	// it is applied: this server's state stays as it was before that entry.
	stopped error
}

// NewLog returns an empty log state that accepts at most maxTokens tokens.
func NewLog(maxTokens int) *Log { return &Log{st: New[struct{}](maxTokens), maxTokens: maxTokens} }

// Apply applies committed entries in order. An entry that does not decode is
// answered with its error and applied no further: every replica of one version
// refuses it alike. An entry of a newer version (ErrNewerLog) stops the log: it
// and every entry after it are applied nowhere here (Stopped), as skipping it
// would part this state from that of the servers that read it.
// So is, whole, a batch decided in another term than the one it was appended in
// (ErrStaleBatch): the term is the entry's, the same on every replica.
func (l *Log) Apply(entries []replica.Entry) []any {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]any, len(entries))
	for i, e := range entries {
		if l.stopped != nil {
			out[i] = l.stopped
			continue
		}
		first := true
		err := EachInBatch(e.Cmd, func(c *Command) error {
			// A batch's term, if it has one, is its first command: checked before
			// anything of the batch is applied.
			if first && c.Op == OpTerm && c.Seq != e.Term {
				return fmt.Errorf("%w: decided in term %d, appended in term %d", ErrStaleBatch, c.Seq, e.Term)
			}
			first = false
			return l.st.Apply(c)
		})
		if err != nil {
			out[i] = err
			if errors.Is(err, ErrNewerLog) {
				// A batch may have been applied in part: the state is not to be
				// served or copied from again.
				l.stopped = fmt.Errorf("raft log entry %d: %w", e.Index, err)
				out[i] = l.stopped
			}
		}
		l.st.Reset()
	}
	return out
}

// Stopped says why the log stopped applying entries (an entry of a newer
// version), or nil.
func (l *Log) Stopped() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}

// LogVersion is the log version the cluster recorded (State.LogVersion).
func (l *Log) LogVersion() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.LogVersion
}

// Snapshot captures the state now; it is written later.
func (l *Log) Snapshot() (io.WriterTo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, err := l.st.Snapshot()
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}

// Restore replaces the state with a snapshot's.
func (l *Log) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.Restore(b, l.maxTokens, time.Now())
}

// Save returns the state as a snapshot, for a server that takes over to copy into
// the state it serves from (State.Restore).
func (l *Log) Save() ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.Snapshot()
}
