package worker_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
)

// fakeLeader is a testutil.Follower in the cluster as a server that says it leads,
// joined to join (none: a seed itself): a worker dials it first, and it answers
// not_leader naming leader. It returns its gossip address.
func fakeLeader(t *testing.T, join []string, leader string) (*testutil.Follower, string) {
	t.Helper()
	f := testutil.StartFollower(t, leader)
	_, port, _ := net.SplitHostPort(f.Addr())
	tokenPort, _ := strconv.Atoi(port)
	node, err := cluster.Start(cluster.Config{Name: "fake-leader", BindAddr: "127.0.0.1", Join: join,
		Label: testutil.ServerConfig().ClusterLabel, Local: true, Logger: testutil.Logger(t).With("node", "fake-leader"),
		Meta: cluster.Meta{Role: cluster.RoleServer, BootID: "fake", TokenPort: tokenPort, Leader: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	return f, node.Addr()
}

// The worker dials the server that says it leads; answered not_leader, it follows
// to the alive server member named, and a reconnect resumes its session there.
func TestWorkerFollowsToAKnownServer(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	f, _ := fakeLeader(t, []string{srv.GossipAddr()}, srv.TokenAddr())
	testutil.Eventually(t, 10*time.Second, "the server to see fake-leader alive", func() bool {
		st, _ := srv.Status()
		for _, m := range st.Members {
			if m.Name == "fake-leader" && m.State == cluster.StateAlive {
				return true
			}
		}
		return false
	})
	w := testutil.StartWorker(t, testutil.WorkerConfig(srv, "w0"))
	testutil.Eventually(t, 10*time.Second, "w0 to complete a critical section", func() bool { return w.Status().Done >= 1 })

	// By now w0 knows the fake leader (it came with srv's member list). Every other
	// connect asks the server that says it leads (pick): within a few reconnects one
	// goes to the fake leader, which sends it on.
	session := w.Status().Session
	atFake := func() bool {
		for _, h := range f.Hellos() {
			if h.Text == "w0" && fmt.Sprintf("%x", h.Session) == session {
				return true
			}
		}
		return false
	}
	for i := 0; i < 4 && !atFake(); i++ {
		if err := srv.CloseConnections(); err != nil {
			t.Fatal(err)
		}
		// The server detached the session as it closed the connection: attached
		// again, it is w0's next connect, straight or sent on by the fake leader.
		testutil.Eventually(t, 10*time.Second, "w0 to reconnect after its connection was closed", func() bool {
			st, _ := srv.Status()
			for _, ss := range st.Sessions {
				if ss.Node == "w0" && ss.Connected {
					return true
				}
			}
			return false
		})
	}
	if !atFake() {
		t.Fatalf("no hello from w0 at the fake leader resuming session %s in 4 reconnects: hellos %d", session, len(f.Hellos()))
	}
	done := w.Status().Done
	testutil.Eventually(t, 10*time.Second, "w0 to go on with session "+session+" on "+srv.TokenAddr(), func() bool {
		st := w.Status()
		return st.Connected && st.Session == session && st.Server == srv.TokenAddr() && st.Done > done
	})
}

// A not_leader that names an address this node does not know as a server is not
// followed: the worker never reaches it, and its status says what is going on. The
// fake leader is the only server in the cluster, so it is the only one dialled.
func TestWorkerDoesNotFollowToAnUnknownServer(t *testing.T) {
	stranger := testutil.StartServer(t, func(c *server.Config) { c.NodeName = "stranger" }) // in no cluster of ours
	f, seed := fakeLeader(t, nil, stranger.TokenAddr())
	cfg := testutil.WorkerConfig(stranger, "w0")
	cfg.Join = []string{seed}
	cfg.DoctorGrace = 300 * time.Millisecond
	w := testutil.StartWorker(t, cfg)
	testutil.Eventually(t, 10*time.Second, "w0's status to report the not_leader answers", func() bool {
		return strings.Contains(w.Status().Problem, "not_leader")
	})
	if n := len(f.Hellos()); n < 2 {
		t.Errorf("the fake leader read %d hellos, want the worker to keep asking it", n)
	}
	st, err := stranger.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Sessions) != 0 {
		t.Errorf("the server named by the fake leader has sessions %+v, want none", st.Sessions)
	}
	if st := w.Status(); st.Connected {
		t.Errorf("w0 connected to %s", st.Server)
	}
	t.Logf("w0's problem: %s", w.Status().Problem)
}

// Workers on a real three-server cluster find the leader through the membership,
// and go on under the next leader when it stops, each in its own session still.
func TestWorkersFollowTheLeaderOfACluster(t *testing.T) {
	cl := testutil.StartCluster(t, 3, func(c *server.Config) { c.SessionTTL = 3 * time.Second })
	first := cl.AwaitLeader(t, 30*time.Second)
	var seeds []string
	for i := range 3 {
		seeds = append(seeds, cl.Server(i).GossipAddr())
	}
	var ws []*testutil.Worker
	for _, name := range []string{"w0", "w1"} {
		cfg := testutil.WorkerConfig(cl.Server(first), name)
		cfg.Join = seeds
		ws = append(ws, testutil.StartWorker(t, cfg))
	}
	// Both work on the server that leads now (a loaded machine may have changed it)
	// and have done more than done[i] critical sections.
	onLeader := func(done []uint64) bool {
		l := cl.Leader()
		if l < 0 {
			return false
		}
		for i, w := range ws {
			st := w.Status()
			if !st.Connected || st.Server != cl.Server(l).TokenAddr() || st.Done <= done[i] {
				return false
			}
		}
		return true
	}
	testutil.Eventually(t, 30*time.Second, "both workers working on the leader", func() bool { return onLeader([]uint64{3, 3}) })
	leader := cl.Leader()
	sessions := []string{ws[0].Status().Session, ws[1].Status().Session}
	done := []uint64{ws[0].Status().Done + 3, ws[1].Status().Done + 3}

	t0 := time.Now()
	cl.Stop(leader)
	testutil.Eventually(t, 30*time.Second, "both workers working on the next leader", func() bool { return onLeader(done) })
	t.Logf("s%d stopped; both workers had three more critical sections on s%d %s later", leader+1, cl.Leader()+1,
		time.Since(t0).Round(time.Millisecond))
	for i, w := range ws {
		if s := w.Status().Session; s != sessions[i] {
			t.Errorf("%s's session went from %s to %s across the failover, want it resumed", w.Name, sessions[i], s)
		}
	}
}
