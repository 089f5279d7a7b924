package main

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
)

// A misroute is what a server's stale view of another's address does when servers
// are recreated (compose up --force-recreate) and swap addresses: the membership
// keeps a recreated server F's old address for a few seconds, and that address now
// belongs to another server G. A raft connection dialled for F in that window
// reaches G, which follows the same leader and would answer it; the server refuses
// a connection opened for another (internal/replica/opening.go, counted as
// baton_protocol_errors_total{reason="raft_misrouted"}), and the dialler dials
// again until the address is right.
//
// Here every raft connection to F passes F's proxy (raftnet.go), so the proxy
// stands for F's address: for the fault's length it sends new connections to G's
// own raft port instead of F's. At the start the proxies of both close the
// connections they hold, as the recreated containers did (F's, and G's, which is
// how G came to have F's old address), so that raft dials again: G's connections
// reach G, F's reach G too. At the end F's proxy sends new connections to F again
// and closes nothing: in a real network nothing closes a connection that reached
// the wrong server, so one that G accepted would live on, and F would not hear the
// leader again. That is the failure the fault is there to show (check 9).
//
// Closing G's connections matters for that: a connection for G that an earlier
// misroute of G sent to F, and that F accepted, would otherwise still carry G's
// traffic to F, and the two followers would each hear the leader through the
// other's connection, which no check can tell from health.

// misroute sends new connections through server f's proxy to server g's raft port,
// and closes those f's and g's proxies hold now.
func (rn *raftNet) misroute(f, g int) {
	rn.mu.Lock()
	rn.misrouted[f] = g
	rn.mu.Unlock()
	rn.proxies[f].closeAll()
	rn.proxies[g].closeAll()
}

// endMisroute sends new connections through f's proxy to f again. The connections
// opened meanwhile stay as they are, wherever they reached.
func (rn *raftNet) endMisroute(f int) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	delete(rn.misrouted, f)
}

// misroutedNow lists the misroutes in force, as [from, to] pairs in order of from.
func (rn *raftNet) misroutedNow() [][2]int {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	var out [][2]int
	for f := range rn.proxies {
		if g, ok := rn.misrouted[f]; ok {
			out = append(out, [2]int{f, g})
		}
	}
	return out
}

// dialTarget is where server i's proxy sends the connection it accepted now: i's
// own raft port, or, while i is misrouted, the other server's (counted).
func (rn *raftNet) dialTarget(i int) string {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	port := rn.ports[i]
	if g, ok := rn.misrouted[i]; ok {
		port = rn.ports[g]
		rn.counts.Misrouted++
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// misroutedMetric is the server's count of the raft connections it refused as meant
// for another server, in its /metrics.
const misroutedMetric = `baton_protocol_errors_total{reason="raft_misrouted"}`

// misroutedRefusals sums misroutedMetric over the servers, as each counts it since
// its last start: the servers' side of the connections the misroutes sent them.
func (c *cluster) misroutedRefusals() (int, error) {
	total := 0
	for _, s := range c.servers {
		resp, err := c.hc.Get("http://" + s.httpAddr + "/metrics")
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		n, err := metricValue(string(b), misroutedMetric)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", s.name, err)
		}
		total += int(n)
	}
	return total, nil
}

// metricValue reads one series from a Prometheus text exposition; 0 when it is
// absent (a counter nothing has incremented yet is not exposed).
func metricValue(text, series string) (float64, error) {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}
