package main

import (
	"context"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// identServer sends id on every connection it accepts, then echoes every byte,
// until the test ends: a test reads which server a connection reached.
func identServer(t *testing.T, id byte) int { return echoServer(t, id) }

// reached reads which server c reached (identServer), within 5 s.
func reached(t *testing.T, c net.Conn) byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("no greeting from the server reached: %v", err)
	}
	return b[0]
}

// TestRaftNetMisroute: misroute(1, 2) closes the connections through the proxies
// of servers 1 and 2 (both recreated) and sends new ones for 1 to server 2's
// port; the third proxy is untouched. endMisroute(1) sends new ones to server 1
// again and closes nothing: a connection that reached server 2 meanwhile lives on,
// as in a real network. The net counts the connections it misrouted.
func TestRaftNetMisroute(t *testing.T) {
	rn, dial := testRaftNet(t, []int{identServer(t, '0'), identServer(t, '1'), identServer(t, '2')})
	toF, toG, other := dial(0, 1), dial(0, 2), dial(1, 0)
	for name, tc := range map[string]struct {
		c    net.Conn
		want byte
	}{"0→1": {toF, '1'}, "0→2": {toG, '2'}, "1→0": {other, '0'}} {
		if got := reached(t, tc.c); got != tc.want {
			t.Fatalf("%s reached server %c with nothing misrouted", name, got)
		}
	}
	rn.misroute(1, 2)
	if got := rn.misroutedNow(); !slices.Equal(got, [][2]int{{1, 2}}) {
		t.Fatalf("misrouted %v, want [1→2]", got)
	}
	for name, c := range map[string]net.Conn{"0→1": toF, "0→2": toG} {
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s, opened before the misroute, still open after it began", name)
		}
	}
	if !echoes(t, other, 5*time.Second) {
		t.Error("1→0 broken by a misroute of 1 to 2")
	}
	if got := reached(t, dial(0, 2)); got != '2' {
		t.Errorf("a new connection for 2 during the misroute reached server %c, want 2", got)
	}
	during := dial(0, 1)
	if got := reached(t, during); got != '2' {
		t.Errorf("a new connection for 1 during the misroute reached server %c, want 2", got)
	}
	rn.endMisroute(1)
	if len(rn.misroutedNow()) != 0 {
		t.Errorf("misrouted %v after the end, want none", rn.misroutedNow())
	}
	if !echoes(t, during, 5*time.Second) {
		t.Error("the connection that reached 2 during the misroute was closed or broken at its end")
	}
	if got := reached(t, dial(0, 1)); got != '1' {
		t.Errorf("a new connection for 1 after the misroute reached server %c, want 1", got)
	}
	if got := rn.stats(); got != (raftNetStats{Accepted: 6, Misrouted: 1}) {
		t.Errorf("stats %+v, want 6 accepted, 1 misrouted", got)
	}
}

// TestNemesisMisroute: misroute aims at the Follower-th server that does not lead
// and sends its new raft connections to the other one for the fault's length;
// both are busy meanwhile. It is skipped while no leader is known, with a server
// alone, and with no other follower (two servers), and recorded with the leader's
// term and the server the connections reach.
func TestNemesisMisroute(t *testing.T) {
	rn, c, h, n := raftNemesis(t, func(i int) int { return i + 1 })
	faults := []fault{
		// s2 leads; the servers that do not are s1 and s3
		{ID: 1, At: 0, Kind: misroute, Follower: 1, Dur: 1500 * time.Millisecond},             // s3, reaches s1
		{ID: 2, At: 100 * time.Millisecond, Kind: cutFollower, Follower: 0, Dur: time.Second}, // s1 busy
		{ID: 3, At: 150 * time.Millisecond, Kind: misroute, Follower: 0, Dur: time.Second},    // s1 busy
		{ID: 4, At: 0, Kind: misroute, Dur: time.Second},                                      // no leader known
		{ID: 5, At: 0, Kind: misroute, Dur: time.Second},                                      // a server alone
		{ID: 6, At: 0, Kind: misroute, Dur: time.Second},                                      // two servers
	}
	runUntilCut(t, n, faults[:3], "s3 misrouted to s1", func() bool { return slices.Equal(rn.misroutedNow(), [][2]int{{2, 0}}) })
	if got := rn.misroutedNow(); len(got) != 0 {
		t.Errorf("misrouted %v after the run, want none", got)
	}
	c.leader = -1
	n.run(context.Background(), faults[3:4])
	c.leader, c.raft = 1, nil
	n.run(context.Background(), faults[4:5])
	c.raft, c.servers = rn, c.servers[:2]
	n.run(context.Background(), faults[5:])
	if n.applied != 1 || n.byKind[misroute] != 1 || n.skipped != 5 || len(n.busy) != 0 {
		t.Errorf("applied %d (%v), skipped %d, busy %v; want 1 misroute, 5, none", n.applied, n.byKind, n.skipped, n.busy)
	}
	checkFaultHistory(t, h, faultWithInstance, []string{
		"fault misroute s3 s3#3 aimed at a follower; reaches s1",
		"fault cut-follower  #0 skipped: s1 busy",
		"fault misroute  #0 skipped: s1 busy",
		"heal misroute s3 s3#3 ",
		"fault misroute  #0 skipped: no leader known",
		"fault misroute  #0 skipped: a server alone has no raft traffic",
		"fault misroute  #0 skipped: no other follower to misroute to",
	})
}

// TestMetricValue: a series is read from the servers' /metrics text, and one that is
// absent (nothing counted yet) is 0.
func TestMetricValue(t *testing.T) {
	text := `# HELP baton_protocol_errors_total Bad input from the network, by reason.
# TYPE baton_protocol_errors_total counter
baton_protocol_errors_total{reason="raft_handshake_eof"} 2
baton_protocol_errors_total{reason="raft_misrouted"} 17
`
	cases := []struct {
		text, series string
		want         float64
	}{
		{text, misroutedMetric, 17},
		{text, `baton_protocol_errors_total{reason="raft_handshake_eof"}`, 2},
		{text, `baton_protocol_errors_total{reason="raft_auth"}`, 0},
		{"", misroutedMetric, 0},
	}
	for _, tc := range cases {
		got, err := metricValue(tc.text, tc.series)
		if err != nil || got != tc.want {
			t.Errorf("metricValue(%s) = %v, %v; want %v", tc.series, got, err, tc.want)
		}
	}
}
