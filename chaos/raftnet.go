package main

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// raftNet stands in the servers' raft traffic, so that the nemesis can cut one
// server off from the others while its clients still reach it (cut-leader,
// cut-follower), cut the link between two servers while each still reaches the
// rest (cut-link), or send the connections meant for one server to another
// (misroute, misroute.go). Each server binds its BATON_RAFT_PORT and advertises the port
// of a proxy of the harness in front of it (BATON_RAFT_ADVERTISE_PORT): every raft
// connection to a server, from any other, passes that server's proxy. The proxy
// learns which server opened each connection (peerProcess), and the cuts (below)
// say which connections lose their bytes, both ways. The token ports are not
// behind these proxies at all. A blackhole, not a reset: nothing tells either
// side, not even a close (a FIN from one end is held, and counts as lost bytes);
// raft finds out by its timeouts. A heal closes the connections that lost bytes
// and are no longer blocked (their streams have holes), and raft dials again. A
// connection opened during a cut is still accepted (the proxy answers for the
// server), and then hears nothing.
type raftNet struct {
	proxies []*proxy // one per server, in the servers' order
	ports   []int    // the servers' own raft ports, in their order

	mu        sync.Mutex // guards cuts, misrouted and counts
	cuts      cuts
	misrouted map[int]int // server i's proxy sends new connections to server misrouted[i] (misroute.go)
	counts    raftNetStats
}

// raftNetStats counts the connections the proxies accepted, among them those
// whose opener the lookup did not find (a lookup that fails shows in the report),
// and those a misroute sent to another server than the one whose proxy took them.
type raftNetStats struct {
	Accepted  int
	Unknown   int
	Misrouted int
}

// cuts is what is cut in the servers' raft network now: whole servers, and links
// between two servers. Cuts of either kind overlap and heal independently: a
// connection stays blocked while any of them blocks it. raftNet guards it.
type cuts struct {
	servers map[int]bool  // cut off from every other server
	links   map[link]bool // the two ends do not reach each other, either way
}

// link is a pair of servers, the lower index first: a link is cut both ways.
type link [2]int

func linkOf(i, j int) link {
	if i > j {
		i, j = j, i
	}
	return link{i, j}
}

// blocked says whether a connection from server src (-1: not known) to server dst
// loses its bytes. A cut server loses everything to it (on its own proxy, whoever
// dialled) and from it (on the others' proxies, what it dialled); a cut link
// everything between its two ends, on both ends' proxies.
//
// A connection whose opener is not known may be the cut traffic, so it is blocked
// whenever it could be: while any server is cut (a cut server dials every other,
// so any proxy may see its connections: else it could still reach another
// whenever the lookup failed), and while a link to dst is cut (only a connection
// to one of the link's ends can be the link's). Not for a link elsewhere: a
// connection to the third server of a cut link is not the link's, and blocking it
// could cut the bridge the fault is about and take the leader's quorum. (It costs
// the others that connection until the heal; the report counts such connections.)
func (c *cuts) blocked(src, dst int) bool {
	switch {
	case c.servers[dst]:
		return true
	case src < 0:
		return len(c.servers) > 0 || c.touches(dst)
	case c.servers[src]:
		return true
	}
	return c.links[linkOf(src, dst)]
}

// touches says whether a cut link has server i at one end.
func (c *cuts) touches(i int) bool {
	for l := range c.links {
		if l[0] == i || l[1] == i {
			return true
		}
	}
	return false
}

// newRaftNet starts a proxy in front of each of the raft ports; from says which
// server opened a connection accepted there (-1: not known; the run's is
// peerProcess among the servers' processes).
func newRaftNet(raftPorts []int, from func(net.Conn) int) (*raftNet, error) {
	rn := &raftNet{ports: raftPorts, cuts: cuts{servers: map[int]bool{}, links: map[link]bool{}}, misrouted: map[int]int{}}
	counted := func(c net.Conn) int {
		src := from(c)
		rn.mu.Lock()
		defer rn.mu.Unlock()
		rn.counts.Accepted++
		if src < 0 {
			rn.counts.Unknown++
		}
		return src
	}
	for i := range raftPorts {
		p, err := startPolicyProxy(func() string { return rn.dialTarget(i) }, counted, func(src int) bool { return rn.blocked(src, i) })
		if err != nil {
			rn.close()
			return nil, err
		}
		rn.proxies = append(rn.proxies, p)
	}
	return rn, nil
}

// port is the port server i advertises as its raft port: its proxy's.
func (rn *raftNet) port(i int) int { return rn.proxies[i].ln.Addr().(*net.TCPAddr).Port }

// blocked says whether a connection from server src (-1: not known) to server dst
// loses its bytes now (cuts.blocked).
func (rn *raftNet) blocked(src, dst int) bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.cuts.blocked(src, dst)
}

// cut blackholes server i's raft traffic, to it and from it.
func (rn *raftNet) cut(i int) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.cuts.servers[i] = true
}

// heal ends cut(i).
func (rn *raftNet) heal(i int) {
	rn.mu.Lock()
	delete(rn.cuts.servers, i)
	rn.mu.Unlock()
	rn.healBlocked()
}

// cutLink blackholes the raft traffic between servers i and j, both ways; each
// still reaches every other server.
func (rn *raftNet) cutLink(i, j int) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.cuts.links[linkOf(i, j)] = true
}

// healLink ends cutLink(i, j).
func (rn *raftNet) healLink(i, j int) {
	rn.mu.Lock()
	delete(rn.cuts.links, linkOf(i, j))
	rn.mu.Unlock()
	rn.healBlocked()
}

// healBlocked closes, on every proxy, the connections that lost bytes and are no
// longer blocked; those another cut still blocks stay open, and keep losing
// every byte until it heals.
func (rn *raftNet) healBlocked() {
	for _, p := range rn.proxies {
		p.healBlocked()
	}
}

// stats counts the connections accepted so far.
func (rn *raftNet) stats() raftNetStats {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.counts
}

// cutOff lists the servers cut off now.
func (rn *raftNet) cutOff() []int {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	var out []int
	for i := range rn.proxies {
		if rn.cuts.servers[i] {
			out = append(out, i)
		}
	}
	return out
}

// linksCut lists the links cut now, in order.
func (rn *raftNet) linksCut() []link {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	var out []link
	for l := range rn.cuts.links {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b link) int { return cmp.Or(a[0]-b[0], a[1]-b[1]) })
	return out
}

func (rn *raftNet) close() {
	for _, p := range rn.proxies {
		p.close()
	}
}

// peerProcess says which of pids holds the other end of c, a loopback TCP
// connection accepted in this process: the socket whose local port is c's remote
// port and whose remote port is c's local port (/proc/net/tcp and tcp6), found among
// each process's descriptors (/proc/PID/fd). -1 if none does (it exited meanwhile,
// or is not one of pids). Loopback and Linux only, as the whole harness is; the
// servers dial with no source address, so a port is all that tells them apart.
func peerProcess(c net.Conn, pids []int) int {
	la, ok1 := c.LocalAddr().(*net.TCPAddr)
	ra, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return -1
	}
	inode := socketInode(ra.Port, la.Port)
	if inode == "" {
		return -1
	}
	link := "socket:[" + inode + "]"
	for i, pid := range pids {
		if pid <= 0 {
			continue
		}
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == link {
				return i
			}
		}
	}
	return -1
}

// socketInode is the inode of the TCP socket with that local and remote port, ""
// if none is listed.
func socketInode(local, remote int) string {
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(string(b), "\n")
		for _, line := range lines[1:] { // the first is a header
			fs := strings.Fields(line)
			if len(fs) < 10 {
				continue
			}
			if hexPort(fs[1]) == local && hexPort(fs[2]) == remote {
				return fs[9]
			}
		}
	}
	return ""
}

// hexPort reads the port of a /proc/net/tcp address, "0100007F:1F90".
func hexPort(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return -1
	}
	p, err := strconv.ParseUint(addr[i+1:], 16, 16)
	if err != nil {
		return -1
	}
	return int(p)
}
