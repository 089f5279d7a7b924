package replica

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/rawio"
)

// tcpStream is raft's TCP stream layer with an advertised address that may be a host
// name. raft.NewTCPTransport insists on an IP address to advertise; a container's IP
// changes when it is recreated while its name (and its raft id, in its volume) stays,
// so baton advertises "server-1:7001" and every dial resolves it afresh.
type tcpStream struct {
	net.Listener // an openingListener
	advertise    advertiseAddr
	dial         func(ctx context.Context, addr string) (net.Conn, error) // nil: TCP
	keyed        *keyed                                                   // nil: no key, plain TCP
	readsOpening func(addr string) bool                                   // nil: every server reads openings
	closed       <-chan struct{}                                          // closed with the listener: Dial stops trying again
}

// Dial opens a raft connection to the server raft knows at addr: TCP, TLS when
// keyed, and the opening that names addr (opening.go), which the server reached
// must answer as the one meant. Its reads and writes are raw system calls
// (internal/rawio): every AppendEntries and its answer is a write and a read on each
// side, and each ordinary one wakes the runtime's monitor thread once the process
// went idle between two, which it does between two handoffs. raft's NetworkTransport
// uses a connection from one goroutine at a time (a pooled one by the RPC that took
// it, an accepted one by its handler), as rawio.Conn requires; so does the
// openingListener on the accepting side.
//
// raft backs off from a follower after each failed request, doubling up to 10 s,
// and only a request that succeeds resets it: a follower out of reach for a few
// seconds was then sent no entries for as long again after it was back, and the
// loss of another server meanwhile stopped every write. So a dial that fails in a
// way that ends within seconds is made again, for up to redialWait, and raft counts
// one failure where it would have counted many: one that reached another server
// than the one meant (ErrMisrouted: the address the dialler found is stale, and the
// membership learns the new one within seconds), and one refused because nothing
// listens there yet (a server restarting; a host that has gone fails slowly on its
// own, by timeout).
func (s *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(min(timeout, redialWait))
	pause := 20 * time.Millisecond
	for {
		c, err := s.dialOnce(addr, timeout)
		if !passing(err) || time.Now().Add(pause).After(deadline) {
			return c, err
		}
		select {
		case <-time.After(pause):
		case <-s.closed:
			return nil, err
		}
		pause = min(2*pause, 320*time.Millisecond)
	}
}

// redialWait bounds how long Dial tries again after a failure that passes.
const redialWait = 2 * time.Second

// passing says whether a dial's failure is one that ends within seconds: a stale
// address, a server restarting.
func passing(err error) bool {
	return errors.Is(err, ErrMisrouted) || errors.Is(err, syscall.ECONNREFUSED)
}

// dialOnce opens one connection to addr: TCP, TLS when keyed, the opening.
func (s *tcpStream) dialOnce(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	var nc net.Conn
	var err error
	if s.dial != nil {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		nc, err = s.dial(ctx, string(addr))
	} else {
		d := net.Dialer{Timeout: timeout}
		nc, err = d.Dial("tcp", string(addr))
	}
	if err != nil {
		return nil, err
	}
	c := rawio.Wrap(nc)
	if s.keyed != nil {
		if c, err = s.keyed.dialed(c, timeout); err != nil {
			return nil, err
		}
	}
	if s.readsOpening != nil && !s.readsOpening(string(addr)) {
		return c, nil
	}
	if err := sendOpening(c, string(addr), timeout); err != nil {
		c.Close()
		// In TLS 1.3 the dialler's handshake ends before the server has checked its
		// proof: a refusal of it arrives here, as the answer.
		if s.keyed != nil && refusalReason(err) == ReasonAuth {
			return nil, fmt.Errorf("replica: raft TLS with %s: %w: %w (do both servers have the same key?)", addr, ErrUnproven, err)
		}
		return nil, err
	}
	return c, nil
}

func (s *tcpStream) Addr() net.Addr { return s.advertise }

// advertiseAddr is a host:port that peers dial.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// Transport settings: a small pool of connections per peer; how long one RPC may
// take before raft gives up on it (an InstallSnapshot streams, and is bounded
// separately by raft); and one AppendEntries in flight per follower, which turns
// pipelining off. hashicorp/raft v1.8.0's pipeline can wedge: when a follower
// answers Success=false, the sending side parks on a channel nobody drains, the
// follower gets heartbeats but no more entries, and Raft.Shutdown waits forever
// (raft issue 612; seen here as a Close that hung in a test). raft's own notes on
// MaxRPCsInFlight say pipelining brings little once applies are batched;
// docs/raft-store.md has the three-node figures with and without it.
const (
	transportPool     = 3
	transportTimeout  = 10 * time.Second
	transportInFlight = 1
)

// openTransport listens on cfg.BindAddr and returns raft's network transport over
// it, advertising cfg.Advertise, or the listener's own address when that is empty;
// with keyed, every connection is TLS between holders of the key (keyed.go).
func openTransport(cfg Config, keyed *keyed, logger hclog.Logger) (*raft.NetworkTransport, *tcpStream, error) {
	bind, advertise := cfg.BindAddr, cfg.Advertise
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, nil, fmt.Errorf("replica: listen on %s: %w", bind, err)
	}
	if advertise == "" {
		tcp := ln.Addr().(*net.TCPAddr)
		if tcp.IP == nil || tcp.IP.IsUnspecified() {
			ln.Close()
			return nil, nil, fmt.Errorf("replica: bind address %s is not one peers can dial; set Advertise", ln.Addr())
		}
		advertise = tcp.String()
	} else if host, port, err := net.SplitHostPort(advertise); err != nil || host == "" {
		ln.Close()
		return nil, nil, fmt.Errorf("replica: Advertise %q must be host:port", advertise)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		ln.Close()
		return nil, nil, fmt.Errorf("replica: Advertise %q has a bad port", advertise)
	} else if p == 0 { // the port bound: a host name with a port picked at listen
		advertise = net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	ol := listen(ln, keyed, advertise, cfg.OpensConnections, cfg.Hooks.Refused)
	stream := &tcpStream{Listener: ol, advertise: advertiseAddr(advertise),
		dial: cfg.Dial, keyed: keyed, readsOpening: cfg.ReadsOpening, closed: ol.closed}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:          stream,
		MaxPool:         transportPool,
		Timeout:         transportTimeout,
		MaxRPCsInFlight: transportInFlight,
		Logger:          logger,
	}), stream, nil
}

// ProvesKey checks that the server at addr (as a configuration names it) holds a
// raft key: a TLS handshake with it, in which it must prove one (ErrUnproven when
// it answers and does not; another error when it does not answer). Without Keys
// there is nothing to prove, and it answers nil. A leader asks it before it adds a server
// that the membership announced (the membership is not keyed by the raft key): an
// impostor added as a voter would count toward every quorum and answer none.
func (n *Node) ProvesKey(addr string, timeout time.Duration) error {
	if n.stream.keyed == nil {
		return nil
	}
	c, err := n.stream.dialOnce(raft.ServerAddress(addr), timeout) // a misrouted answer is asked again next round
	if err != nil {
		return err
	}
	return c.Close()
}
