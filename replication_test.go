package baton_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/fsm"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/wire"
)

// The replication rules (../shared/DESIGN.md, "Replication"; internal/server/raft.go),
// on three servers over real raft and memberlist transports on loopback.

// section is one critical section whose release the cluster accepted.
type section struct {
	client     string
	fence      uint64
	start, end time.Time
}

// contenders are clients that take a token in turn, each adding one to its
// counter, and record what they saw.
type contenders struct {
	token    string
	mu       sync.Mutex // guards sections, unknown
	sections []section
	unknown  int // releases whose outcome the client could not know
	accepted atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func startContenders(t *testing.T, cl *testutil.Cluster, n int, token string) *contenders {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cs := &contenders{token: token, cancel: cancel}
	for i := range n {
		name := fmt.Sprintf("c%d", i+1)
		c := cl.Dial(t, name, nil)
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			for ctx.Err() == nil {
				cs.turn(ctx, c, name)
			}
		}()
	}
	t.Cleanup(cs.stop)
	return cs
}

// turn is one acquire, critical section, release.
func (cs *contenders) turn(ctx context.Context, c *baton.Client, name string) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	l, err := c.Acquire(actx, cs.token)
	cancel()
	if err != nil {
		return
	}
	start := time.Now()
	rec := l.Record
	end := time.Now()
	// The release is sent even if the lease was lost: the cluster decides.
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = l.Release(rctx, baton.Record{Counter: rec.Counter + 1})
	cancel()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	switch {
	case err == nil:
		cs.sections = append(cs.sections, section{client: name, fence: l.Fence, start: start, end: end})
		cs.accepted.Add(1)
	case errors.Is(err, baton.ErrOutcomeUnknown):
		cs.unknown++
	}
}

func (cs *contenders) stop() {
	cs.cancel()
	cs.wg.Wait()
}

// awaitProgress waits for n more accepted releases.
func (cs *contenders) awaitProgress(t *testing.T, n int64, d time.Duration, what string) {
	t.Helper()
	from := cs.accepted.Load()
	testutil.Eventually(t, d, fmt.Sprintf("%d more accepted releases: %s", n, what), func() bool {
		return cs.accepted.Load()-from >= n
	})
}

// firstSectionAfter is how long after t0 the first accepted critical section began.
func (cs *contenders) firstSectionAfter(t0 time.Time) time.Duration {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	first := time.Duration(-1)
	for _, s := range cs.sections {
		if d := s.start.Sub(t0); d > 0 && (first < 0 || d < first) {
			first = d
		}
	}
	return first
}

// check stops the contenders and checks the rules on what they saw and on the
// leader's state: no two accepted sections overlap, fences strictly increase in
// the order of the sections, and the counter is the accepted releases plus at most
// those whose outcome was unknown.
func (cs *contenders) check(t *testing.T, cl *testutil.Cluster) {
	t.Helper()
	cs.stop()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	secs := slices.Clone(cs.sections)
	slices.SortFunc(secs, func(a, b section) int { return a.start.Compare(b.start) })
	for i := 1; i < len(secs); i++ {
		a, b := secs[i-1], secs[i]
		if b.start.Before(a.end) {
			t.Errorf("two holders at once: %s fence %d [%s, %s] and %s fence %d from %s",
				a.client, a.fence, a.start.Format(time.StampMicro), a.end.Format(time.StampMicro), b.client, b.fence, b.start.Format(time.StampMicro))
		}
		if b.fence <= a.fence {
			t.Errorf("fence went back: %s had %d, then %s had %d", a.client, a.fence, b.client, b.fence)
		}
	}
	leader := cl.AwaitLeader(t, 20*time.Second)
	st, err := cl.Server(leader).Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range st.Tokens {
		if tk.Name != cs.token {
			continue
		}
		if lo, hi := uint64(len(secs)), uint64(len(secs)+cs.unknown); tk.Counter < lo || tk.Counter > hi {
			t.Errorf("counter %d: want the %d accepted releases, plus at most the %d whose outcome was unknown", tk.Counter, lo, cs.unknown)
		}
		if len(secs) > 0 && tk.Fence < secs[len(secs)-1].fence {
			t.Errorf("token fence %d is below a fence a client held, %d", tk.Fence, secs[len(secs)-1].fence)
		}
		t.Logf("%d sections accepted, %d outcomes unknown, counter %d, fence %d", len(secs), cs.unknown, tk.Counter, tk.Fence)
		return
	}
	t.Errorf("token %q not in the leader's status", cs.token)
}

// The leader is closed while clients contend: another leads, the clients follow
// it and resume their sessions, and the token moves again within an election and
// a TTL.
func TestReplicatedLeaderClosed(t *testing.T) {
	cl := testutil.StartCluster(t, 3, nil)
	leader := cl.AwaitLeader(t, 30*time.Second)
	cs := startContenders(t, cl, 3, "counter")
	cs.awaitProgress(t, 20, 20*time.Second, "the token moving before the fault")
	cl.Stop(leader) // it hands the leadership over first, as a server told to stop does
	t0 := time.Now()
	next := cl.AwaitLeader(t, 10*time.Second)
	if next == leader {
		t.Fatalf("server %d still leads after it was closed", leader)
	}
	cs.awaitProgress(t, 20, 20*time.Second, "the token moving under the new leader")
	checkMovedAgain(t, cs, cl, t0, fmt.Sprintf("leader s%d closed, s%d leads", leader+1, next+1))
	cs.check(t, cl)
}

// checkMovedAgain checks that the token moved again within an election and a TTL
// of the fault at t0.
func checkMovedAgain(t *testing.T, cs *contenders, cl *testutil.Cluster, t0 time.Time, what string) {
	t.Helper()
	took := cs.firstSectionAfter(t0)
	t.Logf("%s: the next accepted critical section began %s after the fault", what, took)
	if limit := 5*time.Second + cl.Server(cl.Leader()).Cfg.SessionTTL; took < 0 || took > limit {
		t.Errorf("%s: the token moved again %s after the fault, want within %s (an election and a TTL)", what, took, limit)
	}
}

// The leader is cut off from the other servers (its clients still reach it): it
// loses its lease and steps down, the others elect a leader, the clients follow
// it, and when the cut heals the old leader rejoins as a follower.
func TestReplicatedLeaderCutOff(t *testing.T) {
	cl := testutil.StartCluster(t, 3, nil)
	leader := cl.AwaitLeader(t, 30*time.Second)
	cs := startContenders(t, cl, 3, "counter")
	cs.awaitProgress(t, 20, 20*time.Second, "the token moving before the fault")
	t0 := time.Now()
	cl.Cut(leader)
	var next int
	testutil.Eventually(t, 15*time.Second, "another server to lead, and the cut-off one to stop serving", func() bool {
		next = cl.Leader()
		return next >= 0 && next != leader && !cl.Server(leader).Leading()
	})
	cs.awaitProgress(t, 20, 20*time.Second, "the token moving under the new leader")
	checkMovedAgain(t, cs, cl, t0, fmt.Sprintf("leader s%d cut off, s%d leads", leader+1, next+1))
	cl.Heal(leader)
	testutil.Eventually(t, 20*time.Second, "the healed server to follow the new leader", func() bool {
		st, err := cl.Server(leader).Status()
		return err == nil && st.Raft != nil && st.Raft.State == "follower" && st.Raft.Leader != ""
	})
	cs.awaitProgress(t, 20, 20*time.Second, "the token moving after the cut healed")
	cs.check(t, cl)
}

// A follower stops and starts again: the other two carry on, and it catches up.
// The servers have a key of their own for raft (BATON_RAFT_KEY) beside the cluster
// key, so every raft connection is TLS between them: the restarted follower's,
// dialled and accepted afresh, too.
func TestReplicatedFollowerRestarts(t *testing.T) {
	clusterKey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	raftKey := base64.StdEncoding.EncodeToString([]byte("raft-key-of-the-servers-alone-01"))
	cl := testutil.StartCluster(t, 3, func(c *server.Config) { c.ClusterKey, c.RaftKey = clusterKey, raftKey })
	leader := cl.AwaitLeader(t, 30*time.Second)
	follower := (leader + 1) % 3
	cs := startContenders(t, cl, 3, "counter")
	cs.awaitProgress(t, 10, 20*time.Second, "the token moving before the fault")
	cl.Stop(follower)
	cs.awaitProgress(t, 20, 20*time.Second, "the token moving with one follower down")
	f := cl.Start(follower)
	cs.awaitProgress(t, 20, 20*time.Second, "the token moving after the follower came back")
	awaitReplicating(t, cl, follower, "the restarted follower")
	cs.check(t, cl)
	// The follower shows the replicated token and points to the leader.
	fst, err := f.Status()
	if err != nil {
		t.Fatal(err)
	}
	if fst.Raft.Leader == "" || len(fst.Raft.Servers) != 3 {
		t.Errorf("follower's raft status: %+v, want a leader and 3 servers", fst.Raft)
	}
	// Every server reads a batch's term, so the leader writes it (log version 2).
	testutil.Eventually(t, 10*time.Second, "the leader's raft.log_version to be 2", func() bool {
		l := cl.Leader()
		if l < 0 {
			return false
		}
		st, err := cl.Server(l).Status()
		return err == nil && st.Raft != nil && st.Raft.LogVersion == 2
	})
	if len(fst.Tokens) != 1 || fst.Tokens[0].Fence == 0 {
		t.Errorf("follower's tokens: %+v, want the replicated counter token", fst.Tokens)
	}
	for i := range 3 {
		if n := testutil.Metric(t, cl.Server(i).Reg, "baton_protocol_errors_total", map[string]string{"reason": "raft_auth"}); n != 0 {
			t.Errorf("s%d refused %v raft connections of servers that hold the key, want none", i+1, n)
		}
	}
}

// The cluster key changes with the cluster serving throughout (cluster.ParseKeys):
// every server moves from "old" to "old,new", then to "new,old", then to "new", one
// restart at a time, as an operator rolls a deployment three times. Servers one
// step apart gossip, replicate (raft over TLS) and accept each other's clients;
// clients that prove the old key are served until the last step, clients that prove
// the new one from the second on, and after the last the old key opens nothing.
func TestReplicatedClusterKeyChangesWhileServing(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	oldKey, newKey := b64("old-key-old-key-old-key-old-key!"), b64("new-key-new-key-new-key-new-key!")
	cl := testutil.StartCluster(t, 3, func(c *server.Config) { c.ClusterKey = oldKey })
	cl.AwaitLeader(t, 30*time.Second)
	cs := startContenders(t, cl, 2, "counter") // they prove the old key
	cs.awaitProgress(t, 5, 20*time.Second, "the token moving before the key changes")
	roll := func(key string, cs *contenders) {
		t.Helper()
		for i := range 3 {
			cl.Stop(i)
			cl.Reconfigure(i, func(c *server.Config) { c.ClusterKey = key })
			cl.Start(i)
			step := fmt.Sprintf("s%d on BATON_CLUSTER_KEY=%s", i+1, key)
			// Gossip: the restarted server, which knows nobody at start, sees the
			// other two alive, so it exchanged encrypted state with them.
			testutil.Eventually(t, 20*time.Second, "the others alive in the membership of "+step, func() bool {
				st, err := cl.Server(i).Status()
				alive := 0
				for j := range 3 {
					if m, ok := member(st, fmt.Sprintf("s%d", j+1)); err == nil && ok && j != i && m.State == cluster.StateAlive {
						alive++
					}
				}
				return alive == 2
			})
			cs.awaitProgress(t, 5, 20*time.Second, "the token moving with "+step)
			for j := range 3 { // every server, one step apart from it, still replicates with it
				awaitReplicating(t, cl, j, fmt.Sprintf("s%d, with %s,", j+1, step))
				if n := testutil.Metric(t, cl.Server(j).Reg, "baton_protocol_errors_total", map[string]string{"reason": "raft_auth"}); n != 0 {
					t.Errorf("with %s, s%d refused %v raft connections of servers one step apart, want none", step, j+1, n)
				}
			}
		}
	}
	roll(oldKey+","+newKey, cs)
	roll(newKey+","+oldKey, cs)
	cs.stop()
	cs.check(t, cl)
	renewed := startContenders(t, cl, 2, "renewed") // s1's first key is the new one now; a token of their own for check
	renewed.awaitProgress(t, 5, 20*time.Second, "clients that prove the new key served")
	roll(newKey, renewed)
	renewed.check(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	oldProof, _ := base64.StdEncoding.DecodeString(oldKey)
	leader := cl.Server(cl.AwaitLeader(t, 10*time.Second))
	// The client retries a refused proof (its key may be on its way) until the
	// context ends, and then says why it has no session.
	if c, err := baton.Dial(ctx, baton.Config{Addr: leader.TokenAddr(), Node: "stale", ClusterKey: oldProof}); !errors.Is(err, baton.ErrRefused) {
		if c != nil {
			c.Close()
		}
		t.Errorf("a client that proves the old key after the key changed: %v, want it refused", err)
	}
	if n := testutil.Metric(t, leader.Reg, "baton_protocol_errors_total", map[string]string{"reason": "auth"}); n < 1 {
		t.Errorf("protocol_errors{reason=auth} = %v after the old key's hello, want it counted", n)
	}
}

// A host that may gossip (it holds the cluster key, or there is none) announces a
// server of its own. With BATON_RAFT_KEY, the leader makes it a voter only if it
// proves raft's key: an impostor voter would count toward every quorum (a few make
// one that can never be reached) and answer none. Refused, counted, and the
// configuration stays the three servers.
func TestAnAnnouncedServerThatDoesNotProveRaftsKeyIsNotAdded(t *testing.T) {
	raftKey := base64.StdEncoding.EncodeToString([]byte("raft-key-of-the-servers-alone-01"))
	cl := testutil.StartCluster(t, 3, func(c *server.Config) { c.RaftKey = raftKey })
	leader := cl.AwaitLeader(t, 30*time.Second)
	testutil.Eventually(t, 20*time.Second, "the leader's configuration to hold the three servers", func() bool {
		st, err := cl.Server(leader).Status()
		return err == nil && st.Raft != nil && len(st.Raft.Servers) == 3
	})
	raftPort := httptest.NewTLSServer(http.NotFoundHandler()) // speaks TLS, with a key of its own
	defer raftPort.Close()
	impostor, err := cluster.Start(cluster.Config{Name: "impostor", BindAddr: "127.0.0.1", Local: true, Label: cl.Server(leader).Cfg.ClusterLabel,
		Join: []string{cl.Server(leader).GossipAddr()}, JoinPeriod: time.Hour, Logger: testutil.Logger(t),
		Meta: cluster.Meta{Role: cluster.RoleServer, BootID: "x", RaftPort: raftPort.Listener.Addr().(*net.TCPAddr).Port, LogVersion: fsm.LogVersion}})
	if err != nil {
		t.Fatal(err)
	}
	defer impostor.Close()
	if _, err := impostor.Join(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the leader to refuse the impostor (protocol_errors{reason=raft_unproven_server})", func() bool {
		l := cl.Leader()
		return l >= 0 && testutil.Metric(t, cl.Server(l).Reg, "baton_protocol_errors_total", map[string]string{"reason": "raft_unproven_server"}) >= 1
	})
	st, err := cl.Server(cl.Leader()).Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Raft.Servers) != 3 {
		t.Errorf("raft configuration %+v after an impostor was announced, want the three servers", st.Raft.Servers)
	}
}

// Servers recreated at each other's addresses are dialled for a while at the
// address the membership last heard of: a raft connection meant for one reaches
// the other, which follows the same leader and would answer in its place, the
// server meant never hearing from the leader again. The server reached refuses it
// (protocol_errors{reason="raft_misrouted"}), and the leader reaches the server
// meant once its name leads there again.
func TestReplicatedRaftConnectionMeantForAnotherServerIsRefused(t *testing.T) {
	cl := testutil.StartCluster(t, 3, nil)
	leader := cl.AwaitLeader(t, 30*time.Second)
	meant, via := (leader+1)%3, (leader+2)%3
	cs := startContenders(t, cl, 2, "counter")
	cs.awaitProgress(t, 10, 20*time.Second, "the token moving before the fault")
	cl.Misroute(meant, via)
	testutil.Eventually(t, 20*time.Second, fmt.Sprintf("s%d to refuse a raft connection meant for s%d (protocol_errors{reason=raft_misrouted})", via+1, meant+1), func() bool {
		return testutil.Metric(t, cl.Server(via).Reg, "baton_protocol_errors_total", map[string]string{"reason": "raft_misrouted"}) >= 1
	})
	cs.awaitProgress(t, 10, 20*time.Second, "the token moving while one follower is out of reach")
	cl.Misroute(meant, -1)
	awaitReplicating(t, cl, meant, fmt.Sprintf("s%d, reached again", meant+1))
	cs.check(t, cl)
}

// The same with a view stale in its version too, as when servers are upgraded by
// recreating them: the server meant runs a version that reads no opening, so the
// leader sends none, and the server reached, which knows the leader opens its
// connections, refuses the connection all the same.
func TestReplicatedRaftConnectionMeantForAServerOfTheVersionBeforeIsRefusedElsewhere(t *testing.T) {
	cl := testutil.StartCluster(t, 3, nil)
	leader := cl.AwaitLeader(t, 30*time.Second)
	meant, via := (leader+1)%3, (leader+2)%3
	cl.Stop(meant)
	cl.Reconfigure(meant, func(c *server.Config) { c.RaftConnBefore = true })
	cl.Start(meant)
	awaitReplicating(t, cl, meant, fmt.Sprintf("s%d, of the version before", meant+1))
	cs := startContenders(t, cl, 2, "counter")
	cs.awaitProgress(t, 10, 20*time.Second, "the token moving before the fault")
	cl.Misroute(meant, via)
	testutil.Eventually(t, 20*time.Second, fmt.Sprintf("s%d to refuse a raft connection without an opening meant for s%d (protocol_errors{reason=raft_misrouted})", via+1, meant+1), func() bool {
		return testutil.Metric(t, cl.Server(via).Reg, "baton_protocol_errors_total", map[string]string{"reason": "raft_misrouted"}) >= 1
	})
	cl.Misroute(meant, -1)
	awaitReplicating(t, cl, meant, fmt.Sprintf("s%d, reached again", meant+1))
	cs.check(t, cl)
}

// awaitReplicating waits until server i leads, or follows and has applied nearly
// all that the leader committed (the clients keep committing meanwhile).
func awaitReplicating(t *testing.T, cl *testutil.Cluster, i int, what string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, what+" to apply what the leader committed", func() bool {
		l := cl.Leader()
		if l < 0 || cl.Server(i) == nil {
			return false
		}
		if l == i {
			return true
		}
		lst, _ := cl.Server(l).Status()
		fst, _ := cl.Server(i).Status()
		return lst.Raft != nil && fst.Raft != nil && fst.Raft.State == "follower" && fst.Raft.AppliedIndex+50 >= lst.Raft.CommitIndex
	})
}

// Every server stops, then all start again from their directories: fences carry
// on above the last one granted, and the counter with them (rule 5).
func TestReplicatedAllRestart(t *testing.T) {
	cl := testutil.StartCluster(t, 3, nil)
	cl.AwaitLeader(t, 30*time.Second)
	cs := startContenders(t, cl, 2, "counter")
	cs.awaitProgress(t, 20, 20*time.Second, "the token moving before the restart")
	before := cs.accepted.Load()
	for i := range 3 {
		cl.Stop(i)
	}
	for i := range 3 {
		cl.Start(i)
	}
	cl.AwaitLeader(t, 30*time.Second)
	cs.awaitProgress(t, 20, 30*time.Second, "the token moving after every server restarted")
	if before == 0 {
		t.Fatal("no section before the restart")
	}
	cs.check(t, cl)
}

// Rules 4 and 7: a holder keeps its lease across a failover, whether the leader
// stopped (it hands over and says Closing) or was killed (its connections just
// end). The new leader gives every session a full TTL before it expires any, the
// holder resumes its session there, and its release is accepted; the waiter then
// gets the token with a higher fence.
//
// A leader that falls silent to the holder (frozen, or cut off from the servers
// and from the holder, whose connection shows nothing: no close, no reset) is the
// hardest case: the holder hears nothing until its read deadline, most of a TTL
// later, when its lease has run out. It must ask another server first
// (baton.Client's hedged connect), and find the new leader there.
func TestReplicatedHolderKeepsLeaseAcrossFailover(t *testing.T) {
	t.Run("leader stopped", func(t *testing.T) {
		holderKeepsLease(t, nil, func(cl *testutil.Cluster, i int) { cl.Stop(i) })
	})
	t.Run("leader killed", func(t *testing.T) {
		holderKeepsLease(t, nil, func(cl *testutil.Cluster, i int) { cl.Kill(i) })
	})
	t.Run("leader falls silent", func(t *testing.T) {
		var p *testutil.Proxy
		via := func(cl *testutil.Cluster, leader int, cfg *baton.Config) {
			p = testutil.StartProxy(t, cl.Server(leader).TokenAddr())
			var proxied atomic.Bool
			resolve := cfg.Resolve
			cfg.Resolve = func(ctx context.Context) (string, error) {
				if proxied.CompareAndSwap(false, true) {
					return p.Addr(), nil // the first connect goes through the proxy
				}
				return resolve(ctx)
			}
		}
		holderKeepsLease(t, via, func(cl *testutil.Cluster, i int) { p.Partition(); cl.Cut(i) })
	})
}

// holderKeepsLease has a holder and a waiter on the leader, then fault takes the
// leader away; via, if set, changes the holder's configuration.
func holderKeepsLease(t *testing.T, via func(*testutil.Cluster, int, *baton.Config), fault func(cl *testutil.Cluster, leader int)) {
	cl := testutil.StartCluster(t, 3, nil)
	leader := cl.AwaitLeader(t, 30*time.Second)
	holder := cl.Dial(t, "holder", func(c *baton.Config) {
		if via != nil {
			via(cl, leader, c)
		}
	})
	waiter := cl.Dial(t, "waiter", nil)
	ctx := context.Background()
	l, err := holder.Acquire(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	granted := make(chan *baton.Lease, 1)
	go func() {
		wl, err := waiter.Acquire(ctx, "t")
		if err == nil {
			granted <- wl
		}
	}()
	testutil.Eventually(t, 10*time.Second, "the waiter queued behind the holder", func() bool {
		st, _ := cl.Server(leader).Status()
		return len(st.Tokens) == 1 && len(st.Tokens[0].Queue) == 1
	})
	fault(cl, leader)
	next := -1
	testutil.Eventually(t, 10*time.Second, "another server to lead", func() bool {
		next = cl.Leader()
		return next >= 0 && next != leader
	})
	testutil.Eventually(t, 10*time.Second, "the holder to resume its session on the new leader", func() bool {
		return holder.Info().Server == cl.Server(next).TokenAddr()
	})
	if err := l.Err(); err != nil {
		t.Fatalf("the holder's lease ended across the failover: %v", err)
	}
	select {
	case wl := <-granted:
		t.Fatalf("the waiter was granted fence %d while the holder still held fence %d", wl.Fence, l.Fence)
	default:
	}
	if err := l.Release(ctx, baton.Record{Counter: 1}); err != nil {
		t.Fatalf("the holder's release after the failover: %v, want it accepted", err)
	}
	select {
	case wl := <-granted:
		if wl.Fence <= l.Fence {
			t.Errorf("waiter's fence %d, want above the holder's %d", wl.Fence, l.Fence)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter got no grant within 10s of the release")
	}
	if n := testutil.Metric(t, cl.Server(next).Reg, "baton_reclaims_total", nil); n != 0 {
		t.Errorf("baton_reclaims_total on the new leader = %v, want 0: nobody lost a lease", n)
	}
}

// leaderLease is raft's leader lease in the servers' configuration (replica.DefaultConfig).
const leaderLease = 250 * time.Millisecond

// Rules 1 and 3: a leader that has lost its quorum grants nothing and extends no
// session. Both followers stop; a keepalive and an acquire of a free token sent to
// the leader get neither an ack nor a grant, and the leader lets the client go.
func TestReplicatedLeaderWithoutQuorumAnswersNothing(t *testing.T) {
	cl := testutil.StartCluster(t, 3, nil)
	leader := cl.AwaitLeader(t, 30*time.Second)
	raw := testutil.DialRaw(t, cl.Server(leader).TokenAddr(), "lonely")
	for i := range 3 {
		if i != leader {
			cl.Stop(i)
		}
	}
	// No quorum has confirmed this leader since the second follower stopped. Once a
	// leader lease has passed since then, the leader may act only on a fresh check,
	// which cannot succeed: the precondition is a time on the clock, not an event.
	time.Sleep(leaderLease)
	// The leader may have stepped down and let go of the connection already: then
	// the writes fail, and nothing can have been acknowledged either.
	_ = raw.W.Write(&wire.Frame{Op: wire.OpKeepalive, Seq: 100})
	_ = raw.W.Write(&wire.Frame{Op: wire.OpAcquire, Seq: 101, Token: "free"})
	_ = raw.W.Flush()
	for {
		f, err := raw.TryNext(10 * time.Second)
		if err != nil {
			break // the leader let go of the connection, or stayed silent
		}
		switch f.Op {
		case wire.OpKeepaliveAck:
			t.Fatalf("a leader without a quorum acknowledged a keepalive")
		case wire.OpGrant:
			t.Fatalf("a leader without a quorum granted %q fence %d", f.Token, f.Fence)
		case wire.OpClosing:
			return
		}
	}
}

// Rule 3, on the path a broken rule would take: a leader that has heard from no
// quorum for longer than a lease, and is cut off from the other servers the moment
// before a keepalive arrives, still believes it leads (raft notices the lost quorum
// a lease or two later). It must check with a quorum before it acknowledges, and
// the check cannot succeed: the keepalive goes unacknowledged, and the leader lets
// the client go when it steps down. A leader that acknowledged from its belief
// would answer at once.
func TestReplicatedCutOffLeaderAcknowledgesNoKeepalive(t *testing.T) {
	cl := testutil.StartCluster(t, 3, nil)
	leader := cl.AwaitLeader(t, 30*time.Second)
	raw := testutil.DialRaw(t, cl.Server(leader).TokenAddr(), "idle")
	// The hello committed; nothing commits after it. Two leases later, the last
	// quorum's confirmation is older than a lease: a time on the clock, not an event.
	time.Sleep(2 * leaderLease)
	cl.Cut(leader)
	raw.Send(wire.Frame{Op: wire.OpKeepalive, Seq: 7})
	for {
		f, err := raw.TryNext(10 * time.Second)
		if err != nil {
			return // let go without an answer
		}
		switch f.Op {
		case wire.OpKeepaliveAck:
			t.Fatal("a leader cut off from its quorum, with no confirmation within a lease, acknowledged a keepalive")
		case wire.OpClosing:
			return
		}
	}
}

// Rule 1, as the metrics tell it: a leader cut off from its quorum decides a grant
// it cannot commit. The client never hears of it, and neither does
// baton_grants_total: a deposed leader counts only what committed.
func TestReplicatedCutOffLeaderCountsNoUncommittedGrant(t *testing.T) {
	cl := testutil.StartCluster(t, 3, nil)
	leader := cl.AwaitLeader(t, 30*time.Second)
	srv := cl.Server(leader)
	raw := testutil.DialRaw(t, srv.TokenAddr(), "cut-off")
	cl.Cut(leader)
	raw.Send(wire.Frame{Op: wire.OpAcquire, Seq: 1, Token: "free"})
	for {
		f, err := raw.TryNext(10 * time.Second)
		if err != nil {
			break // let go: the leader stepped down
		}
		if f.Op == wire.OpGrant {
			t.Fatalf("a leader cut off from its quorum granted %q fence %d", f.Token, f.Fence)
		}
		if f.Op == wire.OpClosing {
			break
		}
	}
	testutil.Eventually(t, 10*time.Second, "the cut-off leader to step down", func() bool { return !srv.Leading() })
	if n := testutil.Metric(t, srv.Reg, "baton_grants_total", map[string]string{"token": "free"}); n != 0 {
		t.Errorf("baton_grants_total{token=free} = %v on the deposed leader, want 0: the grant never committed", n)
	}
}
