package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/fsm"
	"github.com/baton-dev/baton/internal/replica"
	"github.com/baton-dev/baton/internal/wire"
)

// A replicated server (BATON_BOOTSTRAP_EXPECT above 1) is one of several that keep
// the state in one raft log. They find each other through memberlist, as Consul's
// servers do through Serf: each publishes its raft port in its node meta, and its
// raft address is its node name and that port. The name is looked up in the
// membership at every dial, so that a server recreated at another address is still
// reached under the same raft identity. Until the membership has heard of the new
// address, the old one may belong to another server (recreated servers swap
// addresses): each connection opens with the name it is meant for, and the server
// reached refuses one meant for another (replica's opening.go).
//
// Only the leader serves clients. Its core copies the state from the log when it
// wins the leadership (core.lead: Barrier, then every session gets a full TTL from
// that moment before any expires), and throws it away when it loses it
// (core.stepDown). A follower answers a hello with not_leader, naming the leader's
// token address, and serves /status from the log's state.
//
// The replication rules this keeps are listed, with their tests, in the package doc.

// openCluster opens this server's replica of the log, in its own directory under
// BATON_STATE_DIR (servers may share one volume: Compose cannot give each replica of
// a service its own). It does not wait for a leader: the first election waits for
// BATON_BOOTSTRAP_EXPECT servers to find each other (raftLoop).
func (s *Server) openCluster() (*durable, error) {
	cfg := s.cfg
	if err := checkStateDir(cfg.StateDir, cfg.NodeName, true); err != nil {
		return nil, err
	}
	d := &durable{log: fsm.NewLog(cfg.MaxTokens), dir: filepath.Join(cfg.StateDir, cfg.NodeName), clustered: true}
	rc := replica.DefaultConfig()
	rc.ID = cfg.NodeName
	rc.Dir = filepath.Join(d.dir, "raft")
	rc.BindAddr = net.JoinHostPort(cfg.GossipBind, strconv.Itoa(cfg.RaftPort))
	rc.Advertise = net.JoinHostPort(cfg.NodeName, strconv.Itoa(cfg.raftAdvertisePort()))
	rc.Dial = s.dialRaft
	rc.ReadsOpening = s.raftReadsOpening
	rc.OpensConnections = s.raftPeerOpens
	if cfg.RaftConnBefore {
		rc.ReadsOpening, rc.OpensConnections = func(string) bool { return false }, nil
	}
	rc.Logger = s.log.With("component", "raft")
	// A leader steps down when no quorum answered within its lease, which raft wants
	// no longer than the heartbeat timeout.
	rc.HeartbeatTimeout, rc.ElectionTimeout = cfg.RaftTimeout, cfg.RaftTimeout
	rc.LeaderLeaseTimeout = min(rc.LeaderLeaseTimeout, cfg.RaftTimeout)
	rc.Keys = raftKeys(cfg, s.keys) // raft over TLS between the holders of its key only
	rc.Hooks = replica.Hooks{
		Commit:       func(d time.Duration) { s.metrics.raftCommit.Observe(d.Seconds()) },
		LeaderChange: func(replica.Leadership) { s.kickRaft() },
		Refused: func(remote, reason string, err error) {
			s.metrics.protocolErrors.WithLabelValues(reason).Inc()
			if n, since, ok := s.raftRefusals.Admit(reason, time.Now()); ok {
				s.log.Info("raft connection refused before raft read it", "remote", remote, "reason", reason, "err", err,
					"repeated", n, "since", since.Round(time.Second))
			}
		},
	}
	d.lease = rc.LeaderLeaseTimeout
	undo, err := makeLogDir(rc.Dir)
	if err != nil {
		return nil, fmt.Errorf("BATON_STATE_DIR %s: %w", cfg.StateDir, err)
	}
	if d.node, err = replica.Open(rc, d.log); err != nil {
		undo()
		return nil, fmt.Errorf("raft (BATON_STATE_DIR %s, BATON_RAFT_PORT %d): %w", cfg.StateDir, cfg.RaftPort, err)
	}
	return d, nil
}

// raftKeys are the keys raft's TLS proves (replica.Config.Keys): BATON_RAFT_KEY,
// which only servers hold, else the cluster key, which clients hold too (any
// holder can then speak raft: docs/operations.md). None: plain TCP.
func raftKeys(cfg Config, clusterKeys [][]byte) [][]byte {
	if keys, _ := cluster.ParseKeys("BATON_RAFT_KEY", cfg.RaftKey); keys != nil {
		return keys
	}
	return clusterKeys
}

// raftTLS names the key raft's TLS proves, for the start line: an operator reads
// there whether a client could speak raft.
func raftTLS(cfg Config) string {
	switch {
	case cfg.BootstrapExpect <= 1:
		return "" // a server alone: no raft connections
	case cfg.RaftKey != "":
		return "BATON_RAFT_KEY"
	case cfg.ClusterKey != "":
		return "BATON_CLUSTER_KEY"
	}
	return "none"
}

// dialRaft dials a raft peer by name: the name is looked up in the membership,
// and dialled as given (a DNS name, an address) when the membership does not know it.
func (s *Server) dialRaft(ctx context.Context, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		if m, ok := s.raftMember(host); ok {
			if m.Meta.RaftPort > 0 { // it may have restarted on another port
				port = strconv.Itoa(m.Meta.RaftPort)
			}
			addr = net.JoinHostPort(m.Addr, port)
		}
	}
	if s.cfg.RaftDial != nil {
		return s.cfg.RaftDial(ctx, host, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// raftReadsOpening says whether the server raft knows at addr reads the opening
// that names the server a raft connection is meant for (replica.Config.ReadsOpening):
// one the membership knows publishes replica.ConnVersion; one it does not know yet
// is taken to be of this version. Only a server of an earlier version (an upgrade
// in progress) is sent raft's own bytes.
func (s *Server) raftReadsOpening(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	m, ok := s.raftMember(host)
	return !ok || m.Meta.RaftConn >= replica.ConnVersion
}

// raftPeerOpens says whether a server at ip is known to open its raft connections
// (replica.Config.OpensConnections): some server the membership has at that address
// publishes replica.ConnVersion. A connection from there without an opening was
// meant for a server of an earlier version, by a dialler whose view of it is stale
// (servers recreated with a new version swap addresses too), and is refused. A
// server of the earlier version at an address a newer one had is refused as well
// until the membership forgets the newer one there: a retry, against a connection
// that might reach the wrong server.
func (s *Server) raftPeerOpens(ip string) bool {
	addr, n := net.ParseIP(ip), s.gossip.Load()
	if addr == nil || n == nil { // the membership starts after raft
		return false
	}
	for _, m := range n.Members() {
		if m.Meta.Role == cluster.RoleServer && m.Meta.RaftConn >= replica.ConnVersion && addr.Equal(net.ParseIP(m.Addr)) {
			return true
		}
	}
	return false
}

// raftMember is the server the membership knows by name, as it last heard of it.
func (s *Server) raftMember(name string) (cluster.Member, bool) {
	if n := s.gossip.Load(); n != nil {
		if m, ok := n.Lookup(name); ok && m.Meta.Role == cluster.RoleServer {
			return m, true
		}
	}
	return cluster.Member{}, false
}

func (s *Server) kickRaft() {
	select {
	case s.raftKick <- struct{}{}:
	default:
	}
}

// raftLoop follows the replica: it bootstraps the cluster once enough servers have
// found each other, publishes who leads in the membership and the metrics, tells
// the core when this server's leadership changed, and, on the leader, adds servers
// that joined the membership to the raft configuration, one at a time.
func (s *Server) raftLoop(d *durable) {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last replica.Leadership
	bootstrapped := false
	versions := serverVersions{seen: map[string]int{}}
	for {
		select {
		case <-s.stop:
			return
		case <-s.raftKick:
		case <-t.C:
		}
		if err := d.log.Stopped(); err != nil {
			s.haltReplica(d, err)
			return
		}
		l, _ := d.node.Leadership()
		if l.LeaderID != last.LeaderID && l.LeaderID != "" {
			s.metrics.raftLeaderChanges.Inc()
		}
		last = l
		s.metrics.raftLeader.Set(b2f(l.IsLeader))
		if l.IsLeader != d.leading.Load() || (l.IsLeader && d.node.Term() != d.term.Load()) {
			s.post(&work{fn: s.core.leadershipChanged})
		}
		if l.IsLeader {
			s.publishLeader(l.Term) // the term of this view: a later one may not be this server's
		} else {
			s.publishLeader(0)
		}
		if !bootstrapped {
			bootstrapped = s.maybeBootstrap(d)
		}
		s.checkLogVersion(d, l.IsLeader, &versions)
		if l.IsLeader {
			s.reconcile(d, &versions)
		}
	}
}

// haltReplica stops a server whose log holds an entry it cannot read, written by a
// server of a newer version (fsm.ErrNewerLog): applying what follows would part its
// state from the others', so it takes no further part in the cluster (fail-stop,
// as Consul's servers do on an unknown log type). Running the other servers'
// version brings it back.
func (s *Server) haltReplica(d *durable, err error) {
	s.log.Error("raft: this server cannot read the cluster's log, written by a newer version of baton: it stops replicating and serving; run the version the other servers run",
		"err", err)
	s.ready.Store(false)
	s.publishLeader(0)
	s.post(&work{fn: func(time.Time) {
		if d.leading.Load() {
			s.core.stepDown("the log holds an entry of a newer version")
		}
		d.halted = true
		_ = d.node.Close()
	}})
}

// publishLeader has the membership say whether this server leads (since term; 0:
// it does not), on a goroutine of its own: memberlist's UpdateNode waits until the
// change has been gossiped (several gossip rounds), and neither the core's taking
// over nor the next look at the replica may wait for that.
func (s *Server) publishLeader(term uint64) {
	s.leaderMeta.Store(term)
	if !s.publishing.CompareAndSwap(false, true) {
		return // the running publisher reads leaderMeta again before it ends
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			want := s.leaderMeta.Load()
			_ = s.node.SetLeader(want, time.Second)
			s.publishing.Store(false)
			if s.leaderMeta.Load() == want || !s.publishing.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serverMembers are the alive, replicating servers in the membership, by name.
func (s *Server) serverMembers() []cluster.Member {
	var out []cluster.Member
	for _, m := range s.node.Members() {
		if m.State == cluster.StateAlive && m.Meta.Role == cluster.RoleServer && m.Meta.RaftPort > 0 && !m.Meta.Leaving {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b cluster.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// raftServer is a server member's place in a raft configuration: its name, and
// its name with its raft port as its address.
func raftServer(m cluster.Member) replica.Server {
	return replica.Server{ID: m.Name, Addr: net.JoinHostPort(m.Name, strconv.Itoa(m.Meta.RaftPort)), Voter: true}
}

// bootstrapSet is the servers to start a cluster with, once expect of them have
// found each other, or nil and why not yet. It waits while some server says it
// leads, or says its log holds a cluster already (Consul asks its peers the same):
// that cluster exists, and its leader adds this server (reconcile). A server with a
// log of its own is not asked: its raft refuses to bootstrap again. Servers that
// expect another number of servers start nothing (conflict), as Consul's do: the
// first to count enough would start a cluster of its own count, and the others
// would join it as more voters than any of them expected.
func bootstrapSet(members []cluster.Member, self string, expect int) (servers []replica.Server, why string, conflict bool) {
	for _, m := range members {
		switch {
		case m.Meta.Leader:
			return nil, m.Name + " leads a cluster", false
		case m.Meta.HasLog && m.Name != self:
			return nil, m.Name + " has a log: a cluster exists", false
		}
		servers = append(servers, raftServer(m))
	}
	for _, m := range members {
		if m.Meta.Expect != 0 && m.Meta.Expect != expect {
			return nil, fmt.Sprintf("%s expects %d servers, this one %d", m.Name, m.Meta.Expect, expect), true
		}
	}
	if len(servers) < expect {
		return nil, "too few servers", false
	}
	return servers, "", false
}

// bootstrapWaitWarn is how long a server waits for the others before it warns, and
// then how often: the servers of a deployment start a few seconds apart.
const bootstrapWaitWarn = 10 * time.Second

// maybeBootstrap starts the cluster once BATON_BOOTSTRAP_EXPECT servers have found
// each other, each of them with the same set (bootstrapSet): true once done, or
// once this server turns out to have a log already.
func (s *Server) maybeBootstrap(d *durable) bool {
	members := s.serverMembers()
	servers, why, conflict := bootstrapSet(members, s.cfg.nodeName(), s.cfg.BootstrapExpect)
	if servers == nil {
		if now := time.Now(); conflict && now.Sub(s.waitLogged) >= bootstrapWaitWarn {
			s.waitLogged = now
			s.log.Error("raft: the servers disagree on BATON_BOOTSTRAP_EXPECT, and none starts a cluster: give every server the same value (the number of servers)",
				"conflict", why)
		} else if now.Sub(s.waitLogged) >= bootstrapWaitWarn && why == "too few servers" {
			s.waitLogged = now
			names := make([]string, len(members))
			for i, m := range members {
				names[i] = m.Name
			}
			s.log.Warn("raft: too few servers found to start a cluster (one that has a log already needs a quorum of its servers back): check BATON_JOIN, and that every server has BATON_BOOTSTRAP_EXPECT and BATON_STATE_DIR set",
				"want", s.cfg.BootstrapExpect, "found", len(members), "servers", names, "join", s.cfg.Join)
		}
		return false
	}
	for _, m := range servers {
		if m.ID != s.cfg.nodeName() && !s.provesRaftKey(d, m) {
			return false
		}
	}
	err := d.node.Bootstrap(servers)
	switch {
	case errors.Is(err, replica.ErrHasState):
		return true
	case err != nil:
		s.log.Warn("raft bootstrap failed; will retry", "err", err)
		return false
	}
	s.log.Info("raft cluster bootstrapped", "servers", len(servers))
	return true
}

// serverVersions is what raftLoop knows of the servers' versions.
type serverVersions struct {
	seen map[string]int // each server's LogVersion, as last seen in the membership
	// warned: a server of an older version was reported; refused, when reconcile
	// last said it leaves one out.
	warned  bool
	refused time.Time
}

// checkLogVersion follows the versions the servers publish in the membership. On
// the leader, once every server of the configuration reads the log version of
// this build, it has the core record that in the log (fsm.OpLogVersion, raiseLog):
// from then on every leader opens its batches with their term (durable.stamp), a
// leader that restarts while a server is down too, and no server that reads less
// is added (reconcile). A server seen once keeps its last word while it is gone.
func (s *Server) checkLogVersion(d *durable, leading bool, v *serverVersions) {
	seen := v.seen
	for _, m := range s.node.Members() {
		if m.Meta.Role == cluster.RoleServer {
			seen[m.Name] = max(m.Meta.LogVersion, 1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conf, err := d.node.Servers(ctx)
	if err != nil {
		return
	}
	recorded := d.log.LogVersion()
	if leading && recorded < fsm.LogVersion && readsTerms(conf, seen) {
		s.post(&work{fn: s.core.raiseLog})
	}
	var old []string // servers seen running an older version (not those not seen yet)
	for _, sv := range conf {
		if v := seen[sv.ID]; v > 0 && v < fsm.LogVersion {
			old = append(old, sv.ID)
		}
	}
	switch {
	case len(old) == 0 || v.warned:
	case recorded >= fsm.LogVersion:
		v.warned = true
		s.log.Error("raft: a server of an older version is in a cluster whose log it cannot read: it skips entries, and its state parts from the others'; stop it and run this version there (docs/deployment.md, Upgrading)",
			"servers", old, "log_version", recorded)
	default:
		v.warned = true
		s.log.Warn("raft: batches do not carry their term while a server of an older version is in the cluster: a leader that lost the leadership and won it again may commit one batch decided on its old state; upgrade it",
			"servers", old)
	}
}

// raiseLog records in the log that every server reads this build's log version:
// on the core's goroutine, while it leads.
func (c *core) raiseLog(now time.Time) {
	if !c.d.leading.Load() || c.st.LogVersion >= fsm.LogVersion {
		return
	}
	c.exec(&fsm.Command{Op: fsm.OpLogVersion, Seq: fsm.LogVersion, Time: now})
	c.d.stamp.Store(true) // the next batch; this one commits first or the core steps down
	c.s.log.Info("raft: every server reads log version 2: batches carry their term from now on", "log_version", fsm.LogVersion)
}

// readsTerms says whether every server of the configuration reads a batch's term
// (fsm.OpTerm): each was seen publishing fsm.LogVersion 2 or more.
func readsTerms(conf []replica.Server, seen map[string]int) bool {
	for _, sv := range conf {
		if seen[sv.ID] < fsm.LogVersion {
			return false
		}
	}
	return len(conf) > 0
}

// reconcile adds to the raft configuration a server the membership knows and the
// configuration does not (a server added to the deployment, or one whose state was
// lost), one per call. A server that died is never removed here: only by an
// operator (POST /admin/remove-server), as its loss may be temporary.
//
// A server that reads an older log than this one writes is not added: it would
// skip the entries it cannot read, and its state would part from the others'.
func (s *Server) reconcile(d *durable, v *serverVersions) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conf, err := d.node.Servers(ctx)
	if err != nil {
		return
	}
	versioned := d.log.LogVersion() >= fsm.LogVersion
	for _, member := range s.serverMembers() {
		m := raftServer(member)
		if slices.ContainsFunc(conf, func(c replica.Server) bool { return c.ID == m.ID && c.Addr == m.Addr }) {
			continue
		}
		if versioned && v.seen[m.ID] < fsm.LogVersion {
			if now := time.Now(); now.Sub(v.refused) >= 10*time.Second {
				v.refused = now
				s.log.Warn("raft: not adding a server of an older version, which cannot read this cluster's log: upgrade it",
					"server", m.ID, "its_log_version", v.seen[m.ID], "log_version", fsm.LogVersion)
			}
			continue
		}
		if !s.provesRaftKey(d, m) {
			continue
		}
		if err := d.node.AddVoter(ctx, m.ID, m.Addr); err != nil {
			s.log.Warn("raft: could not add server", "server", m.ID, "err", err)
		}
		return
	}
}

// provesRaftKey says whether the server m that the membership announces proves it
// holds raft's key (replica.Node.ProvesKey), before it is made a voter: the
// membership is keyed by the cluster key at most, which clients hold too, and an
// impostor voter would count toward every quorum and answer none. A refusal is
// counted (protocol_errors{reason="raft_unproven_server"}) and logged once a minute.
func (s *Server) provesRaftKey(d *durable, m replica.Server) bool {
	err := d.node.ProvesKey(m.Addr, 2*time.Second)
	if err == nil {
		return true
	}
	if !errors.Is(err, replica.ErrUnproven) { // not reachable yet (starting, or gone): asked again next round
		s.log.Debug("raft: an announced server did not answer raft's handshake", "server", m.ID, "addr", m.Addr, "err", err)
		return false
	}
	s.metrics.protocolErrors.WithLabelValues("raft_unproven_server").Inc()
	if n, _, ok := s.raftRefusals.Admit("raft_unproven_server", time.Now()); ok {
		s.log.Warn("raft: a server the membership announces does not prove raft's key: not made a voter; "+
			"give every server the same BATON_RAFT_KEY (or, without it, BATON_CLUSTER_KEY), or find what announces it",
			"server", m.ID, "addr", m.Addr, "err", err, "repeated", n)
	}
	return false
}

// leadershipChanged brings the core in line with the replica: it starts serving
// when this server leads, and stops when it does not.
func (c *core) leadershipChanged(now time.Time) {
	d := c.d
	switch lead := d.node.IsLeader(); {
	case lead && !d.leading.Load():
		c.lead()
	case lead && d.node.Term() != d.term.Load():
		// Lost and won again between two looks: entries committed meanwhile by
		// another leader are in the log, not in the core's state.
		c.stepDown("leadership lost and won again")
		c.lead()
	case !lead && d.leading.Load():
		c.stepDown("another server leads")
	}
}

// lead starts serving as the leader: once every entry committed before is applied
// here (Barrier), the core copies the log's state, gives every session a full TTL
// from now, and starts a new epoch. A failure leaves it a follower; the loop tries
// again on its next round while raft says this server leads.
func (c *core) lead() {
	d := c.d
	term := d.node.Term()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := d.node.Barrier(ctx)
	cancel()
	if err == nil {
		d.term.Store(term) // start's commit is checked against it (durable.commit)
		now := time.Now()  // after the barrier: the sessions' grace counts from here
		if now.Before(c.s.lastNow) {
			now = c.s.lastNow
		}
		err = c.start(d, now)
	}
	if err == nil && d.node.Term() != term {
		err = errors.New("the leadership changed while taking over")
	}
	if err != nil {
		c.s.log.Warn("raft: won the leadership but could not take over; will retry", "err", err)
		c.reset()
		return
	}
	c.s.lastNow = time.Now()
	c.event(Event{Kind: "leader", Detail: fmt.Sprintf("epoch %d", c.st.Epoch)})
	c.s.log.Info("leading: serving clients", "epoch", c.st.Epoch, "sessions", c.st.Sessions.Len(), "tokens", c.st.Tokens.Len())
}

// stepDown stops serving: the replies the batch held are dropped (their state may
// not commit), every connection is closed with notice (clients resume their
// sessions on the new leader), and the state is thrown away: it is copied from the
// log again if this server leads again.
func (c *core) stepDown(why string) {
	c.dropReplies()
	c.closeAll()
	c.reset()
	c.event(Event{Kind: "follower", Detail: why})
	c.s.log.Warn("stepped down: no longer serving clients", "why", why)
}

// reset leaves the core a follower with an empty state.
func (c *core) reset() {
	d := c.d
	d.leading.Store(false)
	d.stamp.Store(false)
	d.entry, d.needProof = nil, false
	c.st = newState(c.s.cfg.MaxTokens, c.ttl)
	c.expiryTimer.Stop()
	c.expiryDue = time.Time{}
	c.graceTimer.Stop()
	c.graceEnd = time.Time{}
}

// notLeader refuses a hello on a follower and names the leader's token address,
// if it is known, for the client to follow.
//
//go:noinline
func (c *core) notLeader(cn *conn) {
	addr := ""
	if id, _ := c.d.node.Leader(); id != "" {
		if m, ok := c.s.node.Lookup(id); ok && m.State == cluster.StateAlive && m.Meta.TokenPort > 0 {
			addr = m.TokenAddr()
		}
	}
	c.s.metrics.notLeader.Inc()
	c.s.log.Debug("hello refused: not the leader", "conn", cn.remote, "leader", addr)
	c.reply(cn, wire.Frame{Op: wire.OpError, Code: wire.CodeNotLeader, Text: addr})
	c.closeConn(cn, false)
}

// raftStatus is the replica's part of /status; nil without a replicated log.
func (s *Server) raftStatus() *RaftStatus {
	d := s.core.d
	if d == nil || !d.clustered {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := d.node.Status(ctx)
	if err != nil {
		return &RaftStatus{State: "unknown: " + err.Error()}
	}
	rs := &RaftStatus{ID: st.ID, State: st.State, Leader: st.Leader, Term: st.Term, CommitIndex: st.CommitIndex,
		AppliedIndex: st.AppliedIndex, LogVersion: max(d.log.LogVersion(), 1), Servers: []RaftServer{}}
	for _, sv := range st.Servers {
		rs.Servers = append(rs.Servers, RaftServer{ID: sv.ID, Addr: sv.Addr, Voter: sv.Voter, Leader: sv.ID == st.Leader})
	}
	return rs
}

// RemoveServer takes a server out of the raft configuration: for one that is gone
// for good. Leader only.
func (s *Server) RemoveServer(id string) error {
	d := s.core.d
	if d == nil || !d.clustered {
		return errors.New("not a replicated server (BATON_BOOTSTRAP_EXPECT is 1)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.node.RemoveServer(ctx, id)
}

// handOver gives the leadership to another server before this one stops, so that
// clients wait for no election. Best effort.
func (s *Server) handOver() {
	d := s.core.d
	if d == nil || !d.clustered || !d.node.IsLeader() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := d.node.TransferLeadership(ctx); err != nil {
		s.log.Warn("raft: leadership not handed over before stopping", "err", err)
		return
	}
	s.log.Info("raft: leadership handed over before stopping")
}

// Leading reports whether this server serves clients: a replicated server while it
// leads, any other server always.
func (s *Server) Leading() bool {
	d := s.core.d
	return d == nil || !d.clustered || d.leading.Load()
}
