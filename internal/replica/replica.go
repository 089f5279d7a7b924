// Package replica is baton's raft I/O shell: it replicates a deterministic
// StateMachine with hashicorp/raft over TCP, and knows nothing of tokens. The server
// proposes commands with Node.Apply on the leader; every node applies the committed
// ones, in log order, in batches, on one goroutine.
//
// What it guarantees, and what it leaves to the caller:
//   - Node.Apply returns only after the command committed (a quorum stored it) and
//     this node's state machine applied it; its answer is the state machine's.
//   - A command refused with ErrNotLeader was not applied. One that failed with
//     ErrUnknownOutcome may still be; a retry is safe only if the state machine
//     recognises it (a request id in the command).
//   - Concurrent Applies share log writes: raft's BatchApplyCh hands the leader
//     up to MaxAppendEntries waiting commands at once, one StoreLogs (one fsync)
//     for all, and the state machine gets them in one Apply call.
//   - IsLeader is this node's belief at the instant; only VerifyLeader (a round of
//     contact with a quorum) or a committed Apply proves leadership. raft steps a
//     leader down when it has not heard from a quorum within LeaderLeaseTimeout.
//   - A node that has just become leader should call Barrier before it serves reads
//     of the state machine: Barrier returns once every earlier entry is applied here.
//   - A server's id is kept in its Dir, so it rejoins under the same name; its
//     address (Advertise) may be a host name and may change between runs.
//   - A raft connection is handed to raft only on the server it was meant for: it
//     opens with the address dialled, and a server refuses one meant for another
//     (an address that changed hands; opening.go).
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Config configures a Node. Zero durations and counts take DefaultConfig's values.
type Config struct {
	// ID is this server's raft id. With Dir, it is kept in Dir/node-id: empty
	// takes the stored id or makes and stores a random one; a different id than
	// the stored one is refused. Without Dir, empty makes a random id.
	ID string
	// Dir holds the raft log, stable store, snapshots and the id. Empty keeps all
	// in memory: fast, and gone at Close.
	Dir string
	// BindAddr is where the raft transport listens, e.g. ":7001" or "127.0.0.1:0".
	BindAddr string
	// Advertise is the host:port peers dial to reach this server; a host name is
	// resolved at each dial (or by Dial). Port 0 advertises the port bound. Empty
	// advertises the listener's address, which must then be a specific IP.
	Advertise string

	// Bootstrap makes a node with no raft state start a cluster whose voters are
	// Peers plus itself (itself alone when Peers is empty): a single server, or a
	// fixed set that every member bootstraps with the same Peers. A node with state
	// ignores it. Without it, a new node waits to be added by a leader (AddVoter)
	// or to be bootstrapped later (Node.Bootstrap, once discovery found its peers).
	Bootstrap bool
	Peers     []Server

	// HeartbeatTimeout is how long a follower goes without hearing from the leader
	// before it starts an election; ElectionTimeout is how long a candidate waits
	// for votes. A leader loss is noticed after HeartbeatTimeout to twice that.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without contact with a
	// quorum; at most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how long the leader waits with nothing to send before it
	// sends followers the commit index: how stale an idle follower's state may be.
	CommitTimeout time.Duration
	// MaxAppendEntries bounds the commands batched into one log write and one
	// AppendEntries RPC.
	MaxAppendEntries int
	// SnapshotInterval and SnapshotThreshold: every SnapshotInterval, a snapshot is
	// taken if at least SnapshotThreshold entries came since the last one.
	// TrailingLogs entries are kept in the log behind a snapshot, so that a
	// follower slightly behind catches up from the log rather than a snapshot.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotRetain is how many snapshots are kept in Dir.
	SnapshotRetain int

	// Dial, when set, makes the transport's outbound connections in place of a TCP
	// dial: every raft connection between two servers is dialed by one of them, so
	// a test that owns every node's Dial can cut a node off. Nil dials TCP.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// ReadsOpening, when set, says whether the server raft knows at addr reads the
	// opening of a connection, which names the server it is meant for (opening.go;
	// every server since ConnVersion 1 does). A connection to one that does not is
	// not opened: a server of an earlier version, in an upgrade, would take the
	// opening for a request it does not know. Nil: every server reads it.
	ReadsOpening func(addr string) bool
	// OpensConnections, when set, says whether the server at remoteIP (an IP
	// address) is known to open its raft connections: a connection from it without
	// an opening is then refused, as misrouted (opening.go). Nil: none is.
	OpensConnections func(remoteIP string) bool
	// Keys, when set (the cluster key), make every raft connection TLS between
	// servers that hold it (keyed.go); a peer without it is refused. A server
	// presents the first and accepts a peer that presents any (a key being
	// changed: cluster.ParseKeys). All servers of a cluster have a key, or none.
	Keys [][]byte

	// Logger receives raft's logs as well as this package's; nil discards them.
	Logger *slog.Logger
	// Hooks observe commits and leadership; nil fields are skipped.
	Hooks Hooks
}

// Hooks let the caller observe the node without this package knowing a metrics
// library. Each must return quickly: Commit runs on the Apply caller's goroutine,
// Applied on the state machine's, LeaderChange on the node's leadership watcher.
type Hooks struct {
	// Commit is told how long each successful Apply on this node took, from the
	// call to the state machine's answer: the commit latency a client sees.
	Commit func(time.Duration)
	// Applied is told the number of commands in each batch the state machine applied.
	Applied func(commands int)
	// LeaderChange is told each change of this node's view of the leadership: who
	// leads, and whether it is this node.
	LeaderChange func(Leadership)
	// Refused is told of each raft connection a peer opened that this server
	// refused, and why (Reason...: it did not prove a key, or it was meant for
	// another server), from the connection's goroutine; it is then closed, before
	// raft reads anything of it.
	Refused func(remote, reason string, err error)
}

// DefaultConfig is tuned for servers on one LAN or one host: a dead leader is noticed
// within 0.3 to 0.9 s and replaced soon after, so that the token moves again within
// the 2 s baton promises; batches of up to 256 commands share a log write. BindAddr
// ":7001" needs an Advertise.
func DefaultConfig() Config {
	return Config{
		BindAddr:           ":7001",
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      10 * time.Millisecond,
		MaxAppendEntries:   256,
		SnapshotInterval:   30 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		SnapshotRetain:     2,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	set := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	set(&c.ElectionTimeout, d.ElectionTimeout)
	set(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	set(&c.CommitTimeout, d.CommitTimeout)
	set(&c.SnapshotInterval, d.SnapshotInterval)
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = d.MaxAppendEntries
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = d.TrailingLogs
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = d.SnapshotRetain
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first setting that cannot work, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("replica: LeaderLeaseTimeout (%s) must be <= HeartbeatTimeout (%s)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("replica: ElectionTimeout (%s) must be >= HeartbeatTimeout (%s)", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024:
		return fmt.Errorf("replica: MaxAppendEntries must be in 1..1024, got %d", c.MaxAppendEntries)
	case c.SnapshotRetain < 1:
		return fmt.Errorf("replica: SnapshotRetain must be >= 1, got %d", c.SnapshotRetain)
	}
	for _, p := range c.Peers {
		if p.ID == "" || p.Addr == "" {
			return fmt.Errorf("replica: peer %+v needs an ID and an Addr", p)
		}
	}
	return nil
}

// raftConfig is the raft.Config for c, whose defaults are filled.
func (c Config) raftConfig(id string, notify chan<- bool, logger hclog.Logger) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.MaxAppendEntries = c.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotInterval = c.SnapshotInterval
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.TrailingLogs = c.TrailingLogs
	rc.NotifyCh = notify
	rc.Logger = logger
	rc.NoLegacyTelemetry = true
	return rc
}

// Server is a member of the raft configuration.
type Server struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Voter bool   `json:"voter"`
}

// Node is one replica: a raft instance, its stores and transport, driving a
// StateMachine. Its methods are safe for concurrent use.
type Node struct {
	id     string
	addr   string
	cfg    Config
	log    *slog.Logger
	hlog   *hclogAdapter
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	stream *tcpStream // trans's stream layer: ProvesKey dials through it
	stores *stores

	notifyCh chan bool
	obsCh    chan raft.Observation
	observer *raft.Observer

	mu      sync.Mutex // guards lead and changed
	lead    Leadership
	changed chan struct{} // closed and replaced when lead changes

	member sync.Mutex // serialises membership changes made through this node

	closing   chan struct{} // closed by Close: stops the watcher, fails new calls
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // the watcher
}

// Open starts a node: it opens the stores in cfg.Dir (or memory), listens on
// cfg.BindAddr, bootstraps when asked and the node has no state, and starts raft.
// sm must be empty: raft restores it from the latest snapshot and replays the log.
func Open(cfg Config, sm StateMachine) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	id, err := serverID(cfg.Dir, cfg.ID)
	if err != nil {
		return nil, err
	}
	n := &Node{
		id:       id,
		cfg:      cfg,
		log:      cfg.Logger.With("raft_id", id),
		notifyCh: make(chan bool, 1),
		obsCh:    make(chan raft.Observation, 64),
		changed:  make(chan struct{}),
		closing:  make(chan struct{}),
	}
	n.hlog = newHclog(cfg.Logger.With("raft_id", id), "raft")

	n.stores, err = openStores(cfg.Dir, cfg.SnapshotRetain, n.hlog)
	if err != nil {
		return nil, err
	}
	var k *keyed
	if len(cfg.Keys) > 0 {
		if k, err = newKeyed(cfg.Keys); err != nil {
			n.stores.close()
			return nil, err
		}
	}
	n.trans, n.stream, err = openTransport(cfg, k, n.hlog.Named("net"))
	if err != nil {
		n.stores.close()
		return nil, err
	}
	n.addr = string(n.trans.LocalAddr())
	fail := func(err error) (*Node, error) {
		n.trans.Close()
		n.stores.close()
		return nil, err
	}

	rc := cfg.raftConfig(id, n.notifyCh, n.hlog)
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(n.stores.logs, n.stores.stable, n.stores.snaps)
		if err != nil {
			return fail(fmt.Errorf("replica: read raft state: %w", err))
		}
		if !has {
			conf := n.configuration(cfg.Peers)
			if err := raft.BootstrapCluster(rc, n.stores.logs, n.stores.stable, n.stores.snaps, n.trans, conf); err != nil {
				return fail(fmt.Errorf("replica: bootstrap: %w", err))
			}
			n.log.Info("bootstrapped raft cluster", "servers", len(conf.Servers))
		}
	}
	r, err := raft.NewRaft(rc, &fsm{sm: sm, applied: cfg.Hooks.Applied}, n.stores.logs, n.stores.stable, n.stores.snaps, n.trans)
	if err != nil {
		return fail(fmt.Errorf("replica: start raft: %w", err))
	}
	n.raft = r
	n.observer = raft.NewObserver(n.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.RegisterObserver(n.observer)
	n.wg.Add(1)
	go n.watch()
	n.log.Info("raft node open", "addr", n.addr, "dir", cfg.Dir)
	return n, nil
}

// configuration is the bootstrap configuration: peers plus this node, as voters.
func (n *Node) configuration(peers []Server) raft.Configuration {
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(n.id), Address: raft.ServerAddress(n.addr), Suffrage: raft.Voter}}}
	for _, p := range peers {
		if p.ID == n.id {
			continue
		}
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Voter})
	}
	return conf
}

// ID is this server's raft id.
func (n *Node) ID() string { return n.id }

// Addr is the address peers reach this server at.
func (n *Node) Addr() string { return n.addr }

// Apply proposes cmd and returns the state machine's answer once the command has
// committed and been applied on this node. It must be called on the leader:
// elsewhere it returns a *NotLeaderError naming the leader. When ctx ends first,
// the command may still commit: the error wraps both ErrUnknownOutcome and ctx's
// error. cmd must not be changed after the call.
func (n *Node) Apply(ctx context.Context, cmd []byte) (any, error) {
	if n.isClosed() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("replica: apply not started: %w", err)
	}
	start := time.Now()
	f := n.raft.Apply(cmd, enqueueTimeout(ctx))
	if err := await(ctx, f); err != nil {
		return nil, n.applyErr(err)
	}
	if n.cfg.Hooks.Commit != nil {
		n.cfg.Hooks.Commit(time.Since(start))
	}
	return f.Response(), nil
}

// Barrier returns once every entry committed before the call has been applied to
// this node's state machine. Leader only. A new leader calls it before it trusts
// its state machine to be current.
func (n *Node) Barrier(ctx context.Context) error {
	if n.isClosed() {
		return ErrClosed
	}
	return n.opErr("barrier", await(ctx, n.raft.Barrier(enqueueTimeout(ctx))))
}

// VerifyLeader returns nil once a quorum has confirmed this node is still the leader.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if n.isClosed() {
		return ErrClosed
	}
	return n.opErr("verify leader", await(ctx, n.raft.VerifyLeader()))
}

// Snapshot takes a snapshot of the state machine now and compacts the log behind it
// (keeping TrailingLogs). raft takes them on its own too (SnapshotInterval).
func (n *Node) Snapshot(ctx context.Context) error {
	if n.isClosed() {
		return ErrClosed
	}
	return n.opErr("snapshot", await(ctx, n.raft.Snapshot()))
}

// TransferLeadership hands leadership to another voter and returns once that one
// leads (or the attempt failed). A leader that is about to stop calls it first, so
// that the cluster does not wait out an election timeout.
func (n *Node) TransferLeadership(ctx context.Context) error {
	if n.isClosed() {
		return ErrClosed
	}
	return n.opErr("transfer leadership", await(ctx, n.raft.LeadershipTransfer()))
}

// Close stops the node: raft shuts down (a leader steps down without handing over:
// call TransferLeadership first for a graceful stop), then the transport and stores
// close. Safe to call more than once; later calls return the first one's error.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		// The transport closes as soon as raft is told to stop, not after its
		// goroutines end: from then on peers' RPCs to this node fail at once
		// instead of waiting, until their timeout, for a raft loop that has gone.
		// The stores close last, when nothing writes to them.
		f := n.raft.Shutdown()
		terr := n.trans.Close()
		err := errors.Join(f.Error(), terr)
		close(n.closing)
		n.wg.Wait()
		n.raft.DeregisterObserver(n.observer)
		n.closeErr = errors.Join(err, n.stores.close())
		n.log.Info("raft node closed")
	})
	return n.closeErr
}

func (n *Node) isClosed() bool {
	select {
	case <-n.closing:
		return true
	default:
		return false
	}
}

// enqueueTimeout bounds how long raft may take to accept a request, from ctx's
// deadline; zero waits as long as it takes (ctx still bounds the wait in await).
func enqueueTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 0
}

// await waits for f or ctx. raft resolves every future, at the latest when it shuts
// down, so the goroutine that waits on f past ctx ends then.
func await(ctx context.Context, f raft.Future) error {
	if ctx.Done() == nil {
		return f.Error()
	}
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
