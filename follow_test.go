package baton_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
)

// watchConnects has cfg's OnConnect send the error of each failed connect to the
// channel it returns, without blocking, and check that it names the server.
func watchConnects(t *testing.T, cfg *baton.Config) chan error {
	errs := make(chan error, 64)
	cfg.OnConnect = func(server string, err error) {
		if err == nil {
			return
		}
		if server == "" {
			t.Errorf("OnConnect: a failed connect (%v) names no server", err)
		}
		select {
		case errs <- err:
		default:
		}
	}
	return errs
}

// A follower's not_leader names the leader, which Follow approves: Dial gets its
// session there, in the same connect, and the token works.
func TestClientFollowsNotLeaderToTheLeader(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	f := testutil.StartFollower(t, srv.TokenAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var asked []string
	type connect struct {
		server string
		err    error
	}
	var connects []connect // the first connect's OnConnect runs before Dial returns
	c, err := baton.Dial(ctx, baton.Config{Addr: f.Addr(), Node: "c1", Logger: testutil.Logger(t),
		Follow:    func(addr string) bool { asked = append(asked, addr); return addr == srv.TokenAddr() },
		OnConnect: func(server string, err error) { connects = append(connects, connect{server, err}) }})
	if err != nil {
		t.Fatalf("Dial through a follower naming the leader: %v", err)
	}
	defer c.Close()
	if got := c.Info().Server; got != srv.TokenAddr() {
		t.Errorf("session on %s, want the leader %s", got, srv.TokenAddr())
	}
	if want := []connect{{srv.TokenAddr(), nil}}; !slices.Equal(connects, want) {
		t.Errorf("OnConnect told %+v, want %+v: one connect, ended at the leader", connects, want)
	}
	if len(asked) != 1 || asked[0] != srv.TokenAddr() {
		t.Errorf("Follow asked about %q, want once about the leader %s", asked, srv.TokenAddr())
	}
	if h := f.Hellos(); len(h) != 1 || h[0].Session != 0 || h[0].Text != "c1" {
		t.Errorf("follower read hellos %+v, want one from c1 for a new session", h)
	}
	lease, err := c.Acquire(ctx, "counter")
	if err != nil {
		t.Fatalf("Acquire on the leader: %v", err)
	}
	if err := lease.Release(ctx, baton.Record{Counter: lease.Record.Counter + 1}); err != nil {
		t.Fatalf("Release on the leader: %v", err)
	}
	if n := tokenStatus(t, srv, "counter").Counter; n != 1 {
		t.Errorf("leader's counter %d after one release, want 1", n)
	}
}

// A reconnect that meets a follower first resumes the session on the leader it
// names: the lease held across it is still trusted, and its release applies.
func TestNotLeaderKeepsSessionAndLease(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = 3 * time.Second })
	f := testutil.StartFollower(t, srv.TokenAddr())
	var viaFollower atomic.Bool
	resolve := func(context.Context) (string, error) {
		if viaFollower.Load() {
			return f.Addr(), nil
		}
		return srv.TokenAddr(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := baton.Dial(ctx, baton.Config{Resolve: resolve, Node: "c1", Logger: testutil.Logger(t),
		Follow: func(addr string) bool { return addr == srv.TokenAddr() }})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	lease, err := c.Acquire(ctx, "counter")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	session := c.Info().Session

	// The server drops the connection with notice, as a leader that steps down
	// does; the client's next connect asks the follower first.
	viaFollower.Store(true)
	if err := srv.CloseConnections(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("a hello at the follower resuming session %x", session), func() bool {
		h := f.Hellos()
		return len(h) > 0 && h[len(h)-1].Session == session
	})
	testutil.Eventually(t, 5*time.Second, fmt.Sprintf("session %x resumed on the leader", session), func() bool {
		i := c.Info()
		return i.Connected && i.Session == session && i.Server == srv.TokenAddr()
	})
	if err := lease.Err(); err != nil {
		t.Fatalf("lease ended across the not_leader answer: %v", err)
	}
	if err := lease.Release(ctx, baton.Record{Counter: 7}); err != nil {
		t.Fatalf("Release after resuming on the leader: %v, want nil", err)
	}
}

// Without Follow's approval, or when the follower knows no leader, the client does
// not go where the follower says: it keeps asking Addr, after its back-off, and
// each failed connect says the server is not the leader.
func TestNotLeaderNotFollowedWithoutApproval(t *testing.T) {
	for _, tc := range []struct {
		name    string
		unnamed bool // the follower knows no leader
		self    bool // the follower names itself
		follow  func(string) bool
		asks    bool // Follow is asked about each answer
		why     string
	}{
		{name: "Follow nil", why: "Config.Follow is nil"},
		{name: "Follow refuses", follow: func(string) bool { return false }, asks: true, why: "does not approve"},
		{name: "no leader known", unnamed: true, follow: func(string) bool { return true }, why: "knows no leader"},
		{name: "names itself", self: true, follow: func(string) bool { return true }, why: "names itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.StartServer(t, nil)
			named := srv.TokenAddr()
			if tc.unnamed {
				named = ""
			}
			f := testutil.StartFollower(t, named)
			if tc.self {
				named = f.Addr()
				f.SetLeader(named)
			}
			cfg := baton.Config{Addr: f.Addr(), Node: "c1"}
			var asked atomic.Int32
			if tc.follow != nil {
				cfg.Follow = func(addr string) bool {
					asked.Add(1)
					if addr != named {
						t.Errorf("Follow asked about %q, want %q", addr, named)
					}
					return tc.follow(addr)
				}
			}
			errs := watchConnects(t, &cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			c, err := baton.Dial(ctx, cfg)
			if err == nil {
				c.Close()
				t.Fatalf("Dial connected (to %s); want no session while the follower is not followed", c.Info().Server)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Dial: %v, want the context's deadline", err)
			}
			hellos := len(f.Hellos())
			if hellos < 2 {
				t.Errorf("follower read %d hellos in 1s, want the client to keep trying", hellos)
			}
			want := 0
			if tc.asks {
				want = hellos
			}
			if n := int(asked.Load()); n != want {
				t.Errorf("Follow asked %d times for %d not_leader answers, want %d", n, hellos, want)
			}
			close(errs) // Dial has returned, and its dialer with it
			for err := range errs {
				if !errors.Is(err, baton.ErrNotLeader) || !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), named) {
					t.Errorf("connect failed with %q, want ErrNotLeader naming %q, with %q", err, named, tc.why)
				}
			}
			st, err := srv.Status()
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Sessions) != 0 {
				t.Errorf("the named server has sessions %+v, want none", st.Sessions)
			}
		})
	}
}

// Two followers that name each other end the connect after the bounded hops, long
// before its DialTimeout, with an error that says so; the next connect starts over.
func TestNotLeaderLoopEndsAfterBoundedHops(t *testing.T) {
	a := testutil.StartFollower(t, "")
	b := testutil.StartFollower(t, a.Addr())
	a.SetLeader(b.Addr())
	// Each connect starts with Resolve: the hellos said when the second one starts
	// are the first one's.
	var connects atomic.Int32
	secondConnect := make(chan int, 1)
	resolve := func(context.Context) (string, error) {
		if connects.Add(1) == 2 {
			secondConnect <- len(a.Hellos()) + len(b.Hellos())
		}
		return a.Addr(), nil
	}
	cfg := baton.Config{Resolve: resolve, Node: "c1", DialTimeout: 10 * time.Second,
		Follow: func(string) bool { return true }, Logger: testutil.Logger(t)}
	errs := watchConnects(t, &cfg)
	ctx, cancel := context.WithCancel(context.Background())
	dialed := make(chan error, 1)
	go func() {
		c, err := baton.Dial(ctx, cfg)
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	defer func() {
		cancel()
		if err := <-dialed; err == nil {
			t.Error("Dial connected through two followers")
		}
	}()
	var hellos int
	select {
	case hellos = <-secondConnect:
	case <-time.After(5 * time.Second):
		t.Fatal("no second connect within 5s: the first is bouncing between the followers")
	}
	if hellos != 1+2 {
		t.Errorf("the first connect said hello %d times, want 3: the first server and two hops", hellos)
	}
	err := <-errs // logged before the back-off that led to the second connect
	if !errors.Is(err, baton.ErrNotLeader) || !strings.Contains(err.Error(), "not followed") {
		t.Fatalf("connect failed with %q, want ErrNotLeader, not followed", err)
	}
	t.Logf("the first connect failed with: %v", err)
}

// On a real three-server cluster, a client whose every connect asks a follower
// first (a stale view of who leads) is sent on to the leader, and keeps its lease
// when that leader stops. After the stop, the server asked may have just been
// elected itself: then no follow is needed, and the test says which it was.
func TestClientFollowsTheLeaderOfACluster(t *testing.T) {
	cl := testutil.StartCluster(t, 3, func(c *server.Config) { c.SessionTTL = 3 * time.Second })
	cl.AwaitLeader(t, 30*time.Second)
	var addrs []string
	for i := range 3 {
		addrs = append(addrs, cl.Server(i).TokenAddr())
	}
	var asked atomic.Int32
	resolve := func(context.Context) (string, error) {
		// A server that is up and does not lead, while there is one.
		for i := range 3 {
			if s := cl.Server(i); s != nil && i != cl.Leader() {
				return addrs[i], nil
			}
		}
		return "", errors.New("no server up")
	}
	follow := func(addr string) bool {
		asked.Add(1)
		for _, a := range addrs {
			if a == addr {
				return true
			}
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := baton.Dial(ctx, baton.Config{Resolve: resolve, Follow: follow, Node: "holder", Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatalf("Dial through a follower: %v", err)
	}
	defer c.Close()
	if got := c.Info().Server; !slices.Contains(addrs, got) || asked.Load() == 0 {
		t.Fatalf("session on %s after Follow was asked %d times, want it on a server of the cluster through a follower", got, asked.Load())
	}
	lease, err := c.Acquire(ctx, "counter")
	if err != nil {
		t.Fatalf("Acquire on the leader: %v", err)
	}
	// The server that holds the session leads (followers serve nobody); stop it.
	session, before := c.Info().Session, asked.Load()
	leader := slices.Index(addrs, c.Info().Server)

	t0 := time.Now()
	cl.Stop(leader)
	next := -1
	testutil.Eventually(t, 30*time.Second, fmt.Sprintf("session %x resumed on the next leader", session), func() bool {
		i, l := c.Info(), cl.Leader()
		next = l
		return l >= 0 && i.Connected && i.Session == session && i.Server == addrs[l]
	})
	t.Logf("s%d stopped; the session was resumed on s%d %s later; Follow was asked %d times", leader+1, next+1,
		time.Since(t0).Round(time.Millisecond), asked.Load()-before)
	if err := lease.Err(); err != nil {
		t.Fatalf("the lease ended across the failover: %v", err)
	}
	if err := lease.Release(ctx, baton.Record{Counter: 1}); err != nil {
		t.Fatalf("Release on the new leader: %v, want it accepted", err)
	}
}

// Config.Dial opens every connection, to Addr and to a leader Follow approved, with
// a quarter of DialTimeout; the client still names the addresses asked for (a
// worker that reaches each server through a proxy of its own maps them there).
func TestClientDialsThroughConfigDial(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	f := testutil.StartFollower(t, srv.TokenAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	const alias = "follower.invalid:7000" // reached only through Dial
	var asked []string
	var d net.Dialer
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		asked = append(asked, addr)
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > 500*time.Millisecond {
			t.Errorf("Dial(%s): deadline %v (%v), want within a quarter of DialTimeout", addr, dl, ok)
		}
		if addr == alias {
			addr = f.Addr()
		}
		return d.DialContext(ctx, "tcp", addr)
	}
	var told []string
	c, err := baton.Dial(ctx, baton.Config{Addr: alias, Node: "c1", Logger: testutil.Logger(t), Dial: dial,
		DialTimeout: 2 * time.Second,
		Follow:      func(addr string) bool { return addr == srv.TokenAddr() },
		OnConnect:   func(server string, err error) { told = append(told, fmt.Sprintf("%s %v", server, err)) }})
	if err != nil {
		t.Fatalf("Dial through Config.Dial: %v", err)
	}
	defer c.Close()
	if want := []string{alias, srv.TokenAddr()}; !slices.Equal(asked, want) {
		t.Errorf("Config.Dial asked for %q, want %q: the alias, then the leader the follower named", asked, want)
	}
	if got := c.Info().Server; got != srv.TokenAddr() {
		t.Errorf("session on %s, want the leader %s", got, srv.TokenAddr())
	}
	if want := []string{srv.TokenAddr() + " <nil>"}; !slices.Equal(told, want) {
		t.Errorf("OnConnect told %q, want %q", told, want)
	}
	lease, err := c.Acquire(ctx, "counter")
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := lease.Release(ctx, baton.Record{Counter: lease.Record.Counter + 1}); err != nil {
		t.Fatalf("Release: %v", err)
	}
}
