package baton_test

import (
	"encoding/base64"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/wire"
	"github.com/baton-dev/baton/internal/worker"
)

func member(st server.Status, name string) (server.MemberStatus, bool) {
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return server.MemberStatus{}, false
}

// Eight workers join through memberlist, find the server in its metadata (no server
// address given), all get the token; one stops gracefully: it releases, says
// goodbye, and shows as left; the others carry on.
func TestWorkersFindServerThroughMemberlist(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	var guard csGuard
	ws := testutil.StartWorkers(t, srv, 8, func(c *worker.Config) { c.Hooks = guard.hooks() })
	testutil.Eventually(t, 30*time.Second, "8 alive client members with sessions, each with a critical section done", func() bool {
		st, _ := srv.Status()
		alive := 0
		for _, m := range st.Members {
			if m.Role == cluster.RoleClient && m.State == cluster.StateAlive {
				alive++
			}
		}
		for _, w := range ws {
			if w.Status().Done == 0 {
				return false
			}
		}
		return alive == 8 && len(st.Sessions) == 8
	})
	st, _ := srv.Status()
	if m, ok := member(st, "server"); !ok || m.Role != cluster.RoleServer || m.State != cluster.StateAlive {
		t.Errorf("server member: %+v (found %v)", m, ok)
	}
	if n := testutil.Metric(t, srv.Reg, "baton_members", map[string]string{"state": "alive"}); n != 9 {
		t.Errorf("baton_members{state=alive} = %v, want 9", n)
	}
	problems, err := promtest.GatherAndLint(ws[0].Reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("client metric lint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{"baton_client_acquire_seconds", "baton_client_critical_sections_total", "baton_client_leases_lost_total", "baton_build_info"} {
		if testutil.Metric(t, ws[0].Reg, name, nil) == 0 && name != "baton_client_leases_lost_total" {
			t.Errorf("client metric %s missing or zero after critical sections", name)
		}
	}

	ws[3].Stop(t)
	testutil.Eventually(t, 10*time.Second, "w3 to show as left with no session", func() bool {
		st, _ := srv.Status()
		m, _ := member(st, "w3")
		for _, s := range st.Sessions {
			if s.Node == "w3" {
				return false
			}
		}
		return m.State == cluster.StateLeft
	})
	if n := testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": "disconnect"}); n != 0 {
		t.Errorf("a graceful stop caused %v disconnect reclaims; it should release first", n)
	}
	before := tokenStatus(t, srv, "counter").Counter
	testutil.Eventually(t, 10*time.Second, "the other seven to carry on", func() bool {
		return tokenStatus(t, srv, "counter").Counter > before+20
	})
	if v := guard.violations.Load(); v != 0 {
		t.Fatalf("%d overlapping critical sections", v)
	}
}

// With BATON_CLUSTER_KEY set, a node without the key can neither join the gossip nor
// open a token session; a worker with the key works.
func TestClusterKeyKeepsOutsidersOut(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	srv := testutil.StartServer(t, func(c *server.Config) { c.ClusterKey = key })

	outsider, err := cluster.Start(cluster.Config{Name: "outsider", BindAddr: "127.0.0.1", Port: 0,
		Join: []string{srv.GossipAddr()}, Label: srv.Cfg.ClusterLabel, Local: true, Logger: testutil.Logger(t),
		Meta: cluster.Meta{Role: cluster.RoleClient, BootID: "x"}, JoinPeriod: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer outsider.Close()
	if n, err := outsider.Join(); err == nil {
		t.Errorf("a node without the key joined %d members", n)
	}
	st, _ := srv.Status()
	if _, ok := member(st, "outsider"); ok {
		t.Error("the server lists a member that has no key")
	}

	// On the token port, a hello without the key's proof is refused and counted.
	raw := dialHandshakeOnly(t, srv.TokenAddr())
	raw.Send(wire.Frame{Op: wire.OpHello, Version: wire.Version, Text: "outsider", BootID: "x"})
	f := raw.Next()
	if f.Op != wire.OpError || f.Code != wire.CodeAuth {
		t.Fatalf("hello without proof answered %s, want error %s", testutil.Describe(f), wire.CodeAuth)
	}
	if n := testutil.Metric(t, srv.Reg, "baton_protocol_errors_total", map[string]string{"reason": "auth"}); n != 1 {
		t.Errorf("protocol_errors{reason=auth} = %v, want 1", n)
	}

	ws := testutil.StartWorkers(t, srv, 1, nil)
	testutil.Eventually(t, 20*time.Second, "the worker with the key to complete a critical section", func() bool {
		return ws[0].Status().Done > 0
	})
}

// Two deployments on one network with different labels do not see each other.
func TestClusterLabelSeparatesDeployments(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) { c.ClusterLabel = "blue" })
	other, err := cluster.Start(cluster.Config{Name: "green-node", BindAddr: "127.0.0.1", Port: 0,
		Join: []string{srv.GossipAddr()}, Label: "green", Local: true, Logger: testutil.Logger(t),
		Meta: cluster.Meta{Role: cluster.RoleClient, BootID: "g"}, JoinPeriod: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if n, err := other.Join(); err == nil {
		t.Errorf("a node labelled green joined %d members of the blue deployment", n)
	}
	st, _ := srv.Status()
	if _, ok := member(st, "green-node"); ok {
		t.Error("the blue server lists the green node")
	}
}

func dialHandshakeOnly(t *testing.T, addr string) *testutil.Raw {
	t.Helper()
	r := testutil.DialUnhandshaken(t, addr)
	if f := r.Next(); f.Op != wire.OpChallenge {
		t.Fatalf("expected challenge, got %s", f.Op)
	}
	return r
}

// A waiter whose node dies (its memberlist node stops without leaving) is dropped
// from the queue: when the holder releases, the token goes to the next live waiter,
// not to the dead one, whose session would only expire a TTL later.
func TestDeadMemberIsDroppedFromTheQueue(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = 30 * time.Second })
	ghostNode, err := cluster.Start(cluster.Config{Name: "ghost", BindAddr: "127.0.0.1", Port: 0,
		Join: []string{srv.GossipAddr()}, Label: srv.Cfg.ClusterLabel, Local: true, Logger: testutil.Logger(t),
		Meta: cluster.Meta{Role: cluster.RoleClient, BootID: "ghost-boot"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ghostNode.Close()
	testutil.Eventually(t, 10*time.Second, "ghost to be an alive member", func() bool {
		st, _ := srv.Status()
		m, ok := member(st, "ghost")
		return ok && m.State == cluster.StateAlive
	})

	holder := testutil.DialRaw(t, srv.TokenAddr(), "holder")
	holder.Acquire("counter")
	g := holder.AwaitGrant("counter")
	ghost := testutil.DialRawAs(t, srv.TokenAddr(), "ghost", "ghost-boot")
	ghost.Acquire("counter")
	waitQueue(t, srv, 1)
	live := testutil.Dial(t, srv, "live")
	got := make(chan uint64, 1)
	go func() {
		if l, err := live.Acquire(t.Context(), "counter"); err == nil {
			got <- l.Fence
		}
	}()
	waitQueue(t, srv, 2)

	ghostNode.Close() // dies without a leave: the others must find out by probing
	testutil.Eventually(t, 20*time.Second, "the dead ghost's wait to leave the queue", func() bool {
		st, _ := srv.Status()
		m, _ := member(st, "ghost")
		tk := tokenStatus(t, srv, "counter")
		return m.State == cluster.StateDead && len(tk.Queue) == 1 && tk.Queue[0] == "live"
	})
	testutil.Expect(t, holder.Release("counter", g.Fence, g.Rec), wire.OpReleased)
	testutil.AwaitFence(t, got, g.Fence+1, 2*time.Second, "the live waiter, not the dead one, gets the token")
}
