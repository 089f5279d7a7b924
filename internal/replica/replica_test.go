package replica_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/replica"
)

// Bounds for events the tests wait on. Generous: the package's tests run with -race
// on a shared two-core machine, and a bound only decides how long a failure takes.
const (
	electionBound = 10 * time.Second // a leader is elected, or re-elected after a loss
	catchUpBound  = 10 * time.Second // a follower's state machine reaches the leader's
)

// listSM is the toy state machine: an append-only list of distinct commands. The
// answer to a command is its position in the list (from 1); a command already in
// the list is not appended again and gets its first position, so a retry after an
// unknown outcome is safe, as baton's request ids will make it. Deterministic by
// construction. It records the last index it saw and how often it was restored.
type listSM struct {
	mu       sync.Mutex // guards everything below
	items    []string
	pos      map[string]int // command -> position in items, from 1
	last     uint64         // index of the last entry applied
	restores int
	changed  chan struct{} // closed and replaced at every change
	t        testing.TB
}

func newListSM(t testing.TB) *listSM {
	return &listSM{pos: map[string]int{}, changed: make(chan struct{}), t: t}
}

func (s *listSM) Apply(entries []replica.Entry) []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]any, len(entries))
	for i, e := range entries {
		if e.Index <= s.last {
			s.t.Errorf("entry index %d after %d: indexes must increase", e.Index, s.last)
		}
		s.last = e.Index
		cmd := string(e.Cmd)
		if p, dup := s.pos[cmd]; dup {
			out[i] = p
			continue
		}
		s.items = append(s.items, cmd)
		s.pos[cmd] = len(s.items)
		out[i] = len(s.items)
	}
	s.signal()
	return out
}

type listSnapshot struct {
	Items []string
	Last  uint64
}

func (s *listSM) Snapshot() (io.WriterTo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := json.Marshal(listSnapshot{Items: s.items, Last: s.last})
	return bytes.NewReader(b), err
}

func (s *listSM) Restore(r io.Reader) error {
	var snap listSnapshot
	if err := json.NewDecoder(r).Decode(&snap); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items, s.last = snap.Items, snap.Last
	s.pos = make(map[string]int, len(s.items))
	for i, cmd := range s.items {
		s.pos[cmd] = i + 1
	}
	s.restores++
	s.signal()
	return nil
}

// signal wakes waiters; with s.mu held.
func (s *listSM) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *listSM) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.items)
}

// waitLen waits until the list has at least n items.
func (s *listSM) waitLen(t testing.TB, n int, within time.Duration, who string) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		s.mu.Lock()
		have, ch := len(s.items), s.changed
		s.mu.Unlock()
		if have >= n {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("%s: state machine has %d entries after %s, want %d", who, have, within, n)
		}
	}
}

// logWriter sends slog's lines to t.Log until the test ends; raft's goroutines may
// log a line after that, which t.Log would not take.
type logWriter struct {
	mu   sync.Mutex // guards done and the calls to t.Log
	t    testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &logWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testConfig is a node on loopback with short timeouts.
func testConfig(t testing.TB, dir string) replica.Config {
	return replica.Config{
		Dir:      dir,
		BindAddr: "127.0.0.1:0",
		// Short, but not so short that a leader on a loaded two-core machine under
		// -race misses its lease (seen at 150 ms) and the tests chase elections.
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 400 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		Logger:             testLogger(t),
	}
}

// cluster is n nodes in this process over real TCP transports on 127.0.0.1.
type cluster struct {
	t       testing.TB
	cfgs    []replica.Config
	nodes   []*replica.Node // nil when closed
	sms     []*listSM
	leaders []atomic.Int64 // LeaderChange hook calls, per node
	batch   []atomic.Int64 // largest batch the Applied hook saw, per node
	net     *netsim
	off     []bool // cut off by the test: left out of waitLeader and checkSame
}

// newCluster opens n nodes with no state and bootstraps them as one cluster the way
// discovery would: each learns the others' addresses, then all call Bootstrap. mods
// change every node's configuration.
func newCluster(t testing.TB, n int, durable bool, mods ...func(*replica.Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, cfgs: make([]replica.Config, n), nodes: make([]*replica.Node, n), sms: make([]*listSM, n),
		leaders: make([]atomic.Int64, n), batch: make([]atomic.Int64, n), net: newNetsim(), off: make([]bool, n)}
	t.Cleanup(c.closeAll)
	for i := range n {
		dir := ""
		if durable {
			dir = t.TempDir()
		}
		c.cfgs[i] = testConfig(t, dir)
		c.cfgs[i].ID = fmt.Sprintf("n%d", i)
		c.cfgs[i].Dial = c.net.dialer(c.cfgs[i].ID)
		for _, mod := range mods {
			mod(&c.cfgs[i])
		}
		c.open(i)
		c.net.name(c.nodes[i].Addr(), c.nodes[i].ID())
		// Restarts come back on the same address, as a server with a fixed port.
		c.cfgs[i].BindAddr = c.nodes[i].Addr()
	}
	var servers []replica.Server
	for _, nd := range c.nodes {
		servers = append(servers, replica.Server{ID: nd.ID(), Addr: nd.Addr(), Voter: true})
	}
	for _, nd := range c.nodes {
		if err := nd.Bootstrap(servers); err != nil {
			t.Fatalf("bootstrap %s: %v", nd.ID(), err)
		}
	}
	return c
}

// open (re)opens node i from its config, with a fresh state machine.
func (c *cluster) open(i int) {
	c.t.Helper()
	cfg := c.cfgs[i]
	cfg.Hooks.LeaderChange = func(replica.Leadership) { c.leaders[i].Add(1) }
	cfg.Hooks.Applied = func(n int) {
		for {
			old := c.batch[i].Load()
			if int64(n) <= old || c.batch[i].CompareAndSwap(old, int64(n)) {
				return
			}
		}
	}
	c.sms[i] = newListSM(c.t)
	nd, err := replica.Open(cfg, c.sms[i])
	if err != nil {
		c.t.Fatalf("open node %d: %v", i, err)
	}
	c.nodes[i] = nd
}

func (c *cluster) close(i int) {
	c.t.Helper()
	if err := c.nodes[i].Close(); err != nil {
		c.t.Errorf("close node %d: %v", i, err)
	}
	c.nodes[i] = nil
}

func (c *cluster) closeAll() {
	for i, nd := range c.nodes {
		if nd != nil {
			c.close(i)
		}
	}
}

// waitLeader waits until every open node names the same leader and that node says
// it leads, and returns its index.
func (c *cluster) waitLeader(within time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var (
			cases    []reflect.SelectCase
			leaderID string
			agreed   = true
			views    []string
		)
		for i, nd := range c.nodes {
			if nd == nil || c.off[i] {
				continue
			}
			l, ch := nd.Leadership()
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
			views = append(views, fmt.Sprintf("%s:%+v", nd.ID(), l))
			switch {
			case l.LeaderID == "":
				agreed = false
			case leaderID == "":
				leaderID = l.LeaderID
			case l.LeaderID != leaderID:
				agreed = false
			}
		}
		leader := slices.IndexFunc(c.nodes, func(nd *replica.Node) bool { return nd != nil && nd.ID() == leaderID })
		if leader >= 0 && c.off[leader] {
			agreed = false
		}
		if agreed && leader >= 0 && c.nodes[leader].IsLeader() {
			return leader
		}
		left := time.Until(deadline)
		if left <= 0 {
			c.t.Fatalf("no leader that every node agrees on within %s; views: %s", within, strings.Join(views, " "))
		}
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(time.After(min(left, 100*time.Millisecond)))})
		reflect.Select(cases) // a leadership change, or a re-check of IsLeader
	}
}

// apply applies cmd on the leader and returns its position, following the
// leadership when it moves and retrying an unknown outcome (listSM answers a retry
// with the first position). On the test goroutine only.
func (c *cluster) apply(cmd string) int {
	c.t.Helper()
	i := c.waitLeader(electionBound)
	for range 10 {
		pos, err := c.tryApply(i, cmd)
		if err == nil {
			return pos
		}
		if !errors.Is(err, replica.ErrNotLeader) && !errors.Is(err, replica.ErrUnknownOutcome) {
			c.t.Fatalf("apply %q on %s: %v", cmd, c.nodes[i].ID(), err)
		}
		c.t.Logf("apply %q on %s: %v; retrying", cmd, c.nodes[i].ID(), err)
		i = c.waitLeader(electionBound)
	}
	c.t.Fatalf("apply %q: leadership kept moving", cmd)
	return 0
}

// tryApply applies cmd on node i once.
func (c *cluster) tryApply(i int, cmd string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.nodes[i].Apply(ctx, []byte(cmd))
	if err != nil {
		return 0, err
	}
	return res.(int), nil
}

// checkSame waits until every open node's list has want's length and then checks
// it equals want.
func (c *cluster) checkSame(want []string) {
	c.t.Helper()
	for i, nd := range c.nodes {
		if nd == nil || c.off[i] {
			continue
		}
		c.sms[i].waitLen(c.t, len(want), catchUpBound, nd.ID())
		if got := c.sms[i].list(); !slices.Equal(got, want) {
			c.t.Fatalf("%s: state machine differs from the expected log:\n got  %q\n want %q", nd.ID(), got, want)
		}
	}
}

// cut cuts node i off from the others; heal lets it back.
func (c *cluster) cut(i int) {
	c.off[i] = true
	c.net.cut(c.nodes[i].ID(), true)
}

func (c *cluster) heal(i int) {
	c.net.cut(c.nodes[i].ID(), false)
	c.off[i] = false
}

// netsim carries a cluster's raft connections, every one dialed through
// dialer(from), and can cut a node off: its connections are closed and dials to or
// from it refused until it is healed, as when a host's link goes down and its peers
// get resets. (A silent partition, bytes held without a reset, is the other kind;
// raft's leader lease and heartbeat timeouts do not depend on which.)
type netsim struct {
	mu    sync.Mutex        // guards the maps
	ids   map[string]string // address -> node id
	off   map[string]bool   // node id -> cut off
	conns map[*simConn][2]string
}

func newNetsim() *netsim {
	return &netsim{ids: map[string]string{}, off: map[string]bool{}, conns: map[*simConn][2]string{}}
}

func (n *netsim) name(addr, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ids[addr] = id
}

func (n *netsim) dialer(from string) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		n.mu.Lock()
		to := n.ids[addr]
		blocked := n.off[from] || n.off[to]
		n.mu.Unlock()
		if blocked {
			return nil, fmt.Errorf("netsim: %s to %s is cut", from, to)
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.off[from] || n.off[to] { // cut while dialing
			c.Close()
			return nil, fmt.Errorf("netsim: %s to %s is cut", from, to)
		}
		sc := &simConn{Conn: c, n: n}
		n.conns[sc] = [2]string{from, to}
		return sc, nil
	}
}

func (n *netsim) cut(id string, off bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.off[id] = off
	if !off {
		return
	}
	for c, ends := range n.conns {
		if ends[0] == id || ends[1] == id {
			c.Conn.Close()
			delete(n.conns, c)
		}
	}
}

type simConn struct {
	net.Conn
	n *netsim
}

func (c *simConn) Close() error {
	c.n.mu.Lock()
	delete(c.n.conns, c)
	c.n.mu.Unlock()
	return c.Conn.Close()
}

func cmds(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func TestClusterElectsOneLeader(t *testing.T) {
	c := newCluster(t, 3, false)
	li := c.waitLeader(electionBound)
	leader := c.nodes[li]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := leader.VerifyLeader(ctx); err != nil {
		t.Fatalf("VerifyLeader on the leader %s: %v", leader.ID(), err)
	}
	for i, nd := range c.nodes {
		if i != li && nd.IsLeader() {
			t.Errorf("%s and %s both say they lead", leader.ID(), nd.ID())
		}
		st, err := nd.Status(ctx)
		if err != nil {
			t.Fatalf("status of %s: %v", nd.ID(), err)
		}
		if len(st.Servers) != 3 || st.Leader != leader.ID() || st.Term == 0 {
			t.Errorf("status of %s = %+v, want 3 servers, leader %s, a term", nd.ID(), st, leader.ID())
		}
		if want := map[bool]string{true: "leader", false: "follower"}[i == li]; st.State != want {
			t.Errorf("status of %s: state %q, want %q", nd.ID(), st.State, want)
		}
	}
	// The hook runs on the node's watcher goroutine, a moment after raft says it
	// leads (the race detector's slower scheduling once made that moment late).
	for deadline := time.Now().Add(5 * time.Second); c.leaders[li].Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the leader's LeaderChange hook was not called within 5 s")
		}
		time.Sleep(5 * time.Millisecond) // polling the hook's count, with a deadline
	}
}

func TestAppliesReplicatedInOrder(t *testing.T) {
	c := newCluster(t, 3, false)
	li := c.waitLeader(electionBound)

	// Eight concurrent proposers, so that commands share batches; every answer is
	// a distinct position in the log. A proposer whose command met a leadership
	// change retries it on the leader (listSM makes the retry safe); finding the
	// leader again is left to the test goroutine, so a proposer only gives up.
	const workers, each = 8, 25
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[int]string{}
		retry   []string
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				cmd := fmt.Sprintf("w%d-%d", w, i)
				pos, err := c.tryApply(li, cmd)
				mu.Lock()
				if err != nil {
					t.Logf("apply %s: %v; retried later", cmd, err)
					retry = append(retry, cmd)
				} else if prev, dup := answers[pos]; dup {
					t.Errorf("%s and %s both answered position %d", prev, cmd, pos)
				} else {
					answers[pos] = cmd
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, cmd := range retry {
		pos := c.apply(cmd)
		if prev, dup := answers[pos]; dup {
			t.Errorf("%s and %s both answered position %d", prev, cmd, pos)
		}
		answers[pos] = cmd
	}
	if t.Failed() {
		return
	}
	want := make([]string, workers*each)
	for pos, cmd := range answers {
		want[pos-1] = cmd
	}
	c.checkSame(want) // all three, in the order the answers gave
	// Eight proposers at once share log writes: the state machine saw batches.
	if b := c.batch[li].Load(); b < 2 {
		t.Errorf("largest batch applied on the leader: %d commands, want several from 8 concurrent proposers", b)
	}
	t.Logf("largest batch applied on the leader: %d commands", c.batch[li].Load())
}

func TestApplyOnFollowerNamesLeader(t *testing.T) {
	c := newCluster(t, 3, false)
	li := c.waitLeader(electionBound)
	leader := c.nodes[li]
	follower := c.nodes[(li+1)%3]

	_, err := follower.Apply(context.Background(), []byte("x"))
	if !errors.Is(err, replica.ErrNotLeader) {
		t.Fatalf("apply on follower %s: err = %v, want ErrNotLeader", follower.ID(), err)
	}
	var nl *replica.NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != leader.ID() || nl.LeaderAddr != leader.Addr() {
		t.Fatalf("apply on follower: err = %v (%+v), want one naming %s at %s", err, nl, leader.ID(), leader.Addr())
	}
	if !strings.Contains(err.Error(), leader.Addr()) {
		t.Errorf("error %q does not name the leader's address %s", err, leader.Addr())
	}
	if errors.Is(err, replica.ErrUnknownOutcome) {
		t.Errorf("a refused command reported as unknown outcome: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := follower.Barrier(ctx); !errors.Is(err, replica.ErrNotLeader) {
		t.Errorf("Barrier on follower: err = %v, want ErrNotLeader", err)
	}
	if len(c.sms[li].list()) != 0 {
		t.Errorf("refused command was applied: %q", c.sms[li].list())
	}
}

func TestLeaderClosedNewLeaderTakesOver(t *testing.T) {
	c := newCluster(t, 3, false)
	want := cmds("before", 10)
	for _, cmd := range want {
		c.apply(cmd)
	}
	old := c.waitLeader(electionBound)
	oldID := c.nodes[old].ID()
	changes := make([]int64, 3)
	for i := range changes {
		changes[i] = c.leaders[i].Load()
	}

	start := time.Now()
	c.close(old)
	nl := c.waitLeader(electionBound)
	t.Logf("new leader %s %s after %s was closed", c.nodes[nl].ID(), time.Since(start).Round(time.Millisecond), oldID)
	if c.nodes[nl].ID() == oldID {
		t.Fatalf("closed node %s still leads", oldID)
	}
	for i, nd := range c.nodes {
		if nd != nil && c.leaders[i].Load() == changes[i] {
			t.Errorf("%s's LeaderChange hook not called on failover", nd.ID())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.nodes[nl].Barrier(ctx); err != nil {
		t.Fatalf("Barrier on the new leader: %v", err)
	}
	after := cmds("after", 10)
	for _, cmd := range after {
		c.apply(cmd)
	}
	c.checkSame(append(want, after...))
}

func TestTransferLeadership(t *testing.T) {
	c := newCluster(t, 3, false)
	c.apply("a")
	old := c.waitLeader(electionBound)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.nodes[old].TransferLeadership(ctx); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	nl := c.waitLeader(electionBound)
	if nl == old {
		t.Fatalf("%s still leads after handing over", c.nodes[old].ID())
	}
	c.apply("b")
	c.checkSame([]string{"a", "b"})
}

func TestFollowerRestartsAndCatchesUp(t *testing.T) {
	c := newCluster(t, 3, true)
	want := cmds("first", 20)
	for _, cmd := range want {
		c.apply(cmd)
	}
	li := c.waitLeader(electionBound)
	f := (li + 1) % 3
	id := c.nodes[f].ID()
	c.checkSame(want)
	c.close(f)

	more := cmds("while-down", 20)
	for _, cmd := range more {
		c.apply(cmd)
	}
	want = append(want, more...)

	c.cfgs[f].ID = "" // the id comes back from the node's directory
	c.open(f)
	if got := c.nodes[f].ID(); got != id {
		t.Fatalf("restarted follower has id %q, want %q from its directory", got, id)
	}
	c.checkSame(want)
}

func TestClusterRestartsFromDirs(t *testing.T) {
	c := newCluster(t, 3, true)
	want := cmds("snap", 30)
	for _, cmd := range want {
		c.apply(cmd)
	}
	c.checkSame(want)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, nd := range c.nodes {
		if err := nd.Snapshot(ctx); err != nil {
			t.Fatalf("snapshot on %s: %v", nd.ID(), err)
		}
	}
	more := cmds("log", 20) // after the snapshot: only in the log
	for _, cmd := range more {
		c.apply(cmd)
	}
	want = append(want, more...)
	c.checkSame(want)

	for i := range c.nodes {
		c.close(i)
	}
	for i := range c.nodes {
		c.open(i)
	}
	c.checkSame(want)
	for i, nd := range c.nodes {
		if c.sms[i].restores != 1 {
			t.Errorf("%s: restored from a snapshot %d times, want 1", nd.ID(), c.sms[i].restores)
		}
	}
	if got := c.apply("next"); got != len(want)+1 {
		t.Fatalf("apply after the restart answered position %d, want %d", got, len(want)+1)
	}
}

func TestSingleNodeDurable(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Bootstrap = true
	var commits atomic.Int64
	cfg.Hooks.Commit = func(d time.Duration) {
		if d <= 0 {
			t.Errorf("commit latency %s", d)
		}
		commits.Add(1)
	}

	sm := newListSM(t)
	nd, err := replica.Open(cfg, sm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if l, err := nd.WaitLeader(ctx); err != nil || !l.IsLeader {
		t.Fatalf("single node: WaitLeader = %+v, %v; want itself as leader", l, err)
	}
	want := cmds("d", 10)
	for i, cmd := range want {
		res, err := nd.Apply(ctx, []byte(cmd))
		if err != nil {
			t.Fatalf("apply %s: %v", cmd, err)
		}
		if res != i+1 {
			t.Fatalf("apply %s answered %v, want %d", cmd, res, i+1)
		}
	}
	if commits.Load() != 10 {
		t.Errorf("Commit hook called %d times, want 10", commits.Load())
	}
	id, addr := nd.ID(), nd.Addr()
	if err := nd.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := nd.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := nd.Apply(ctx, []byte("late")); !errors.Is(err, replica.ErrClosed) {
		t.Fatalf("apply after close: err = %v, want ErrClosed", err)
	}

	cfg.BindAddr = addr
	sm = newListSM(t)
	nd, err = replica.Open(cfg, sm)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if nd.ID() != id {
		t.Errorf("reopened with id %q, want %q", nd.ID(), id)
	}
	if l, err := nd.WaitLeader(ctx); err != nil || !l.IsLeader {
		t.Fatalf("reopened single node: WaitLeader = %+v, %v; want itself as leader", l, err)
	}
	if err := nd.Barrier(ctx); err != nil { // waits for the replay of the log
		t.Fatalf("barrier after reopen: %v", err)
	}
	if got := sm.list(); !slices.Equal(got, want) {
		t.Fatalf("after reopen: %q, want %q", got, want)
	}
	if res, err := nd.Apply(ctx, []byte("d-10")); err != nil || res != 11 {
		t.Fatalf("apply after reopen = %v, %v; want 11", res, err)
	}
}

func TestSingleNodeInMemory(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Bootstrap = true
	nd, err := replica.Open(cfg, newListSM(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nd.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := nd.Apply(ctx, []byte("x")); err != nil || res != 1 {
		t.Fatalf("apply = %v, %v; want 1", res, err)
	}
	if err := nd.Bootstrap(nil); !errors.Is(err, replica.ErrHasState) {
		t.Errorf("second bootstrap: err = %v, want ErrHasState", err)
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := nd.Apply(done, []byte("y")); !errors.Is(err, context.Canceled) || errors.Is(err, replica.ErrUnknownOutcome) {
		t.Errorf("apply with an ended context: err = %v, want Canceled and not started", err)
	}
}

func TestServerIDKeptInDir(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.ID = "alpha"
	nd, err := replica.Open(cfg, newListSM(t))
	if err != nil {
		t.Fatal(err)
	}
	nd.Close()

	cfg.ID = ""
	nd, err = replica.Open(cfg, newListSM(t))
	if err != nil {
		t.Fatal(err)
	}
	if nd.ID() != "alpha" {
		t.Errorf("id from the directory = %q, want alpha", nd.ID())
	}
	nd.Close()

	cfg.ID = "beta"
	if nd, err := replica.Open(cfg, newListSM(t)); err == nil || !strings.Contains(err.Error(), `"alpha"`) {
		if nd != nil {
			nd.Close()
		}
		t.Fatalf("open with another id than the directory's: err = %v, want one naming alpha", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  replica.Config
		want string
	}{
		{"lease above heartbeat", replica.Config{HeartbeatTimeout: time.Second, LeaderLeaseTimeout: 2 * time.Second}, "LeaderLeaseTimeout"},
		{"batch too large", replica.Config{MaxAppendEntries: 5000}, "MaxAppendEntries"},
		{"peer without address", replica.Config{Peers: []replica.Server{{ID: "x"}}}, "peer"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error about %s", tc.name, err, tc.want)
		}
	}
	if err := replica.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	cfg := replica.Config{BindAddr: "0.0.0.0:0"}
	if nd, err := replica.Open(cfg, newListSM(t)); err == nil || !strings.Contains(err.Error(), "Advertise") {
		if nd != nil {
			nd.Close()
		}
		t.Errorf("open on 0.0.0.0 without Advertise: err = %v, want one asking for Advertise", err)
	}
}

func TestMembershipChanges(t *testing.T) {
	c := newCluster(t, 3, false)
	want := cmds("m", 5)
	for _, cmd := range want {
		c.apply(cmd)
	}
	li := c.waitLeader(electionBound)
	leader := c.nodes[li]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A new server, not bootstrapped, advertising a host name rather than an IP:
	// the leader resolves it when it dials.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := testConfig(t, "")
	cfg.ID = "n3"
	cfg.BindAddr = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Advertise = fmt.Sprintf("localhost:%d", port)
	sm := newListSM(t)
	nd, err := replica.Open(cfg, sm)
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()

	follower := c.nodes[(li+1)%3]
	if err := follower.AddVoter(ctx, nd.ID(), nd.Addr()); !errors.Is(err, replica.ErrNotLeader) {
		t.Errorf("AddVoter on a follower: err = %v, want ErrNotLeader", err)
	}
	if err := leader.AddVoter(ctx, nd.ID(), nd.Addr()); err != nil {
		t.Fatalf("AddVoter %s at %s: %v", nd.ID(), nd.Addr(), err)
	}
	sm.waitLen(t, len(want), catchUpBound, "added server")
	if got := sm.list(); !slices.Equal(got, want) {
		t.Fatalf("added server: %q, want %q", got, want)
	}
	servers, err := leader.Servers(ctx)
	if err != nil || len(servers) != 4 {
		t.Fatalf("servers after AddVoter = %+v, %v; want 4", servers, err)
	}
	if l, err := nd.WaitLeader(ctx); err != nil || l.LeaderID != leader.ID() {
		t.Errorf("added server's leader = %+v, %v; want %s", l, err, leader.ID())
	}

	if err := leader.RemoveServer(ctx, nd.ID()); err != nil {
		t.Fatalf("RemoveServer %s: %v", nd.ID(), err)
	}
	servers, err = leader.Servers(ctx)
	if err != nil || len(servers) != 3 || slices.ContainsFunc(servers, func(s replica.Server) bool { return s.ID == nd.ID() }) {
		t.Fatalf("servers after RemoveServer = %+v, %v; want the three first", servers, err)
	}
	c.apply("after-remove")
	c.checkSame(append(want, "after-remove"))
}

func TestLeaderCutOff(t *testing.T) {
	c := newCluster(t, 3, false)
	want := cmds("before", 5)
	for _, cmd := range want {
		c.apply(cmd)
	}
	old := c.waitLeader(electionBound)
	oldNode := c.nodes[old]
	c.cut(old)

	// A leader that cannot reach a quorum never reports a command committed.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := oldNode.Apply(ctx, []byte("lost"))
	if err == nil {
		t.Fatalf("%s, cut off from its peers, answered an Apply as committed", oldNode.ID())
	}
	if errors.Is(err, replica.ErrUnknownOutcome) == errors.Is(err, replica.ErrNotLeader) {
		t.Fatalf("apply on the cut-off leader: err = %v, want one of ErrUnknownOutcome and ErrNotLeader", err)
	}
	t.Logf("apply on the cut-off leader: %v", err)

	// It steps down on its own (leader lease), and cannot prove leadership.
	deadline := time.After(electionBound)
	for {
		l, changed := oldNode.Leadership()
		if !l.IsLeader && !oldNode.IsLeader() {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s still leads %s after being cut off", oldNode.ID(), electionBound)
		}
	}
	if err := oldNode.VerifyLeader(ctx); !errors.Is(err, replica.ErrNotLeader) {
		t.Errorf("VerifyLeader on the cut-off node: err = %v, want ErrNotLeader", err)
	}

	// The other two elect a leader and go on.
	nl := c.waitLeader(electionBound)
	if nl == old {
		t.Fatalf("the cut-off node %s is the leader the others agree on", oldNode.ID())
	}
	after := cmds("after", 5)
	for _, cmd := range after {
		c.apply(cmd)
	}
	c.checkSame(append(slices.Clone(want), after...))

	// Healed, the old leader follows, and its uncommitted "lost" is gone.
	c.heal(old)
	c.checkSame(append(want, after...))
	if l := c.waitLeader(electionBound); c.nodes[l].ID() == "" {
		t.Fatal("no leader after healing")
	}
}
