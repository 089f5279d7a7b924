package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// cluster is the system under test: n servers on loopback (s1, s2, ...) that
// replicate the state in one raft log (BATON_BOOTSTRAP_EXPECT=n, one state
// directory that each divides by node name), and the workers, each of which reaches
// every server through a proxy of its own. A process that exits without being killed
// or told to is restarted (and check 8 reports it). A watcher follows who leads
// from the servers' /status.
type cluster struct {
	cfg        runConfig
	h          *history
	ps         *procs
	store      *fencedStore
	adminToken string
	raftKey    string // BATON_RAFT_KEY
	stateDir   string
	hc         *http.Client
	servers    []*serverSlot // fixed once started
	workers    []*workerSlot // fixed once started
	raft       *raftNet      // in front of every raft port; nil with a server alone

	mu       sync.Mutex // guards each slot's cur, inst and view, the leader, and ending
	leader   int        // index of the server that leads, by the latest answers; -1 if none
	term     uint64     // its term
	seen     int        // the last leader a leader event named (-1: none yet), and its term
	seenTerm uint64
	ending   bool           // no more restarts: the run is stopping
	crashes  map[string]int // unexpected exits in a row soon after starting, by process name
}

// serverSlot is one server: its ports stay the same across restarts, as a
// container's do, so that the others and the workers' proxies find it again.
type serverSlot struct {
	idx        int
	name       string // node name, raft id, process name
	tokenAddr  string
	httpAddr   string
	raftPort   int
	gossipPort int
	cur        *proc
	inst       int
	view       raftView // its latest /status answer
}

// raftView is a server's raft state as its /status says.
type raftView struct {
	at     time.Time // when it answered; zero if it never did
	inst   int       // the server's process instance that was asked
	state  string
	leader string // the leader it names; "" while it knows none
	term   uint64
}

type workerSlot struct {
	idx     int
	name    string
	proxies []*proxy // one per server, in the servers' order
	cur     *proc
	inst    int
	started chan struct{} // closed when cur's first session is up
}

// fixedPorts returns k loopback ports, free now for TCP and UDP, below the kernel's
// ephemeral range: a server keeps its ports across restarts, and a port from the
// ephemeral range could meanwhile be taken as the local end of some connection.
func fixedPorts(k int) ([]int, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	const base = 10000
	if lo <= base+1000 {
		return nil, fmt.Errorf("ephemeral ports start at %d: no room below them", lo)
	}
	var out []int
	seen := map[int]bool{}
	for tries := 0; len(out) < k; tries++ {
		if tries > 1000 {
			return nil, errors.New("no free port below the ephemeral range")
		}
		var b [8]byte
		_, _ = rand.Read(b[:])
		p := base + int(binary.LittleEndian.Uint64(b[:])%uint64(lo-base))
		if seen[p] || !portFree(p) {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out, nil
}

func portFree(p int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// newServers lays out n servers: four fixed ports each (token, HTTP, raft, gossip).
func newServers(n int) ([]*serverSlot, error) {
	ports, err := fixedPorts(4 * n)
	if err != nil {
		return nil, err
	}
	out := make([]*serverSlot, n)
	for i := range n {
		p := ports[4*i:]
		out[i] = &serverSlot{idx: i, name: fmt.Sprintf("s%d", i+1),
			tokenAddr: fmt.Sprintf("127.0.0.1:%d", p[0]), httpAddr: fmt.Sprintf("127.0.0.1:%d", p[1]),
			raftPort: p[2], gossipPort: p[3]}
	}
	return out, nil
}

func (c *cluster) serverEnv(s *serverSlot) []string {
	var join []string
	for _, o := range c.servers {
		if o != s {
			join = append(join, fmt.Sprintf("127.0.0.1:%d", o.gossipPort))
		}
	}
	env := []string{
		"BATON_NODE_NAME=" + s.name,
		"BATON_TOKEN_ADDR=" + s.tokenAddr,
		"BATON_HTTP_ADDR=" + s.httpAddr,
		"BATON_GOSSIP_BIND=127.0.0.1",
		"BATON_GOSSIP_PORT=" + strconv.Itoa(s.gossipPort),
		"BATON_ADVERTISE=127.0.0.1",
		"BATON_JOIN=" + strings.Join(join, ","),
		"BATON_BOOTSTRAP_EXPECT=" + strconv.Itoa(len(c.servers)),
		"BATON_RAFT_PORT=" + strconv.Itoa(s.raftPort),
		"BATON_SESSION_TTL=" + c.cfg.TTL.String(),
		"BATON_STATE_DIR=" + c.stateDir,
		"BATON_ADMIN_TOKEN=" + c.adminToken,
		"BATON_RAFT_KEY=" + c.raftKey,
		"BATON_LOG_FORMAT=json",
		"BATON_LOG_LEVEL=info",
	}
	if c.raft != nil { // the others reach its raft port through its proxy
		env = append(env, "BATON_RAFT_ADVERTISE_PORT="+strconv.Itoa(c.raft.port(s.idx)))
	}
	return env
}

// serverPids are the servers' current process ids, in their order (0: none yet).
func (c *cluster) serverPids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]int, len(c.servers))
	for i, s := range c.servers {
		if s.cur != nil {
			out[i] = s.cur.cmd.Process.Pid
		}
	}
	return out
}

// startServer starts server i's next process, on its state.
func (c *cluster) startServer(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.servers[i]
	s.inst++
	p, err := c.ps.start(s.name, s.inst, c.cfg.ServerBin, nil, c.serverEnv(s), nil)
	if err != nil {
		return err
	}
	s.cur = p
	return nil
}

func (c *cluster) server(i int) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i].cur
}

func (c *cluster) serverIndex(name string) int {
	for i, s := range c.servers {
		if s.name == name {
			return i
		}
	}
	return -1
}

// waitReady waits until server i answers /readyz (it knows a leader), at most d.
func (c *cluster) waitReady(ctx context.Context, i int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		resp, err := c.hc.Get("http://" + c.servers[i].httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s: %v", c.servers[i].name, d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling with a deadline
		}
	}
}

// waitLeader waits until the watcher sees a leader, at most d, and returns it.
func (c *cluster) waitLeader(ctx context.Context, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		if i, _ := c.currentLeader(); i >= 0 {
			return i, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no leader within %s", d)
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling with a deadline
		}
	}
}

// currentLeader is the server that leads by the latest answers, -1 if none, and its term.
func (c *cluster) currentLeader() (int, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader, c.term
}

// watchPeriod is how often the watcher asks each server for its /status, and
// viewStale how old an answer may be and still count.
const (
	watchPeriod = 200 * time.Millisecond
	viewStale   = time.Second
)

// watch asks every server for its raft state until ctx ends, keeps who leads, and
// adds a leader event whenever that changes. One goroutine per server, so that a
// frozen one delays no other.
func (c *cluster) watch(ctx context.Context) {
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 2 * watchPeriod}
	for i := range c.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(watchPeriod)
			defer t.Stop()
			for {
				if v, err := c.raftStatus(ctx, hc, i); err == nil {
					c.observe(i, v)
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	wg.Wait()
}

// raftStatus reads server i's raft state from its /status.
func (c *cluster) raftStatus(ctx context.Context, hc *http.Client, i int) (raftView, error) {
	// The instance asked, taken before asking: a process started meanwhile cannot
	// answer a request sent to the one before it.
	c.mu.Lock()
	inst := c.servers[i].inst
	c.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.servers[i].httpAddr+"/status", nil)
	if err != nil {
		return raftView{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return raftView{}, err
	}
	defer resp.Body.Close()
	var st struct {
		Raft *struct {
			State  string `json:"state"`
			Leader string `json:"leader"`
			Term   uint64 `json:"term"`
		} `json:"raft"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return raftView{}, err
	}
	if st.Raft == nil { // a server alone leads; its process instance stands for a term
		return raftView{at: time.Now(), inst: inst, state: "leader", leader: c.servers[i].name, term: uint64(inst)}, nil
	}
	return raftView{at: time.Now(), inst: inst, state: st.Raft.State, leader: st.Raft.Leader, term: st.Raft.Term}, nil
}

// observe records server i's answer and works out who leads: the leader named (by
// itself or by a follower) in the highest term among the answers of the last
// viewStale.
func (c *cluster) observe(i int, v raftView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A role event whenever the state or the leader named changes, and at a new
	// process's first answer: the checker reads from them whether each server knows
	// the leader, and a view of a process that has exited says nothing of the next.
	if old := c.servers[i].view; old.state != v.state || old.leader != v.leader || old.inst != v.inst {
		c.h.add(event.Event{Kind: event.Role, W: c.servers[i].name, Inst: v.inst, Op: v.state, Leader: v.leader, Term: v.term})
	}
	c.servers[i].view = v
	leader, term := -1, uint64(0)
	now := time.Now()
	for _, s := range c.servers {
		w := s.view
		if w.at.IsZero() || now.Sub(w.at) > viewStale || w.leader == "" {
			continue
		}
		if j := c.serverIndex(w.leader); j >= 0 && (leader < 0 || w.term > term) {
			leader, term = j, w.term
		}
	}
	c.leader, c.term = leader, term
	if leader >= 0 && (leader != c.seen || term != c.seenTerm) {
		c.seen, c.seenTerm = leader, term
		c.h.add(event.Event{Kind: event.Lead, W: c.servers[leader].name, Term: term})
	}
}

// routes is worker-facing: every server's token address and this worker's proxy to it.
func (c *cluster) routes(s *workerSlot) string {
	var parts []string
	for j, srv := range c.servers {
		parts = append(parts, srv.tokenAddr+"="+s.proxies[j].addr())
	}
	return strings.Join(parts, ",")
}

// startWorker starts worker i's next process.
func (c *cluster) startWorker(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.workers[i]
	s.inst++
	inst := s.inst
	started := make(chan struct{})
	var once sync.Once
	args := []string{"-name", s.name, "-inst", strconv.Itoa(inst), "-servers", c.routes(s),
		"-first", strconv.Itoa(i % len(c.servers)), "-store", c.store.URL(),
		"-seed", strconv.FormatUint(c.cfg.Seed*1000+uint64(i), 10),
		"-hold-min", c.cfg.HoldMin.String(), "-hold-max", c.cfg.HoldMax.String(),
		"-think-max", c.cfg.ThinkMax.String(), "-requeue", strconv.FormatFloat(c.cfg.Requeue, 'f', -1, 64),
		"-acquire-timeout", c.cfg.AcquireTimeout.String()}
	if c.cfg.Sabotage {
		args = append(args, "-sabotage")
	}
	read := func(r io.Reader) {
		c.h.readEvents(r, s.name, inst, func(e event.Event) {
			if e.Kind == event.Start {
				once.Do(func() { close(started) })
			}
		})
	}
	p, err := c.ps.start(s.name, inst, c.cfg.WorkerBin, args, nil, read)
	if err != nil {
		return err
	}
	s.cur, s.started = p, started
	return nil
}

func (c *cluster) worker(i int) (*proc, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.workers[i].cur, c.workers[i].started
}

func (c *cluster) workerIndex(name string) int {
	for i, s := range c.workers {
		if s.name == name {
			return i
		}
	}
	return -1
}

// onExit restarts a process that ended on its own while the run goes on, after
// 100 ms, doubled (up to 5 s) each time one of the same name dies within 5 s of
// its start: a process that cannot start (a crash loop) is not restarted hundreds
// of times.
func (c *cluster) onExit(p *proc, expected bool) {
	c.mu.Lock()
	restart := !expected && !c.ending
	if restart {
		if time.Since(p.born) < 5*time.Second {
			c.crashes[p.name]++
		} else {
			c.crashes[p.name] = 0
		}
	}
	delay := min(100*time.Millisecond<<min(c.crashes[p.name], 6), 5*time.Second)
	c.mu.Unlock()
	if !restart {
		return
	}
	go func() {
		time.Sleep(delay) // do not spin on a process that dies at once
		if i := c.serverIndex(p.name); i >= 0 {
			_ = c.startServer(i)
		} else if i := c.workerIndex(p.name); i >= 0 {
			_ = c.startWorker(i)
		}
	}()
}

// closeConnections is POST /admin/close-connections on server i.
func (c *cluster) closeConnections(i int) error {
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.servers[i].httpAddr+"/admin/close-connections", nil)
	req.Header.Set("Authorization", "Bearer "+c.adminToken)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("close-connections: %s", resp.Status)
	}
	return nil
}

// tokenStatus is the part of the server's /status the checker reads.
type tokenStatus struct {
	Name     string `json:"name"`
	Fence    uint64 `json:"fence"`
	Holder   string `json:"holder"`
	Counter  uint64 `json:"counter"`
	Grants   uint64 `json:"grants"`
	Releases uint64 `json:"releases"`
}

// status is the token's state on server i (the leader's is the truth; a follower's
// is what it has applied).
func (c *cluster) status(i int, token string) (tokenStatus, error) {
	resp, err := c.hc.Get("http://" + c.servers[i].httpAddr + "/status")
	if err != nil {
		return tokenStatus{}, err
	}
	defer resp.Body.Close()
	var st struct {
		Tokens []tokenStatus `json:"tokens"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return tokenStatus{}, err
	}
	for _, t := range st.Tokens {
		if t.Name == token {
			return t, nil
		}
	}
	return tokenStatus{}, fmt.Errorf("token %q not in %s's /status", token, c.servers[i].name)
}
