package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// echoServer answers every byte with itself until the test ends, after greeting,
// if any, on every connection it accepts.
func echoServer(t *testing.T, greeting ...byte) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := c.Write(greeting); err == nil {
					_, _ = io.Copy(c, c)
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// echoes says whether a byte sent on c comes back within d; a timeout is no echo,
// and so is a closed connection.
func echoes(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	if _, err := c.Write([]byte("x")); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return err == nil
}

// closedWithin says whether c is closed by the other end within d.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b [64]byte
	for {
		_, err := c.Read(b[:])
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			return false
		default:
			return true
		}
	}
}

// testRaftNet starts a raftNet in front of ports whose origin lookup answers, in
// place of peerProcess, the source given to dial for each connection, in dial
// order; dial returns once the proxy has accepted the connection and taken its
// source.
func testRaftNet(t *testing.T, ports []int) (*raftNet, func(src, dst int) net.Conn) {
	t.Helper()
	var mu sync.Mutex
	var next []int // the source of each connection the proxies will accept, in order
	rn, err := newRaftNet(ports, func(net.Conn) int {
		mu.Lock()
		defer mu.Unlock()
		src := next[0]
		next = next[1:]
		return src
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rn.close)
	dial := func(src, dst int) net.Conn {
		t.Helper()
		mu.Lock()
		next = append(next, src)
		mu.Unlock()
		c, err := net.Dial("tcp", rn.proxies[dst].addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		deadline := time.Now().Add(5 * time.Second)
		for { // accepted, and its source taken, before the next dial (polling with a deadline)
			mu.Lock()
			taken := len(next) == 0
			mu.Unlock()
			if taken {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d→%d: not accepted within 5s", src, dst)
			}
			time.Sleep(time.Millisecond)
		}
		return c
	}
	return rn, dial
}

// silence is how long a negative waits: no echo, or no close, for this long.
const silence = 300 * time.Millisecond

// TestRaftNetCut: cut(i) blackholes every connection to server i and every one it
// opened to another, both ways, new ones too, and nothing else; heal(i) closes
// those that lost bytes, and new connections pass again.
func TestRaftNetCut(t *testing.T) {
	rn, dial := testRaftNet(t, []int{echoServer(t), echoServer(t), echoServer(t)})
	toCut, fromCut, others := dial(1, 0), dial(0, 2), dial(1, 2)
	for name, c := range map[string]net.Conn{"1→0": toCut, "0→2": fromCut, "1→2": others} {
		if !echoes(t, c, 5*time.Second) {
			t.Fatalf("%s: no echo with nothing cut", name)
		}
	}
	rn.cut(0)
	if got := rn.cutOff(); !slices.Equal(got, []int{0}) {
		t.Fatalf("cut off %v, want [0]", got)
	}
	if echoes(t, toCut, silence) {
		t.Error("1→0 passes while 0 is cut off")
	}
	if echoes(t, fromCut, silence) {
		t.Error("0→2 passes while 0 is cut off")
	}
	if !echoes(t, others, 5*time.Second) {
		t.Error("1→2 blocked while only 0 is cut off")
	}
	fresh := dial(2, 0) // opened during the cut
	if echoes(t, fresh, silence) {
		t.Error("a new 2→0 passes while 0 is cut off")
	}
	rn.heal(0)
	for name, c := range map[string]net.Conn{"1→0": toCut, "0→2": fromCut, "2→0 (new)": fresh} {
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s lost bytes to the cut and is still open after heal", name)
		}
	}
	if !echoes(t, others, 5*time.Second) {
		t.Error("1→2 broken by the heal")
	}
	if again := dial(1, 0); !echoes(t, again, 5*time.Second) {
		t.Error("a new 1→0 blocked after heal")
	}
}

// TestRaftNetUnknownOrigin: a connection whose opener is not known may have been
// opened by the cut server, so it loses its bytes while any server is cut, even to
// a server that is not (else a cut leader could still reach a follower), and
// passes while none is; at the heal it closes, as every connection that lost
// bytes does. New ones are blocked too. The net counts the connections it
// accepted and those of unknown origin, so that a lookup that fails shows in the
// report.
func TestRaftNetUnknownOrigin(t *testing.T) {
	rn, dial := testRaftNet(t, []int{echoServer(t), echoServer(t), echoServer(t)})
	before, known := dial(-1, 1), dial(2, 1)
	if !echoes(t, before, 5*time.Second) || !echoes(t, known, 5*time.Second) {
		t.Fatal("no echo with nothing cut")
	}
	rn.cut(0)
	if echoes(t, before, silence) {
		t.Error("?→1, opened before the cut, passes while 0 is cut off")
	}
	during := dial(-1, 2)
	if echoes(t, during, silence) {
		t.Error("a new ?→2 passes while 0 is cut off")
	}
	if !echoes(t, known, 5*time.Second) {
		t.Error("2→1 blocked while only 0 is cut off")
	}
	rn.heal(0)
	for name, c := range map[string]net.Conn{"?→1": before, "?→2 (new)": during} {
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s lost bytes to the cut and is still open after heal", name)
		}
	}
	if after := dial(-1, 1); !echoes(t, after, 5*time.Second) {
		t.Error("a new ?→1 blocked with nothing cut")
	}
	if got := rn.stats(); got != (raftNetStats{Accepted: 4, Unknown: 3}) {
		t.Errorf("stats %+v, want 4 accepted, 3 of unknown origin", got)
	}
}

// TestRaftNetBlocked: which connections lose their bytes, src→dst ("?" an opener
// not known), after a sequence of cuts and heals of servers and links, among three
// servers. A cut server loses everything to and from it, a cut link everything
// between its ends, both ways; an unknown opener is blocked while any server is
// cut, and towards an end of a cut link. Cuts overlap and heal independently.
func TestRaftNetBlocked(t *testing.T) {
	cut := func(i int) func(*raftNet) { return func(rn *raftNet) { rn.cut(i) } }
	heal := func(i int) func(*raftNet) { return func(rn *raftNet) { rn.heal(i) } }
	cutLink := func(i, j int) func(*raftNet) { return func(rn *raftNet) { rn.cutLink(i, j) } }
	healLink := func(i, j int) func(*raftNet) { return func(rn *raftNet) { rn.healLink(i, j) } }
	server0 := []string{"0→1", "0→2", "1→0", "2→0", "?→0", "?→1", "?→2"}
	link01 := []string{"0→1", "1→0", "?→0", "?→1"}
	cases := []struct {
		name    string
		ops     []func(*raftNet)
		blocked []string // every src→dst that loses its bytes
	}{
		{"nothing cut", nil, nil},
		{"server 0 cut", []func(*raftNet){cut(0)}, server0},
		{"link 0-1 cut", []func(*raftNet){cutLink(0, 1)}, link01},
		{"link 1-0 is link 0-1", []func(*raftNet){cutLink(1, 0)}, link01},
		{"the leader's links to both followers", []func(*raftNet){cutLink(0, 1), cutLink(0, 2)},
			[]string{"0→1", "0→2", "1→0", "2→0", "?→0", "?→1", "?→2"}},
		{"link 0-1 and server 2 cut", []func(*raftNet){cutLink(0, 1), cut(2)},
			[]string{"0→1", "0→2", "1→0", "1→2", "2→0", "2→1", "?→0", "?→1", "?→2"}},
		{"server 0 healed, its link to 1 still cut", []func(*raftNet){cutLink(0, 1), cut(0), heal(0)}, link01},
		{"link healed, server 0 still cut", []func(*raftNet){cut(0), cutLink(0, 1), healLink(1, 0)}, server0},
		{"a heal of what is not cut changes nothing", []func(*raftNet){cutLink(0, 1), heal(0), healLink(0, 2)}, link01},
		{"everything healed", []func(*raftNet){cut(2), cutLink(0, 1), heal(2), healLink(0, 1)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rn, err := newRaftNet(nil, func(net.Conn) int { return -1 }) // the policy alone, no proxies
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range tc.ops {
				op(rn)
			}
			var got []string
			for src := -1; src < 3; src++ {
				for dst := range 3 {
					if src == dst || !rn.blocked(src, dst) {
						continue
					}
					name := fmt.Sprintf("%d→%d", src, dst)
					if src < 0 {
						name = fmt.Sprintf("?→%d", dst)
					}
					got = append(got, name)
				}
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.blocked))
			if !slices.Equal(got, want) {
				t.Errorf("blocked %v, want %v", got, want)
			}
		})
	}
}

// TestRaftNetCutLink: cutLink(i, j) blackholes the connections between i and j,
// both ways, new ones too, and those of unknown origin to either; each still
// reaches the third server, and the third server both (the bridge). healLink
// closes those that lost bytes and leaves the others open.
func TestRaftNetCutLink(t *testing.T) {
	rn, dial := testRaftNet(t, []int{echoServer(t), echoServer(t), echoServer(t)})
	cut := map[string]net.Conn{"0→1": dial(0, 1), "1→0": dial(1, 0), "?→0": dial(-1, 0)}
	bridge := map[string]net.Conn{"0→2": dial(0, 2), "1→2": dial(1, 2), "2→0": dial(2, 0), "2→1": dial(2, 1), "?→2": dial(-1, 2)}
	for name, c := range cut {
		if !echoes(t, c, 5*time.Second) {
			t.Fatalf("%s: no echo with nothing cut", name)
		}
	}
	for name, c := range bridge {
		if !echoes(t, c, 5*time.Second) {
			t.Fatalf("%s: no echo with nothing cut", name)
		}
	}
	rn.cutLink(1, 0)
	if got := rn.linksCut(); !slices.Equal(got, []link{{0, 1}}) {
		t.Fatalf("links cut %v, want [0-1]", got)
	}
	if got := rn.cutOff(); len(got) != 0 {
		t.Fatalf("cut off %v, want no server", got)
	}
	cut["1→0 (new)"] = dial(1, 0)
	for name, c := range cut {
		if echoes(t, c, silence) {
			t.Errorf("%s passes while the link 0-1 is cut", name)
		}
	}
	for name, c := range bridge {
		if !echoes(t, c, 5*time.Second) {
			t.Errorf("%s blocked while only the link 0-1 is cut", name)
		}
	}
	rn.healLink(0, 1)
	for name, c := range cut {
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s lost bytes to the cut and is still open after heal", name)
		}
	}
	for name, c := range bridge {
		if !echoes(t, c, 5*time.Second) {
			t.Errorf("%s broken by the heal", name)
		}
	}
	if again := dial(0, 1); !echoes(t, again, 5*time.Second) {
		t.Error("a new 0→1 blocked after heal")
	}
}

// TestRaftNetOverlappingCuts: a connection blocked by a server cut and a link cut
// at once stays blocked, and open, until both have healed; one blocked by the
// server cut alone closes at its heal.
func TestRaftNetOverlappingCuts(t *testing.T) {
	rn, dial := testRaftNet(t, []int{echoServer(t), echoServer(t), echoServer(t)})
	both, serverOnly := dial(0, 1), dial(0, 2)
	if !echoes(t, both, 5*time.Second) || !echoes(t, serverOnly, 5*time.Second) {
		t.Fatal("no echo with nothing cut")
	}
	rn.cut(0)
	rn.cutLink(0, 1)
	if echoes(t, both, silence) || echoes(t, serverOnly, silence) {
		t.Fatal("a connection from 0 passes while 0 is cut off")
	}
	rn.heal(0)
	if !closedWithin(serverOnly, 5*time.Second) {
		t.Error("0→2 lost bytes to the server cut and is still open after its heal")
	}
	if closedWithin(both, silence) {
		t.Error("0→1 closed while the link 0-1 is still cut")
	}
	if echoes(t, both, silence) {
		t.Error("0→1 passes while the link 0-1 is still cut")
	}
	rn.healLink(0, 1)
	if !closedWithin(both, 5*time.Second) {
		t.Error("0→1 lost bytes and is still open after both heals")
	}
}

// acceptServer accepts connections on loopback and hands each to the test, which
// closes it.
func acceptServer(t *testing.T) (int, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, accepted
}

// TestRaftNetCutHidesClose: a cut is a blackhole for a close too. When either end
// of a blocked connection closes it, the other end learns nothing until the heal,
// which closes it (it lost the close, as bytes). A connection to a server that is
// down, opened while the cut hides it, is closed at the heal, not at once.
func TestRaftNetCutHidesClose(t *testing.T) {
	port, accepted := acceptServer(t)
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downPort := down.Addr().(*net.TCPAddr).Port
	down.Close() // nothing listens there: a server that is down
	rn, dial := testRaftNet(t, []int{port, echoServer(t), downPort})
	serverEnd := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("the proxy did not connect to the server")
			return nil
		}
	}
	// 1→0 closed by 1 (the dialler), 1→0 closed by 0, 0→2 with 2 down.
	byDialler, byServer := dial(1, 0), dial(1, 0)
	dEnd, sEnd := serverEnd(), serverEnd()
	defer dEnd.Close()
	rn.cut(0)
	toDown := dial(0, 2)
	byDialler.Close()
	sEnd.Close()
	for name, c := range map[string]net.Conn{"server end of 1→0 closed by 1": dEnd, "1→0 closed by 0": byServer, "0→2, 2 down": toDown} {
		if closedWithin(c, silence) {
			t.Errorf("%s: closed during the cut", name)
		}
	}
	rn.heal(0)
	for name, c := range map[string]net.Conn{"server end of 1→0 closed by 1": dEnd, "1→0 closed by 0": byServer, "0→2, 2 down": toDown} {
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s: still open after the heal", name)
		}
	}
}

// TestPeerProcess: the process at the other end of a loopback connection is found
// by its port, among the processes given; none when it is not one of them.
func TestPeerProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp:", err)
	}
	if got := peerProcess(in, []int{0, 1 << 30, os.Getpid()}); got != 2 {
		t.Errorf("peerProcess = %d, want 2 (this process)", got)
	}
	if got := peerProcess(in, []int{1 << 30}); got != -1 {
		t.Errorf("peerProcess among others = %d, want -1", got)
	}
}

// TestNemesisCutLeader: cut-leader aims at the leader the watcher knows, cuts its
// raft traffic for the fault's length and heals it; the leader is busy meanwhile,
// so leader faults that come then are skipped, and so is one while no leader is
// known, and one against a server alone. Faults are recorded as such.
func TestNemesisCutLeader(t *testing.T) {
	rn, c, h, n := raftNemesis(t, func(int) int { return 1 })
	faults := []fault{
		{ID: 1, At: 0, Kind: cutLeader, Dur: 400 * time.Millisecond},
		{ID: 2, At: 50 * time.Millisecond, Kind: cutLeader, Dur: time.Second},      // s2 busy
		{ID: 3, At: 60 * time.Millisecond, Kind: pauseLeader, Dur: time.Second},    // s2 busy
		{ID: 4, At: 70 * time.Millisecond, Kind: restartAll, Dur: time.Second},     // s2 busy
		{ID: 5, At: 500 * time.Millisecond, Kind: cutLeader, Dur: time.Second},     // no leader known
		{ID: 6, At: 510 * time.Millisecond, Kind: cutLeader, Dur: 2 * time.Second}, // a server alone
	}
	runUntilCut(t, n, faults[:4], "s2 cut off", func() bool { return slices.Equal(rn.cutOff(), []int{1}) })
	if got := rn.cutOff(); len(got) != 0 {
		t.Errorf("cut off %v after the run, want none", got)
	}
	c.leader = -1
	n.run(context.Background(), faults[4:5])
	c.leader, c.raft = 0, nil
	n.run(context.Background(), faults[5:])
	if n.applied != 1 || n.byKind[cutLeader] != 1 || n.skipped != 5 || len(n.busy) != 0 {
		t.Errorf("applied %d (%v), skipped %d, busy %v; want 1 cut-leader, 5, none", n.applied, n.byKind, n.skipped, n.busy)
	}
	checkFaultHistory(t, h, func(e event.Event) string { return strings.Join([]string{e.Kind, e.Op, e.Target, e.Err}, " ") }, []string{
		"fault cut-leader s2 aimed at the leader",
		"fault cut-leader  skipped: s2 busy",
		"fault pause-leader  skipped: s2 busy",
		"fault restart-all  skipped: s2 busy",
		"heal cut-leader s2 ",
		"fault cut-leader  skipped: no leader known",
		"fault cut-leader  skipped: a server alone has no raft traffic",
	})
}

// TestNemesisCutFollowerAndLink: cut-follower cuts the Follower-th server that
// does not lead, cut-link the link between the leader and such a server, each for
// the fault's length; the servers under a fault (the follower; both ends of the
// link) are busy meanwhile. Both are skipped while no leader is known and with a
// server alone, and recorded with the leader's term.
func TestNemesisCutFollowerAndLink(t *testing.T) {
	rn, c, h, n := raftNemesis(t, func(i int) int { return i + 1 })
	faults := []fault{
		// s2 leads; the servers that do not are s1 and s3
		{ID: 1, At: 0, Kind: cutFollower, Follower: 1, Dur: 1500 * time.Millisecond},                  // s3
		{ID: 2, At: 100 * time.Millisecond, Kind: cutLink, Follower: 0, Dur: 1500 * time.Millisecond}, // s2-s1
		{ID: 3, At: 150 * time.Millisecond, Kind: cutFollower, Follower: 0, Dur: time.Second},         // s1 busy
		{ID: 4, At: 200 * time.Millisecond, Kind: killLeader, Dur: time.Second},                       // s2 busy
		{ID: 5, At: 0, Kind: cutFollower, Dur: time.Second},                                           // no leader known
		{ID: 6, At: 0, Kind: cutLink, Dur: time.Second},                                               // no leader known
		{ID: 7, At: 0, Kind: cutLink, Dur: time.Second},                                               // a server alone
	}
	runUntilCut(t, n, faults[:4], "s3 and the link s1-s2 cut", func() bool {
		return slices.Equal(rn.cutOff(), []int{2}) && slices.Equal(rn.linksCut(), []link{{0, 1}})
	})
	if len(rn.cutOff()) != 0 || len(rn.linksCut()) != 0 {
		t.Errorf("cut off %v, links %v after the run, want none", rn.cutOff(), rn.linksCut())
	}
	c.leader = -1
	n.run(context.Background(), faults[4:6])
	c.leader, c.raft = 0, nil
	n.run(context.Background(), faults[6:])
	if n.applied != 2 || n.byKind[cutFollower] != 1 || n.byKind[cutLink] != 1 || n.skipped != 5 || len(n.busy) != 0 {
		t.Errorf("applied %d (%v), skipped %d, busy %v; want a cut-follower and a cut-link, 5, none", n.applied, n.byKind, n.skipped, n.busy)
	}
	checkFaultHistory(t, h, faultWithInstance, []string{
		"fault cut-follower s3 s3#3 aimed at a follower",
		"fault cut-link s2-s1 s1#1 between the leader and a follower",
		"fault cut-follower  #0 skipped: s1 busy",
		"fault kill-leader  #0 skipped: s2 busy",
		"heal cut-follower s3 s3#3 ",
		"heal cut-link s2-s1 s1#1 ",
		"fault cut-follower  #0 skipped: no leader known",
		"fault cut-link  #0 skipped: no leader known",
		"fault cut-link  #0 skipped: a server alone has no raft traffic",
	})
}

// TestReportRaftConnections: the report says how many raft connections the
// proxies accepted, of how many the opener was not known, and how many a misroute
// sent to another server; with a server alone, which has no raft proxies, nothing.
func TestReportRaftConnections(t *testing.T) {
	cfg := defaultRunConfig()
	var b bytes.Buffer
	report(&b, cfg, &runResult{Raft: &raftNetStats{Accepted: 12, Unknown: 2, Misrouted: 3}, MisroutedRefused: 5})
	for _, want := range []string{"raft connections through the proxies 12, of unknown origin 2", "sent to another server by a misroute 3",
		"refused as meant for another (raft_misrouted, their counters at the end, since each one's last start) 5"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report:\n%s\nwant a line with %q", b.String(), want)
		}
	}
	b.Reset()
	cfg.Servers = 1
	report(&b, cfg, &runResult{})
	if strings.Contains(b.String(), "raft connections") {
		t.Errorf("report of a server alone:\n%s\nwant no raft connections", b.String())
	}
}

// raftNemesis is a nemesis over three echo servers behind a raft net, s2 leading in
// term 7; inst numbers each server's process. The raft net closes at cleanup.
func raftNemesis(t *testing.T, inst func(i int) int) (*raftNet, *cluster, *history, *nemesis) {
	t.Helper()
	rn, err := newRaftNet([]int{echoServer(t), echoServer(t), echoServer(t)}, func(net.Conn) int { return -1 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rn.close)
	h := newHistory(&bytes.Buffer{})
	c := &cluster{h: h, raft: rn, leader: 1, term: 7, seen: -1}
	for i, name := range []string{"s1", "s2", "s3"} {
		c.servers = append(c.servers, &serverSlot{idx: i, name: name, cur: &proc{name: name, inst: inst(i)}})
	}
	return rn, c, h, &nemesis{c: c, h: h, start: time.Now(), log: t.Logf}
}

// runUntilCut runs faults on n in the background, waits up to 5 s until cut says
// the raft net is cut as they want (what names it), then until the run returns.
func runUntilCut(t *testing.T, n *nemesis, faults []fault, what string, cut func() bool) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.run(context.Background(), faults)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !cut() { // polling with a deadline
		if time.Now().After(deadline) {
			t.Fatalf("not %s within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the nemesis did not return")
	}
}

// checkFaultHistory checks h's fault and heal events, each as line gives it, against
// want; a fault that was applied must carry the leader's term, 7.
// faultWithInstance is a fault or heal event's line for checkFaultHistory, with the
// process it hit: kind, op, target, worker#instance, and what it says.
func faultWithInstance(e event.Event) string {
	return fmt.Sprintf("%s %s %s %s#%d %s", e.Kind, e.Op, e.Target, e.W, e.Inst, e.Err)
}

func checkFaultHistory(t *testing.T, h *history, line func(event.Event) string, want []string) {
	t.Helper()
	var lines []string
	for _, e := range h.snapshot() {
		switch e.Kind {
		case event.Fault, event.Heal:
			lines = append(lines, line(e))
			if e.Kind == event.Fault && e.Err != "" && !strings.HasPrefix(e.Err, "skipped") && e.Term != 7 {
				t.Errorf("fault %d: term %d, want the leader's, 7", e.ID, e.Term)
			}
		}
	}
	if !slices.Equal(lines, want) {
		t.Errorf("history:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
