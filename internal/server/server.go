// Package server is the baton coordinator: it owns one token per name (fence, holder,
// FIFO queue, shared record), serves the token protocol over TCP, joins the memberlist
// cluster and serves HTTP (metrics, health, status, admin).
//
// All token and session state belongs to the core, and one goroutine at a time owns
// it: whoever holds coreMu. Connection readers post frames, everything else
// (handshakes, HTTP, membership, timers, restarts) posts closures, to one queue; the
// poster then tries to take the core and serve the queue itself, so that an
// uncontended frame is handled on the goroutine that read it, with no hand-off.
// Replies are queued during a batch and sent after the batch's state is durable (see
// core.commit). The state itself changes only through internal/fsm, whose effects the
// core turns into replies. The mechanisms of the fast path and its rules are in
// docs/design.md.
//
// With BATON_STATE_DIR the state is a raft log, of this server alone or replicated
// among BATON_BOOTSTRAP_EXPECT servers (raft.go), and only the leader serves. The
// rules of ../shared/DESIGN.md "Replication", and where each is kept and tested
// (replication_test.go at the module root, unless named):
//  1. Commit before answer: a grant, release, queue change, session open or end,
//     expiry or reclaim is answered only after the log entry holding it commits
//     (core.commit, core.settle); so are the metrics and logs of grants, releases
//     and reclaims (core.tell). TestReplicatedLeaderWithoutQuorumAnswersNothing,
//     TestReplicatedCutOffLeaderCountsNoUncommittedGrant.
//  2. Pure apply: the state changes only through internal/fsm commands that carry
//     the leader's time and ids (internal/fsm's determinism tests).
//  3. Only a leader that can prove it acts: only a committed entry proposed by the
//     current leader ends a session; a deposed leader's entries fail to commit, and
//     it steps down without sending what depended on them (core.stepDown). A
//     leader that lost the leadership and won it again commits nothing it decided
//     before: each batch carries the term it was decided in, and the log applies
//     it nowhere if raft appended it in another (fsm.OpTerm, durable.stamp).
//     TestStampedBatchCommitsOnlyInItsTerm here, internal/fsm's
//     TestABatchFromAnEarlierTermIsAppliedNowhere. A
//     keepalive is acknowledged only within a lease of a quorum's confirmation, or
//     after VerifyLeader (durable.commit, mustVerify). TestKeepaliveAckNeedsALeaseOrACheck
//     here, TestReplicatedCutOffLeaderAcknowledgesNoKeepalive (fails when a keepalive
//     skips the check), TestReplicatedLeaderWithoutQuorumAnswersNothing,
//     TestReplicatedLeaderCutOff.
//  4. Grace on election: a new leader calls Barrier, copies the log's state, and
//     gives every session a full TTL from then before it expires any (core.lead).
//     TestReplicatedHolderKeepsLeaseAcrossFailover.
//  5. Fences never go back: they live in the log. TestReplicatedAllRestart.
//  6. Retries are idempotent: applied releases are remembered per session in the
//     replicated state (internal/session/answers.go).
//  7. Clients follow the leader: a follower's not_leader names it (core.notLeader),
//     and the leader says so, with its term, in its memberlist meta. A client whose
//     leader falls silent finds the next one itself (baton's hedged connect).
//     TestReplicatedHolderKeepsLeaseAcrossFailover.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/fsm"
	"github.com/baton-dev/baton/internal/ration"
	"github.com/baton-dev/baton/internal/replica"
	"github.com/baton-dev/baton/internal/wire"
)

// Options are the server's dependencies.
type Options struct {
	Logger   *slog.Logger
	Level    *slog.LevelVar // adjusted when a restart re-reads BATON_LOG_LEVEL
	Registry *prometheus.Registry
	// Reload re-reads the configuration on restart. Nil keeps the current one.
	Reload func() (Config, error)
}

// Server is a running baton server. Create it with New, start it with Open, stop it
// with Close.
type Server struct {
	cfg     Config // addresses and limits fixed at Open; the live TTL is core.ttl
	log     *slog.Logger
	level   *slog.LevelVar
	reg     *prometheus.Registry
	metrics *metrics
	reload  func() (Config, error)
	keys    [][]byte // the cluster key (cluster.ParseKeys): the first is used, any accepted
	// raftRefusals rations the log lines of refused raft connections: anyone who
	// reaches the raft port can cause them (they are all counted).
	raftRefusals ration.Lines
	bootID       string

	adminToken atomic.Pointer[string] // read by HTTP handlers, replaced on restart

	ln       net.Listener
	httpLn   net.Listener
	httpSrv  *http.Server
	node     *cluster.Node
	gossip   atomic.Pointer[cluster.Node] // node, for goroutines that start before it is set (raft's dials)
	raftKick chan struct{}                // the replica's leadership changed (raftLoop)
	// leaderMeta is the term since which the membership should say this server
	// leads (0: it does not); publishing, whether a goroutine is at it
	// (publishLeader).
	leaderMeta atomic.Uint64
	publishing atomic.Bool
	// waitLogged is when raftLoop last said it waits for servers to bootstrap, or
	// when it started: servers of one deployment start seconds apart, and the first
	// one's wait is not worth a warning until it lasts (bootstrapWaitWarn).
	waitLogged time.Time
	parker     *parker // nil where connections cannot be parked
	core       *core
	coreMu     sync.Mutex // held by the core's owner of the moment
	batch      []*conn    // connections of the frames in the current batch; the owner's
	qmu        sync.Mutex // guards queue, spare, stopped
	queue      []work     // posted, not yet served
	spare      []work     // the other half of a double buffer for queue
	lastNow    time.Time  // the time of the last batch served; with coreMu held
	stopped    bool       // Close has served the last of the queue; posts are refused
	kick       chan struct{}
	stop       chan struct{}
	loopDone   chan struct{}
	wg         sync.WaitGroup // accept loop and every connection's goroutines

	connsMu sync.Mutex // guards conns
	conns   map[*conn]struct{}

	closeOnce   sync.Once
	killed      atomic.Bool // Kill: stop as a killed process would, without notices
	ready       atomic.Bool
	loopStarted bool // set by Open, read by Close on the same goroutine
}

// inbound is a frame from a connection, or the news that the connection ended.
type inbound struct {
	c          *conn
	f          wire.Frame
	at         time.Time // when the reader read it
	closed     bool      // the connection ended; f is empty
	peerClosed bool      // with closed: the peer closed it (EOF or reset), not the server
}

// New checks cfg and prepares a server; nothing listens until Open.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	keys, _ := cluster.ParseKeys("BATON_CLUSTER_KEY", cfg.ClusterKey)
	if cfg.NodeName == "" {
		cfg.NodeName = cfg.nodeName() // once: it may ask the DNS
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	var boot [8]byte
	_, _ = rand.Read(boot[:])
	s := &Server{cfg: cfg, log: opts.Logger, level: opts.Level, reg: opts.Registry, reload: opts.Reload, keys: keys,
		bootID: hex.EncodeToString(boot[:]), kick: make(chan struct{}, 1), raftKick: make(chan struct{}, 1),
		stop: make(chan struct{}), loopDone: make(chan struct{}), conns: map[*conn]struct{}{},
		raftRefusals: ration.Lines{Every: time.Minute}}
	s.adminToken.Store(&cfg.AdminToken)
	s.metrics = newMetrics(s.reg)
	s.reg.MustRegister(newStateCollector(s))
	registerRuntime(s.reg)
	s.core = newCore(s, cfg.SessionTTL)
	return s, nil
}

// Open restores durable state, then listens for tokens, joins the cluster and serves
// HTTP. On error everything opened so far is closed.
func (s *Server) Open() (err error) {
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	now := time.Now()
	raftPort, hasLog, logVersion, raftConn, expect := 0, false, 0, 0, 0
	switch {
	case s.cfg.StateDir != "" && s.cfg.BootstrapExpect > 1:
		// A replica of the log: the core serves once this server leads (raftLoop).
		if s.core.d, err = s.openCluster(); err != nil {
			return err
		}
		_, p, _ := net.SplitHostPort(s.core.d.node.Addr())
		raftPort, _ = strconv.Atoi(p)
		hasLog = s.core.d.node.HasLog()
		logVersion, raftConn, expect = fsm.LogVersion, replica.ConnVersion, s.cfg.BootstrapExpect
		if s.cfg.RaftConnBefore {
			raftConn = 0
		}
	case s.cfg.StateDir != "":
		if s.core.d, err = openDurable(s.cfg.StateDir, s.cfg.MaxTokens, s.log, replica.Hooks{
			Commit: func(d time.Duration) { s.metrics.raftCommit.Observe(d.Seconds()) }}); err != nil {
			return err
		}
		if err = s.core.start(s.core.d, now); err != nil {
			return err
		}
		s.metrics.raftLeader.Set(1)
	default:
		s.core.st.Epoch = 1
	}
	if s.ln, err = net.Listen("tcp", s.cfg.TokenAddr); err != nil {
		return fmt.Errorf("BATON_TOKEN_ADDR %s: %w", s.cfg.TokenAddr, err)
	}
	if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("BATON_HTTP_ADDR %s: %w", s.cfg.HTTPAddr, err)
	}
	// Membership first: the core reads s.node. Its change reports are posted to the
	// core's queue like any other work.
	s.node, err = cluster.Start(cluster.Config{
		Name: s.cfg.nodeName(), BindAddr: s.cfg.GossipBind, Port: s.cfg.GossipPort, Advertise: s.cfg.Advertise,
		Join: s.cfg.Join, Keys: s.keys, Label: s.cfg.ClusterLabel, Local: s.cfg.LocalGossip, Logger: s.log,
		Meta: cluster.Meta{Role: cluster.RoleServer, BootID: s.bootID,
			TokenPort: portOf(s.ln.Addr()), HTTPPort: portOf(s.httpLn.Addr()), RaftPort: raftPort, HasLog: hasLog,
			LogVersion: logVersion, RaftConn: raftConn, Expect: expect},
		OnChange: s.membersChanged,
	})
	if err != nil {
		return cluster.GossipPortErr(s.cfg.GossipPort, err)
	}
	s.gossip.Store(s.node)
	s.loopStarted = true
	go s.loop()
	if d := s.core.d; d != nil && d.clustered {
		s.waitLogged = time.Now()
		s.wg.Add(1)
		go s.raftLoop(d)
	}
	if s.parker, err = newParker(s); err != nil {
		return fmt.Errorf("idle connection watcher: %w", err)
	}
	if s.parker != nil {
		s.wg.Add(1)
		go s.parker.run()
	}
	s.httpSrv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server", "err", err)
		}
	}()
	go s.acceptLoop()
	s.ready.Store(true)
	s.log.Info("baton server up", "token_addr", s.ln.Addr().String(), "http_addr", s.httpLn.Addr().String(),
		"gossip", s.node.Addr(), "node", s.cfg.nodeName(), "epoch", s.core.st.Epoch, "session_ttl", s.cfg.SessionTTL,
		"state_dir", s.cfg.StateDir, "bootstrap_expect", s.cfg.BootstrapExpect, "raft_port", raftPort, "encrypted", s.keys != nil,
		"raft_tls", raftTLS(s.cfg))
	return nil
}

func portOf(a net.Addr) int {
	_, p, _ := net.SplitHostPort(a.String())
	n, _ := strconv.Atoi(p)
	return n
}

// TokenAddr is the bound token protocol address.
func (s *Server) TokenAddr() string { return s.ln.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// GossipAddr is the bound memberlist address, for clients to join.
func (s *Server) GossipAddr() string { return s.node.Addr() }

// Close stops the server gracefully: it leaves the cluster, stops accepting, closes
// every connection with notice (sessions' holders keep trusting their leases until
// their TTL, which a server restarted on the same state honours), and waits for every
// goroutine it started. Idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.ready.Store(false)
		killed := s.killed.Load()
		if !killed {
			s.handOver()
		}
		if s.node != nil && !killed {
			_ = s.node.Leave(time.Second)
		}
		if s.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.httpSrv.Shutdown(ctx)
			cancel()
		} else if s.httpLn != nil {
			s.httpLn.Close()
		}
		if s.ln != nil {
			s.ln.Close()
		}
		if s.loopStarted && !killed {
			_ = s.do(func(time.Time) { s.core.closeAll(); s.core.commit() })
		}
		close(s.stop)
		if s.loopStarted {
			<-s.loopDone
			// The last of the queue is served here: nothing posted waits forever.
			s.coreMu.Lock()
			s.qmu.Lock()
			s.stopped = true
			s.qmu.Unlock()
			s.serveQueue(time.Now())
			s.core.expiryTimer.Stop()
			s.core.graceTimer.Stop()
			s.coreMu.Unlock()
		}
		if s.node != nil {
			_ = s.node.Close()
		}
		_ = s.core.d.close() // after the last batch: nothing more is proposed
		s.connsMu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.connsMu.Unlock()
		s.wg.Wait()
	})
	return nil
}

// Kill stops the server the way a killed process stops, for tests of crashes: its
// connections are cut without notice, it does not leave the cluster or hand the
// leadership over, and nothing more it has is sent.
func (s *Server) Kill() error {
	s.killed.Store(true)
	s.connsMu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.connsMu.Unlock()
	return s.Close()
}

// do runs fn as the core's owner and waits for it.
func (s *Server) do(fn func(now time.Time)) error {
	done := make(chan struct{})
	if !s.post(&work{fn: func(now time.Time) { fn(now); close(done) }}) {
		return errors.New("server stopped")
	}
	<-done
	return nil
}

// Restart restarts the server in place: re-reads its configuration, bumps the epoch,
// closes every connection (clients reconnect and resume their sessions). Fences,
// records, sessions and leases carry on.
func (s *Server) Restart(reason string) (epoch uint64, err error) {
	ttl := s.cfg.SessionTTL
	if s.reload != nil {
		nc, err := s.reload()
		if err != nil {
			return 0, fmt.Errorf("restart: configuration not reloaded, nothing changed: %w", err)
		}
		if nc.TokenAddr != s.cfg.TokenAddr || nc.HTTPAddr != s.cfg.HTTPAddr || nc.GossipPort != s.cfg.GossipPort {
			s.log.Warn("restart: listen addresses are read only at start; keeping the old ones")
		}
		ttl = nc.SessionTTL
		s.adminToken.Store(&nc.AdminToken)
		if s.level != nil {
			if l, err := ParseLevel(nc.LogLevel); err == nil {
				s.level.Set(l)
			}
		}
	}
	err = s.do(func(now time.Time) {
		s.core.restart(ttl)
		epoch = s.core.st.Epoch
	})
	if err == nil {
		s.log.Info("restarted in place", "reason", reason, "epoch", epoch, "session_ttl", ttl)
	}
	return epoch, err
}

// CloseConnections drops every client connection with notice; sessions survive.
func (s *Server) CloseConnections() error {
	return s.do(func(time.Time) { s.core.closeAll() })
}

// Status returns a copy of the current state.
func (s *Server) Status() (Status, error) {
	var st Status
	err := s.do(func(now time.Time) { st = s.core.status(now) })
	if err != nil {
		return st, err
	}
	st.Node = s.cfg.NodeName
	st.Raft = s.raftStatus()
	return st, nil
}

func (s *Server) membersChanged(members []cluster.Member) {
	s.post(&work{fn: func(now time.Time) { s.core.membersChanged(members, now) }})
}

// work is an item for the core: a frame or the end of a connection from its reader,
// or a closure from anything else.
type work struct {
	in inbound
	fn func(now time.Time)
}

// post queues a copy of w for the core and serves the queue if the core is free;
// false once the server has stopped. It never waits for another owner. w is a
// pointer, and the core's functions take frames by pointer, because the core often
// runs on a reader's goroutine whose stack is cold when hundreds of connections take
// turns: every by-value copy of a frame (232 bytes) there cost cache misses.
func (s *Server) post(w *work) bool {
	s.qmu.Lock()
	if s.stopped {
		s.qmu.Unlock()
		return false
	}
	if len(s.queue) < cap(s.queue) { // copied into place: append would copy via the stack
		s.queue = s.queue[:len(s.queue)+1]
	} else {
		s.queue = append(s.queue, work{})
	}
	s.queue[len(s.queue)-1] = *w
	s.qmu.Unlock()
	if s.coreMu.TryLock() {
		now := w.in.at // a reader read its frame a moment ago: one clock reading less
		if now.IsZero() {
			now = time.Now()
		}
		s.serveQueue(now)
		s.coreMu.Unlock()
		// What was posted while this goroutine served (its poster found the core
		// taken) goes to the core goroutine: a reader goes back to its connection.
		if s.pending() {
			s.wake()
		}
	}
	return true
}

func (s *Server) pending() bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue) > 0
}

func (s *Server) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// loop is the core goroutine: it serves the queue whenever a poster left work behind,
// and until it is empty.
func (s *Server) loop() {
	defer close(s.loopDone)
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		}
		for s.pending() {
			s.coreMu.Lock()
			s.serveQueue(time.Now())
			s.coreMu.Unlock()
		}
	}
}

// serveQueue handles everything queued, then commits once for the whole batch; now
// is the time of its first round. With coreMu held.
func (s *Server) serveQueue(now time.Time) {
	s.qmu.Lock()
	for round := 0; len(s.queue) > 0; round++ {
		batch := s.queue
		s.queue, s.spare = s.spare[:0], nil
		s.qmu.Unlock()
		if round > 0 {
			now = time.Now()
		}
		// The core's clock never runs back: a reader's reading may be a moment older
		// than one a batch has already used.
		if now.Before(s.lastNow) {
			now = s.lastNow
		}
		for i := range batch {
			// A frame read after the batch's clock reading gets its own: a keepalive's
			// deadline counts from its arrival, never from an earlier moment (the
			// poster's read, or before a poster stalled). The clock still never runs back.
			if at := batch[i].in.at; at.After(now) {
				now = at
			}
			if fn := batch[i].fn; fn != nil {
				fn(now)
			} else {
				s.handle(&batch[i].in, now)
			}
			batch[i] = work{}
		}
		s.lastNow = now
		s.qmu.Lock()
		s.spare = batch[:0]
	}
	s.qmu.Unlock()
	s.core.commit()
	// Only now are the batch's replies written: a frame stops counting against its
	// reader's backpressure once its answer is out.
	for i, cn := range s.batch {
		cn.inflight.Add(-1)
		cn.room()
		s.batch[i] = nil
	}
	s.batch = s.batch[:0]
}

func (s *Server) handle(in *inbound, now time.Time) {
	switch {
	case in.closed:
		// First: the reader marks its connection closing right after posting this, and
		// whether the peer closed it was decided before.
		s.core.connClosed(in.c, in.peerClosed, now)
	case in.c.closing.Load():
		// The server has let go of this connection; its client will resume elsewhere
		// and learn the session's state from Welcome.
		s.batch = append(s.batch, in.c)
	default:
		s.core.handle(in.c, &in.f, now)
		s.batch = append(s.batch, in.c)
	}
}
