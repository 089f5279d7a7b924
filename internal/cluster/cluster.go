// Package cluster is baton's membership: a thin layer over hashicorp/memberlist that
// carries each node's role, boot id and service ports in its metadata, tells dead
// nodes from nodes that left on purpose, and reports changes to one listener.
package cluster

import (
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
}

// Member is one node as this node sees it.
type Member struct {
	Name  string
	Addr  string // gossip host, as the cluster sees it
	State string
	Meta  Meta
	Since time.Time
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
	Key       []byte // 16, 24 or 32 bytes turn on gossip encryption
	Label     string // keeps deployments that share a network apart
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

// ParseKey decodes BATON_CLUSTER_KEY: base64 of 16, 24 or 32 bytes.
func ParseKey(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("BATON_CLUSTER_KEY must be base64: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("BATON_CLUSTER_KEY must decode to 16, 24 or 32 bytes, got %d", len(k))
}

// Node is this process's membership.
type Node struct {
	ml  *memberlist.Memberlist
	cfg Config
	log *slog.Logger

	mu      sync.Mutex // guards meta, members
	meta    Meta
	members map[string]*Member // everyone seen, dead and left kept a while for status

	notify   chan struct{} // coalesced change signal for the OnChange goroutine
	stop     chan struct{}
	done     sync.WaitGroup
	closeOne sync.Once
}

// Start joins the cluster. A join that finds nobody is not an error: the node keeps
// trying in the background, so seeds may start in any order.
func Start(cfg Config) (*Node, error) {
	n := &Node{cfg: cfg, meta: cfg.Meta, log: cfg.Logger, members: map[string]*Member{},
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
	mc.SecretKey = cfg.Key
	mc.Label = cfg.Label
	// A restarted container comes back under its old name, often at a new address.
	// Let it reclaim the name at once instead of logging "conflicting address" until
	// the old entry is reaped.
	mc.DeadNodeReclaimTime = time.Nanosecond
	mc.Delegate = n
	mc.Events = n
	mc.Logger = log.New(&logWriter{log: n.log}, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.ml = ml
	n.done.Add(2)
	go n.notifier()
	go n.joiner()
	return n, nil
}

// Addr is this node's gossip address host:port.
func (n *Node) Addr() string { return n.ml.LocalNode().Address() }

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
			if _, err := n.ml.Join(n.cfg.Join); err != nil {
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
func (n *Node) Join() (int, error) { return n.ml.Join(n.cfg.Join) }

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

// Leave tells the cluster this node is going on purpose, then leaves.
func (n *Node) Leave(timeout time.Duration) error {
	n.mu.Lock()
	n.meta.Leaving = true
	n.mu.Unlock()
	// The meta update travels ahead of the leave, so peers record "left", not "dead".
	_ = n.ml.UpdateNode(timeout)
	return n.ml.Leave(timeout)
}

// Close shuts the node down without a leave message. Idempotent.
func (n *Node) Close() error {
	var err error
	n.closeOne.Do(func() {
		close(n.stop)
		err = n.ml.Shutdown()
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
		m = &Member{Name: node.Name, Addr: node.Addr.String()}
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
	m.Addr, m.State, m.Meta = node.Addr.String(), state, meta
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

// logWriter turns memberlist's log lines into slog records at a fitting level.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.Contains(line, "[ERR]"):
		level = slog.LevelError
	case strings.Contains(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.Contains(line, "[INFO]"):
		level = slog.LevelInfo
	}
	w.log.Log(context.Background(), level, line, "component", "memberlist")
	return len(p), nil
}
