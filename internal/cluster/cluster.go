// Package cluster is baton's membership: a thin layer over hashicorp/memberlist that
// carries each node's role, boot id and service ports in its metadata, tells dead
// nodes from nodes that left on purpose, and reports changes to one listener.
package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/baton-dev/baton/internal/ration"
)

// Roles a node may have.
const (
	RoleServer = "server"
	RoleClient = "client"
)

// Member states.
const (
	StateAlive = "alive"
	StateDead  = "dead"
	StateLeft  = "left"
)

// Meta is what a node tells the cluster about itself. Kept small: memberlist allows
// 512 bytes.
type Meta struct {
	Role      string `json:"r"`
	BootID    string `json:"b"`
	TokenPort int    `json:"t,omitempty"` // server: where the token protocol listens
	HTTPPort  int    `json:"h,omitempty"`
	Leaving   bool   `json:"l,omitempty"` // set just before a graceful leave
	// RaftPort is where a server with a state directory replicates: its raft
	// address is its node name and this port (the name is found through the
	// cluster, so that a server recreated at another address is still reached).
	RaftPort int `json:"rp,omitempty"`
	// Leader: this server is the raft leader, the one clients must talk to, since
	// raft term Term. A leader that died says so until the cluster declares it
	// dead; its successor says so with a higher term.
	Leader bool   `json:"ld,omitempty"`
	Term   uint64 `json:"lt,omitempty"`
	// HasLog: this server's raft log held a cluster when it started. A server
	// without one that sees it joins that cluster instead of starting another.
	HasLog bool `json:"hl,omitempty"`
	// LogVersion is the newest raft log this server reads (fsm.LogVersion; absent:
	// 1). A leader writes only what every server of its cluster reads.
	LogVersion int `json:"lv,omitempty"`
	// RaftConn is the raft connection format this server reads
	// (replica.ConnVersion; absent: raft's own, of a version before it). A server
	// opens a connection to it with the name of the server meant only from 1.
	RaftConn int `json:"rc,omitempty"`
	// Expect is the BATON_BOOTSTRAP_EXPECT of a replicated server: servers that
	// disagree on it do not start a cluster (absent: a version before it).
	Expect int `json:"be,omitempty"`
}

// Member is one node as this node sees it.
type Member struct {
	Name string
	Addr string // gossip host, as the cluster sees it
	// Gossip is its gossip host:port: two processes on one host differ in the port.
	Gossip string
	State  string
	Meta   Meta
	Since  time.Time
}

// TokenAddr is the address of a server member's token port.
func (m Member) TokenAddr() string {
	return net.JoinHostPort(m.Addr, strconv.Itoa(m.Meta.TokenPort))
}

// Config configures a Node.
type Config struct {
	Name      string
	BindAddr  string // default 0.0.0.0
	Port      int    // 0 picks a free port
	Advertise string // address others reach us at; default: chosen by memberlist
	Join      []string
	Keys      [][]byte // 16, 24 or 32 bytes each turn on gossip encryption: sent with the first, any accepted (ParseKeys)
	Label     string   // keeps deployments that share a network apart
	Meta      Meta
	Local     bool // loopback timings for tests
	Logger    *slog.Logger
	// OnChange gets the member list after a change, never concurrently with itself.
	// It may run before Start returns: memberlist reports the local node first.
	OnChange   func([]Member)
	JoinPeriod time.Duration
	// NeedJoin says when to join the seeds again; by default, when alone. A client
	// also rejoins when it sees no server: a recreated server comes back alone at a
	// new address and only its clients know where the seeds are.
	NeedJoin func(*Node) bool
}

// ParseKeys decodes a key variable (name: BATON_CLUSTER_KEY, BATON_RAFT_KEY): base64
// of 16, 24 or 32 bytes, or while the
// key is being changed a comma-separated list of such keys, the one in use first.
// A node uses the first (gossip it sends, a client's proof, the raft identity it
// presents) and accepts any: so every node can move from "old" to "old,new" to
// "new,old" to "new", one at a time, without two running nodes ever failing to
// understand each other (docs/operations.md). Empty: no key.
func ParseKeys(name, s string) ([][]byte, error) {
	if s == "" {
		return nil, nil
	}
	var keys [][]byte
	for i, part := range strings.Split(s, ",") {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%s: key %d must be base64: %w", name, i+1, err)
		}
		switch len(k) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("%s: key %d must decode to 16, 24 or 32 bytes, got %d", name, i+1, len(k))
		}
		for j, seen := range keys {
			if bytes.Equal(seen, k) {
				return nil, fmt.Errorf("%s: key %d repeats key %d", name, i+1, j+1)
			}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Node is this process's membership.
type Node struct {
	ml   *memberlist.Memberlist
	addr string // gossip host:port, as others reach it
	cfg  Config
	log  *slog.Logger

	mu        sync.Mutex // guards meta, members, joinErr, conflicts
	meta      Meta
	members   map[string]*Member   // everyone seen, dead and left kept a while for status
	joinErr   error                // the last join's error; nil after one succeeded
	conflicts map[string]*conflict // names announced at a second address (conflict.go)
	detection deathDetection       // how soon memberlist declares a silent node dead
	updateMu  sync.Mutex           // one meta update at a time (updateNode)

	notify   chan struct{} // coalesced change signal for the OnChange goroutine
	stop     chan struct{}
	done     sync.WaitGroup
	closeOne sync.Once
}

// Start joins the cluster. A join that finds nobody is not an error: the node keeps
// trying in the background, so seeds may start in any order.
func Start(cfg Config) (*Node, error) {
	n := &Node{cfg: cfg, meta: cfg.Meta, log: cfg.Logger, members: map[string]*Member{}, conflicts: map[string]*conflict{},
		notify: make(chan struct{}, 1), stop: make(chan struct{})}
	if n.log == nil {
		n.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.Local {
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 200 * time.Millisecond
		mc.GossipInterval = 50 * time.Millisecond
		mc.PushPullInterval = 2 * time.Second
	}
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	if mc.BindAddr == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = cfg.Port
	mc.AdvertisePort = cfg.Port
	if cfg.Advertise != "" {
		mc.AdvertiseAddr = cfg.Advertise
	}
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		mc.Keyring = kr
	}
	mc.Label = cfg.Label
	// A restarted container comes back under its old name, often at a new address.
	// Let it reclaim the name at once instead of logging "conflicting address" until
	// the old entry is reaped.
	mc.DeadNodeReclaimTime = time.Nanosecond
	mc.Delegate = n
	mc.Events = n
	mc.Conflict = n
	mc.Logger = log.New(&logWriter{log: n.log, lines: ration.Lines{Every: time.Minute}}, "", 0)
	n.detection = detectionOf(mc) // before Create: memberlist may report a conflict before it returns
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.ml = ml
	n.addr = ml.LocalNode().Address()
	n.done.Add(2)
	go n.notifier()
	go n.joiner()
	return n, nil
}

// GossipPortErr names BATON_GOSSIP_PORT in an error of Start when memberlist could
// not bind the port because another process has it, as a second process on one
// host with the default port does; other errors pass unchanged. memberlist formats
// the cause with %v, so only its text tells.
func GossipPortErr(port int, err error) error {
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		return err
	}
	return fmt.Errorf("BATON_GOSSIP_PORT %d: %w: each process on a host needs its own (0 picks a free one)", port, err)
}

// Addr is this node's gossip address host:port. It is read once, at start:
// memberlist's local node is rewritten by every meta update (UpdateNode), with no
// lock a reader could take.
func (n *Node) Addr() string { return n.addr }

// joiner joins the seeds, and again whenever this node finds itself alone, so a
// client that started before its server, or a server that restarted, finds the
// cluster without help.
func (n *Node) joiner() {
	defer n.done.Done()
	period := n.cfg.JoinPeriod
	if period == 0 {
		period = time.Second
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		need := n.ml.NumMembers() <= 1
		if n.cfg.NeedJoin != nil {
			need = n.cfg.NeedJoin(n)
		}
		if len(n.cfg.Join) > 0 && need {
			if _, err := n.Join(); err != nil {
				n.log.Debug("join failed, will retry", "seeds", strings.Join(n.cfg.Join, ","), "err", err)
			}
		}
		t.Reset(period)
	}
}

func (n *Node) notifier() {
	defer n.done.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.notify:
			if n.cfg.OnChange != nil {
				n.cfg.OnChange(n.Members())
			}
		}
	}
}

func (n *Node) changed() {
	select {
	case n.notify <- struct{}{}:
	default:
	}
}

// Join contacts the seeds now and reports how many answered.
func (n *Node) Join() (int, error) {
	k, err := n.ml.Join(n.cfg.Join)
	n.mu.Lock()
	n.joinErr = err
	if k > 0 {
		n.joinErr = nil
	}
	n.mu.Unlock()
	return k, err
}

// JoinErr is the error of the last attempt to join the seeds, nil if it succeeded
// or none was made. JoinCause says what it likely means.
func (n *Node) JoinErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.joinErr
}

// Likely causes of a failed join, as JoinCause names them.
const (
	CauseKey         = "key"         // BATON_CLUSTER_KEY differs, or is set on one side only
	CauseLabel       = "label"       // BATON_CLUSTER_LABEL differs: the seed drops the stream
	CauseVersion     = "version"     // memberlist protocol versions do not overlap
	CauseUnreachable = "unreachable" // the seeds do not resolve or do not answer
	CauseOther       = "other"
)

// JoinCause reads a memberlist join error for its likely cause. memberlist reports a
// key mismatch in words, but a label mismatch only as the seed closing the stream
// (EOF): the seed logs "unacceptable label" on its side.
func JoinCause(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(msg, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("encrypt", "decrypt", "no installed keys"):
		return CauseKey
	case has("label"), strings.HasSuffix(strings.TrimSpace(msg), "EOF"), has("connection reset"):
		return CauseLabel
	case has("protocol version", "incompatible"):
		return CauseVersion
	case has("connection refused", "no such host", "i/o timeout", "failed to resolve", "no route to host",
		"network is unreachable", "server misbehaving"):
		return CauseUnreachable
	}
	return CauseOther
}

// Members returns every node this node knows, itself included, sorted by nothing.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		out = append(out, *m)
	}
	return out
}

// Server returns an alive server member, if any.
func (n *Node) Server() (Member, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.members {
		if m.State == StateAlive && m.Meta.Role == RoleServer && !m.Meta.Leaving {
			return *m, true
		}
	}
	return Member{}, false
}

// Leader returns the alive server member that says it leads, if any. During a
// change of leader two may say so for a while (a dead leader until the cluster
// declares it dead): the one of the higher term is the newer.
func (n *Node) Leader() (Member, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var leader *Member
	for _, m := range n.members {
		if m.State == StateAlive && m.Meta.Role == RoleServer && !m.Meta.Leaving && m.Meta.Leader &&
			(leader == nil || m.Meta.Term > leader.Meta.Term) {
			leader = m
		}
	}
	if leader == nil {
		return Member{}, false
	}
	return *leader, true
}

// Lookup returns the member named name, if this node knows it.
func (n *Node) Lookup(name string) (Member, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m := n.members[name]; m != nil {
		return *m, true
	}
	return Member{}, false
}

// SetLeader publishes whether this server leads: since raft term term, or not at
// all (0). It returns once the change is gossiped (or timeout passed).
func (n *Node) SetLeader(term uint64, timeout time.Duration) error {
	n.mu.Lock()
	if n.meta.Term == term {
		n.mu.Unlock()
		return nil
	}
	n.meta.Leader, n.meta.Term = term > 0, term
	n.mu.Unlock()
	return n.updateNode(timeout)
}

// updateNode gossips this node's new meta. memberlist's UpdateNode must not run
// twice at once (it bumps the incarnation and broadcasts without a lock: the race
// detector caught a leave and a leadership change doing so).
func (n *Node) updateNode(timeout time.Duration) error {
	n.updateMu.Lock()
	defer n.updateMu.Unlock()
	return n.ml.UpdateNode(timeout)
}

// Leave tells the cluster this node is going on purpose, then leaves.
func (n *Node) Leave(timeout time.Duration) error {
	n.mu.Lock()
	n.meta.Leaving = true
	n.mu.Unlock()
	// The meta update travels ahead of the leave, so peers record "left", not "dead".
	_ = n.updateNode(timeout)
	return n.ml.Leave(timeout)
}

// Close shuts the node down without a leave message. Idempotent.
func (n *Node) Close() error {
	var err error
	n.closeOne.Do(func() {
		close(n.stop)
		err = n.ml.Shutdown()
		n.stopJudging()
		n.done.Wait()
	})
	return err
}

// NodeMeta implements memberlist.Delegate.
func (n *Node) NodeMeta(limit int) []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, _ := json.Marshal(n.meta)
	if len(b) > limit {
		return nil
	}
	return b
}

// NotifyMsg, GetBroadcasts, LocalState and MergeRemoteState implement
// memberlist.Delegate; baton sends no user messages.
func (n *Node) NotifyMsg([]byte)                           {}
func (n *Node) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (n *Node) LocalState(join bool) []byte                { return nil }
func (n *Node) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin implements memberlist.EventDelegate.
func (n *Node) NotifyJoin(node *memberlist.Node) { n.upsert(node, StateAlive) }

// NotifyUpdate implements memberlist.EventDelegate.
func (n *Node) NotifyUpdate(node *memberlist.Node) { n.upsert(node, StateAlive) }

// NotifyLeave implements memberlist.EventDelegate. memberlist reports a failure and a
// graceful leave alike; the Leaving flag in the node's last meta tells them apart.
func (n *Node) NotifyLeave(node *memberlist.Node) {
	n.mu.Lock()
	m := n.members[node.Name]
	if m == nil {
		m = &Member{Name: node.Name, Addr: node.Addr.String(), Gossip: node.Address()}
		n.members[node.Name] = m
	}
	if meta, err := decodeMeta(node.Meta); err == nil {
		m.Meta = meta
	}
	m.State = StateDead
	if m.Meta.Leaving {
		m.State = StateLeft
	}
	m.Since = time.Now()
	n.pruneLocked()
	n.mu.Unlock()
	n.log.Info("member gone", "node", node.Name, "state", m.State)
	n.changed()
}

func (n *Node) upsert(node *memberlist.Node, state string) {
	meta, err := decodeMeta(node.Meta)
	if err != nil {
		n.log.Warn("member with unreadable metadata", "node", node.Name, "err", err)
	}
	n.mu.Lock()
	m := n.members[node.Name]
	if m == nil {
		m = &Member{Name: node.Name}
		n.members[node.Name] = m
	}
	if m.State != state || m.Meta.BootID != meta.BootID {
		m.Since = time.Now()
	}
	m.Addr, m.Gossip, m.State, m.Meta = node.Addr.String(), node.Address(), state, meta
	n.mu.Unlock()
	n.log.Debug("member", "node", node.Name, "addr", m.Addr, "role", meta.Role, "state", state)
	n.changed()
}

// maxGone bounds how many dead or left members are remembered for status.
const maxGone = 256

func (n *Node) pruneLocked() {
	gone := 0
	var oldest *Member
	for _, m := range n.members {
		if m.State != StateAlive {
			gone++
			if oldest == nil || m.Since.Before(oldest.Since) {
				oldest = m
			}
		}
	}
	if gone > maxGone && oldest != nil {
		delete(n.members, oldest.Name)
	}
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, errors.New("no metadata")
	}
	err := json.Unmarshal(b, &m)
	return m, err
}

// logWriter turns memberlist's log lines into slog records at a fitting level. A
// line that repeats (a peer with the wrong key retries every second, forever) is
// written once, then at most once every period with how often it came meanwhile;
// lines that say what a misconfigured peer did carry the likely cause.
type logWriter struct {
	log   *slog.Logger
	lines ration.Lines
	now   func() time.Time // nil: time.Now (tests set it)
}

// peerHints name, for memberlist's words about a peer it refused, what the peer
// likely has wrong.
var peerHints = []struct{ words, hint string }{
	{"remote state is encrypted and encryption is not configured",
		"a node with BATON_CLUSTER_KEY set tries to join this one, which has none"},
	{"encryption is configured but remote state is not encrypted",
		"a node without BATON_CLUSTER_KEY tries to join this one, which has a key"},
	{"no installed keys could decrypt", "a node with a different BATON_CLUSTER_KEY tries to join"},
	{"unacceptable label", "a node with a different BATON_CLUSTER_LABEL tries to join"},
}

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.Contains(line, "Conflicting address"):
		// Said, and judged, by NotifyConflict (conflict.go): a restart or a mistake.
	case strings.Contains(line, "[ERR]"):
		level = slog.LevelError
	case strings.Contains(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.Contains(line, "[INFO]"):
		level = slog.LevelInfo
	}
	ctx := context.Background()
	if !w.log.Enabled(ctx, level) {
		return len(p), nil
	}
	attrs := []any{"component", "memberlist"}
	for _, h := range peerHints {
		if strings.Contains(line, h.words) {
			attrs = append(attrs, "likely_cause", h.hint)
			break
		}
	}
	if level >= slog.LevelWarn {
		n, since, ok := w.admit(lineKind(line))
		if !ok {
			return len(p), nil
		}
		if n > 0 {
			attrs = append(attrs, "repeated", n, "since", since.Round(time.Second))
		}
	}
	w.log.Log(ctx, level, line, attrs...)
	return len(p), nil
}

// admit says whether a line of this kind is written now (ration.Lines.Admit).
func (w *logWriter) admit(kind string) (int, time.Duration, bool) {
	now := time.Now()
	if w.now != nil {
		now = w.now()
	}
	return w.lines.Admit(kind, now)
}

// lineKind is a memberlist line without what changes between repeats: addresses,
// ports and numbers.
func lineKind(line string) string {
	var b strings.Builder
	digits := false
	for _, r := range line {
		if r >= '0' && r <= '9' {
			if !digits {
				b.WriteByte('#')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(r)
	}
	return b.String()
}
