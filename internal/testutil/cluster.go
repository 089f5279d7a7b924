package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/server"
)

// Cluster is a replicated baton deployment in one process: servers that keep the
// state in one raft log over real TCP on loopback, found through real memberlist.
// Each keeps its ports and state directory across Stop and Start, as a container
// restarted with its volume does.
type Cluster struct {
	t    testing.TB
	mu   sync.Mutex // guards srvs, cut, conns
	srvs []*Server  // nil while stopped
	cfgs []server.Config
	// The raft network: every raft connection is dialled by one of its two servers
	// (server.Config.RaftDial), so the cluster sees them all and can cut a server off.
	cut      map[string]bool
	conns    map[net.Conn][2]string // from, to
	misroute map[string]int         // server name -> the server its connections reach instead
}

// StartCluster starts n servers (s1, s2, ...) expecting each other, with
// ServerConfig changed by mod, stopped at cleanup.
func StartCluster(t testing.TB, n int, mod func(*server.Config)) *Cluster {
	t.Helper()
	cl := &Cluster{t: t, srvs: make([]*Server, n), cfgs: make([]server.Config, n), cut: map[string]bool{}, conns: map[net.Conn][2]string{},
		misroute: map[string]int{}}
	gossip := make([]string, n)
	for i := range n {
		gossip[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	}
	for i := range n {
		cfg := ServerConfig()
		cfg.NodeName = fmt.Sprintf("s%d", i+1)
		cfg.StateDir = t.TempDir()
		cfg.BootstrapExpect = n
		// Sessions outlive an election on a busy machine: detection takes up to twice
		// raft's heartbeat timeout.
		cfg.SessionTTL = 3 * time.Second
		_, p, _ := net.SplitHostPort(gossip[i])
		cfg.GossipPort, _ = strconv.Atoi(p)
		cfg.RaftPort = FreePort(t)
		cfg.TokenAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
		cfg.RaftDial = cl.dialer(cfg.NodeName)
		for j, g := range gossip {
			if j != i {
				cfg.Join = append(cfg.Join, g)
			}
		}
		if mod != nil {
			mod(&cfg)
		}
		cl.cfgs[i] = cfg
	}
	for i := range n {
		cl.Start(i)
	}
	t.Cleanup(func() {
		for i := range n {
			cl.Stop(i)
		}
	})
	return cl
}

// FreePort returns a TCP port free on loopback a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start starts server i (again) from its state directory. A port it had may have
// been taken meanwhile (an outgoing connection's local port comes from the same
// range): it then starts on new ones, as a container recreated at another address
// does.
func (cl *Cluster) Start(i int) *Server {
	cl.t.Helper()
	for attempt := 0; ; attempt++ {
		cl.mu.Lock()
		cfg := cl.cfgs[i]
		cl.mu.Unlock()
		reg := prometheus.NewRegistry()
		s, err := server.New(cfg, server.Options{Logger: Logger(cl.t).With("node", cfg.NodeName), Registry: reg})
		if err != nil {
			cl.t.Fatalf("server.New %s: %v", cfg.NodeName, err)
		}
		if err := s.Open(); err != nil {
			// memberlist reports a port taken in text only (its errors are not wrapped).
			inUse := errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
			if inUse && attempt < 3 {
				cl.t.Logf("%s: %v; starting on other ports", cfg.NodeName, err)
				cl.mu.Lock()
				cl.cfgs[i].TokenAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(cl.t)))
				cl.cfgs[i].RaftPort, cl.cfgs[i].GossipPort = FreePort(cl.t), FreePort(cl.t)
				cl.mu.Unlock()
				continue
			}
			cl.t.Fatalf("server.Open %s: %v", cfg.NodeName, err)
		}
		srv := &Server{Server: s, Reg: reg, Cfg: cfg}
		cl.mu.Lock()
		cl.srvs[i] = srv
		cl.mu.Unlock()
		return srv
	}
}

// Stop closes server i (its clients see their connections closed); a no-op when
// it is stopped.
func (cl *Cluster) Stop(i int) {
	if s := cl.take(i); s != nil {
		s.Close()
	}
}

// Reconfigure changes server i's configuration for its next Start, as a new
// environment does for a restarted container.
func (cl *Cluster) Reconfigure(i int, mod func(*server.Config)) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	mod(&cl.cfgs[i])
}

// Kill stops server i as a killed process stops (server.Kill): no notices, no
// leadership handed over.
func (cl *Cluster) Kill(i int) {
	if s := cl.take(i); s != nil {
		s.Kill()
	}
}

// take marks server i stopped and returns it, nil if it was.
func (cl *Cluster) take(i int) *Server {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	s := cl.srvs[i]
	cl.srvs[i] = nil
	return s
}

// Server returns server i, nil while it is stopped.
func (cl *Cluster) Server(i int) *Server {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.srvs[i]
}

// Leader returns the index of the server that serves clients now, -1 if none.
func (cl *Cluster) Leader() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for i, s := range cl.srvs {
		if s != nil && s.Leading() {
			return i
		}
	}
	return -1
}

// AwaitLeader waits up to d for a server to serve as leader and returns its index.
func (cl *Cluster) AwaitLeader(t testing.TB, d time.Duration) int {
	t.Helper()
	leader := -1
	Eventually(t, d, "a server of the cluster to lead and serve clients", func() bool {
		leader = cl.Leader()
		return leader >= 0
	})
	return leader
}

// Dial connects a client named node to the cluster: it asks for the leader at
// every connect, as the worker asks the membership, and follows a follower's
// not_leader to the cluster's own servers only.
func (cl *Cluster) Dial(t testing.TB, node string, mod func(*baton.Config)) *baton.Client {
	t.Helper()
	cfg := baton.Config{Node: node, Logger: Logger(t).With("node", node), Resolve: cl.resolve, Follow: cl.isServer}
	if k := cl.cfgs[0].ClusterKey; k != "" { // the clients of a keyed cluster prove its key
		keys, err := cluster.ParseKeys("BATON_CLUSTER_KEY", k)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ClusterKey = keys[0]
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := baton.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", node, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (cl *Cluster) resolve(context.Context) (string, error) {
	if i := cl.Leader(); i >= 0 {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return cl.cfgs[i].TokenAddr, nil
	}
	return "", errors.New("no server leads")
}

func (cl *Cluster) isServer(addr string) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, c := range cl.cfgs {
		if c.TokenAddr == addr {
			return true
		}
	}
	return false
}

// dialer dials raft connections for server from, unless either end is cut off.
func (cl *Cluster) dialer(from string) func(ctx context.Context, to, addr string) (net.Conn, error) {
	return func(ctx context.Context, to, addr string) (net.Conn, error) {
		cl.mu.Lock()
		blocked := cl.cut[from] || cl.cut[to]
		if via, ok := cl.misroute[to]; ok {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cl.cfgs[via].RaftPort))
		}
		cl.mu.Unlock()
		if blocked {
			return nil, fmt.Errorf("test network: %s or %s is cut off", from, to)
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		cl.mu.Lock()
		defer cl.mu.Unlock()
		if cl.cut[from] || cl.cut[to] {
			c.Close()
			return nil, fmt.Errorf("test network: %s or %s is cut off", from, to)
		}
		cl.conns[c] = [2]string{from, to}
		return c, nil
	}
}

// Cut cuts server i off from the other servers' raft traffic, as a network
// partition does: its connections close and no new one is made until Heal. Its
// clients and the membership still reach it.
func (cl *Cluster) Cut(i int) {
	name := cl.cfgs[i].NodeName
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.cut[name] = true
	for c, ends := range cl.conns {
		if ends[0] == name || ends[1] == name {
			c.Close()
			delete(cl.conns, c)
		}
	}
}

// Heal ends Cut.
func (cl *Cluster) Heal(i int) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	delete(cl.cut, cl.cfgs[i].NodeName)
}

// Misroute makes the raft connections meant for server i reach server via
// instead, as a membership that still holds i's old address does once via has
// taken it (containers recreated); its open connections close, so that raft dials
// again. Misroute(i, -1) ends it.
func (cl *Cluster) Misroute(i, via int) {
	name := cl.cfgs[i].NodeName
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if via < 0 {
		delete(cl.misroute, name)
		return
	}
	cl.misroute[name] = via
	for c, ends := range cl.conns {
		if ends[1] == name {
			c.Close()
			delete(cl.conns, c)
		}
	}
}
