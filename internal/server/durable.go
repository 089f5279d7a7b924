package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/baton-dev/baton/internal/fsm"
	"github.com/baton-dev/baton/internal/replica"
	"github.com/baton-dev/baton/internal/state"
	"github.com/baton-dev/baton/internal/wire"
)

// durable keeps the server's state in a raft log (internal/replica) of one server,
// under BATON_STATE_DIR/raft: every operation the core applies is also a command in
// the current batch's log entry, and the batch's replies leave only once that entry
// has committed (core.commit). The log applies its entries to a state of its own
// (fsm.Log); at start the core copies it. One entry per batch is the group commit:
// all the operations a batch holds share one write to the disk.
//
// With BATON_BOOTSTRAP_EXPECT above 1 the log is replicated (raft.go), and the core
// serves only while this server leads: the fields below marked "core" belong to the
// core's owner of the moment.
type durable struct {
	node  *replica.Node
	log   *fsm.Log
	dir   string // where this server's state lives: the raft log and an old state file
	entry []byte // core: the commands of the batch being served
	// halted (core): an entry failed to commit on a server alone, so the core's state
	// may be ahead of the log, or the log holds an entry of a newer version
	// (haltReplica). Nothing is answered any more; a restart recovers from the log.
	// A replicated server whose batch fails steps down instead (core.stepDown).
	halted bool

	clustered bool
	// leading: the core serves from a state copied from the log since this server
	// won the leadership. Written by the core's owner, read by other goroutines too.
	leading atomic.Bool
	// term is the raft term in which this server took the leadership over. In
	// another, it lost the leadership in between, and others may have committed
	// entries its state lacks: it must take over afresh (core.leadershipChanged).
	term atomic.Uint64
	// stamp (written by the core): the cluster's log version, in the state the core
	// serves, is 2 or more (every server reads OpTerm), so each batch opens with the
	// term it was decided in, and the log applies it nowhere if raft appended it in
	// a later one (fsm.Log.Apply).
	stamp atomic.Bool
	// lease is raft's leader lease; proof (core) is when the last commit or
	// leadership check that succeeded started. A batch that answers keepalives
	// (needProof) goes out only if a quorum confirmed this leader less than a lease
	// ago, or after a fresh check: no deposed leader extends a session.
	lease     time.Duration
	proof     time.Time
	needProof bool
}

// openDurable opens the log in dir and waits until this server leads it, which a
// lone server does as soon as its election timeout has passed.
func openDurable(dir string, maxTokens int, logger *slog.Logger, hooks replica.Hooks) (*durable, error) {
	if err := checkStateDir(dir, "", false); err != nil {
		return nil, err
	}
	d := &durable{log: fsm.NewLog(maxTokens), dir: dir}
	cfg := replica.DefaultConfig()
	cfg.Dir = filepath.Join(dir, "raft")
	cfg.BindAddr = "127.0.0.1:0" // no peers yet: nobody dials it
	cfg.Bootstrap = true
	// Alone, this server wins every election it starts: only how soon it starts one
	// matters.
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	d.lease = cfg.LeaderLeaseTimeout
	cfg.Logger = logger.With("component", "raft")
	cfg.Hooks = hooks
	undo, err := makeLogDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("BATON_STATE_DIR %s: %w", dir, err)
	}
	if d.node, err = replica.Open(cfg, d.log); err != nil {
		undo()
		return nil, fmt.Errorf("BATON_STATE_DIR %s: %w", dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !d.node.IsLeader() {
		if _, err := d.node.WaitLeader(ctx); err != nil {
			d.node.Close()
			return nil, fmt.Errorf("raft log in %s: %w", cfg.Dir, err)
		}
	}
	// Every entry committed by an earlier process is applied before the core copies
	// the state.
	if err := d.node.Barrier(ctx); err != nil {
		d.node.Close()
		return nil, fmt.Errorf("raft log in %s: %w", cfg.Dir, err)
	}
	if err := d.log.Stopped(); err != nil {
		d.node.Close()
		return nil, fmt.Errorf("raft log in %s: %w: run that version of baton", cfg.Dir, err)
	}
	return d, nil
}

// record adds a command to the batch being served, after the batch's term if it
// is the first and the cluster reads terms (durable.stamp).
func (d *durable) record(c *fsm.Command) {
	if len(d.entry) == 0 && d.stamp.Load() {
		d.entry = fsm.AppendBatch(d.entry, &fsm.Command{Op: fsm.OpTerm, Seq: d.term.Load()})
	}
	d.entry = fsm.AppendBatch(d.entry, c)
}

// commit makes the batch's commands durable. The entry is handed to the log and not
// reused: the log keeps it. It waits as long as the disk takes: an fsync on a busy
// disk has been seen to take seconds, and a deadline here would turn that pause
// into an outcome it cannot know. It fails only when the log does (closed, or no
// longer this server's to write).
//
// A batch with no entry that answers keepalives needs a proof of leadership instead
// (see durable.lease): one round of contact with a quorum, when the last proof is
// older than the lease.
func (d *durable) commit() error {
	start := time.Now()
	proof := d.needProof
	d.needProof = false
	if len(d.entry) == 0 {
		if !mustVerify(proof, d.proof, start, d.lease) {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
		defer cancel()
		if err := d.node.VerifyLeader(ctx); err != nil {
			return err
		}
		d.proof = start
		return nil
	}
	if d.clustered && d.node.Term() != d.term.Load() {
		// Lost and won again since this core took over: its state misses what
		// another leader committed meanwhile, and the batch was decided on it. The
		// term can still change between this look and the Apply: a stamped batch
		// is then refused by the log on every server (fsm.ErrStaleBatch), and the
		// core steps down all the same; an unstamped one (a cluster with a server
		// that reads no terms) would be applied.
		d.entry = nil
		return errTermChanged
	}
	res, err := d.node.Apply(context.Background(), d.entry)
	if err == nil {
		if e, ok := res.(error); ok {
			err = e
		}
	}
	d.entry = nil
	if err == nil {
		d.proof = start
	}
	return err
}

// mustVerify says whether a batch with no log entry needs a leadership check
// before its replies go out: when it answers keepalives (they extend sessions) and
// no quorum has confirmed this leader within a lease before now. A quorum that
// confirmed it at proof elects no other leader before proof + lease (raft's
// election timeout is at least the lease), so an acknowledgement sent before then
// extends no session past what a new leader's grace covers.
func mustVerify(answersKeepalive bool, proof, now time.Time, lease time.Duration) bool {
	return answersKeepalive && now.Sub(proof) >= lease
}

// verifyTimeout bounds a leadership check: a leader that cannot reach a quorum in
// that long answers no keepalive, and raft steps it down soon after.
const verifyTimeout = 2 * time.Second

func (d *durable) close() error {
	if d == nil || d.node == nil {
		return nil
	}
	return d.node.Close()
}

// start brings the core's state up from the log, migrating a state file of the
// version before if the log is new, and starts a new epoch: with coreMu held, before
// the server serves. Sessions come back with a full TTL from now (their clients may
// resume them); tokens they held stay theirs until they end.
func (c *core) start(d *durable, now time.Time) error {
	snap, err := d.log.Save()
	if err != nil {
		return err
	}
	if err := c.st.Restore(snap, c.s.cfg.MaxTokens, now); err != nil {
		return err
	}
	d.stamp.Store(d.clustered && c.st.LogVersion >= fsm.LogVersion)
	if c.st.Epoch == 0 && c.st.Tokens.Len() == 0 {
		old := d.dir
		if d.clustered {
			// The file of the version before is in BATON_STATE_DIR itself, which the
			// servers of one deployment may share (compose's volume), not in this
			// server's directory within it.
			old = filepath.Dir(d.dir)
		}
		if err := c.migrate(old, now); err != nil {
			return err
		}
	}
	c.exec(&fsm.Command{Op: fsm.OpRestart, Time: now})
	c.armExpiry(now)
	if err := d.commit(); err != nil {
		return fmt.Errorf("raft log: first entry: %w", err)
	}
	d.leading.Store(true)
	return nil
}

// settle makes the batch's state durable before its replies go out (core.commit),
// and says whether they may go. A server that does not lead answers only refusals
// and notices, which depend on no state. A batch that cannot commit on a server
// alone halts it; on a replicated one it ends this server's turn as leader: the
// replies that depended on the batch are dropped and every connection is closed
// with notice, and the clients learn the truth from whoever leads next.
func (c *core) settle() bool {
	d := c.d
	if d.halted {
		c.dropReplies()
		return false
	}
	if !d.leading.Load() {
		d.entry, d.needProof = nil, false
		return true
	}
	err := d.commit()
	if err == nil {
		return true
	}
	if d.clustered {
		c.stepDown(fmt.Sprintf("batch not committed: %v", err))
		return true // the notices stepDown queued
	}
	// The state may now be ahead of the log: whatever depends on it must never go
	// out. Fail-stop; a restart recovers from the log.
	c.s.log.Error("raft log: batch not committed; the server halts", "err", fmt.Errorf("%w: %w", errHalted, err))
	d.halted = true
	c.s.ready.Store(false)
	c.dropReplies()
	return false
}

// dropReplies forgets the batch's replies, what it would have counted, and the
// release answers connections held back for their next frame: all depended on
// state that did not commit.
func (c *core) dropReplies() {
	clear(c.out)
	c.out = c.out[:0]
	clear(c.counted)
	c.counted = c.counted[:0]
	c.s.connsMu.Lock()
	for cn := range c.s.conns {
		clear(cn.deferred)
		cn.deferred = cn.deferred[:0]
	}
	c.s.connsMu.Unlock()
}

// migrate imports baton-state.json, kept by the version before the log, and gives
// its epoch: fences continue above it. Tokens held when that server stopped are
// granted again only after the longest TTL it gave.
func (c *core) migrate(dir string, now time.Time) error {
	old, err := state.Open(dir)
	if err != nil {
		return err
	}
	snap, ok, err := old.Load()
	if err != nil || !ok {
		return err
	}
	grace := max(snap.TTL, c.ttl)
	for _, t := range snap.Tokens {
		cmd := fsm.Command{Op: fsm.OpImport, Token: t.Name, Fence: t.Fence, Rec: wire.Record{Counter: t.Counter, Waits: t.Waits},
			Grants: t.Grants, Releases: t.Releases}
		if t.Held {
			cmd.Time = now.Add(grace)
			c.graceEnd = cmd.Time
		}
		c.exec(&cmd)
	}
	c.exec(&fsm.Command{Op: fsm.OpEpoch, Seq: snap.Epoch, Time: now}) // the epoch continues too
	c.s.log.Info("state file migrated into the raft log", "file", filepath.Join(dir, "baton-state.json"),
		"tokens", len(snap.Tokens), "epoch", snap.Epoch)
	return nil
}

// errTermChanged: the leadership was lost and won again since the core took over.
var errTermChanged = errors.New("the raft term changed since this server took over")

// errHalted: the state could not be made durable, and nothing more is answered.
var errHalted = errors.New("state not durable: the server answers nothing more until it is restarted")
