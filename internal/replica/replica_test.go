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

// listSM is the toy state machine: an append-only list of commands. Each answer
// is the list's new length, so answers are positions; deterministic by
// construction. It records the indexes it saw and how often it was restored.
type listSM struct {
	mu       sync.Mutex // guards everything below
	items    []string
	last     uint64 // index of the last entry applied
	restores int
	changed  chan struct{} // closed and replaced at every change
	t        testing.TB
}

func newListSM(t testing.TB) *listSM { return &listSM{changed: make(chan struct{}), t: t} }

func (s *listSM) Apply(entries []replica.Entry) []any {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]any, len(entries))
	for i, e := range entries {
		if e.Index <= s.last {
			s.t.Errorf("entry index %d after %d: indexes must increase", e.Index, s.last)
		}
		s.last = e.Index
		s.items = append(s.items, string(e.Cmd))
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
		Dir:                dir,
		BindAddr:           "127.0.0.1:0",
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
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
}

// newCluster opens n nodes with no state and bootstraps them as one cluster the way
// discovery would: each learns the others' addresses, then all call Bootstrap.
func newCluster(t testing.TB, n int, durable bool) *cluster {
	t.Helper()
	c := &cluster{t: t, cfgs: make([]replica.Config, n), nodes: make([]*replica.Node, n), sms: make([]*listSM, n), leaders: make([]atomic.Int64, n)}
	t.Cleanup(c.closeAll)
	for i := range n {
		dir := ""
		if durable {
			dir = t.TempDir()
		}
		c.cfgs[i] = testConfig(t, dir)
		c.cfgs[i].ID = fmt.Sprintf("n%d", i)
		c.open(i)
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
		for _, nd := range c.nodes {
			if nd == nil {
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

// apply applies cmd on the leader, following the leadership if it moved before the
// command was taken; an outcome that cannot be known fails the test.
func (c *cluster) apply(cmd string) int {
	c.t.Helper()
	for range 5 {
		i := c.waitLeader(electionBound)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := c.nodes[i].Apply(ctx, []byte(cmd))
		cancel()
		if errors.Is(err, replica.ErrNotLeader) {
			continue
		}
		if err != nil {
			c.t.Fatalf("apply %q on %s: %v", cmd, c.nodes[i].ID(), err)
		}
		return res.(int)
	}
	c.t.Fatalf("apply %q: leadership kept moving", cmd)
	return 0
}

// checkSame waits until every open node's list has want's length and then checks
// it equals want.
func (c *cluster) checkSame(want []string) {
	c.t.Helper()
	for i, nd := range c.nodes {
		if nd == nil {
			continue
		}
		c.sms[i].waitLen(c.t, len(want), catchUpBound, nd.ID())
		if got := c.sms[i].list(); !slices.Equal(got, want) {
			c.t.Fatalf("%s: state machine differs from the expected log:\n got  %q\n want %q", nd.ID(), got, want)
		}
	}
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
	if c.leaders[li].Load() == 0 {
		t.Errorf("the leader's LeaderChange hook was not called")
	}
}

func TestAppliesReplicatedInOrder(t *testing.T) {
	c := newCluster(t, 3, false)
	li := c.waitLeader(electionBound)
	leader := c.nodes[li]

	// Eight concurrent proposers, so that commands share batches; every answer is
	// a distinct position in the log.
	const workers, each = 8, 25
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		answers = map[int]string{}
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				cmd := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := leader.Apply(ctx, []byte(cmd))
				cancel()
				if err != nil {
					t.Errorf("apply %s: %v", cmd, err)
					return
				}
				mu.Lock()
				if prev, dup := answers[res.(int)]; dup {
					t.Errorf("%s and %s both answered position %d", prev, cmd, res)
				}
				answers[res.(int)] = cmd
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := make([]string, workers*each)
	for pos, cmd := range answers {
		want[pos-1] = cmd
	}
	c.checkSame(want) // all three, in the order the answers gave
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
