package replica

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// tcpStream is raft's TCP stream layer with an advertised address that may be a host
// name. raft.NewTCPTransport insists on an IP address to advertise; a container's IP
// changes when it is recreated while its name (and its raft id, in its volume) stays,
// so baton advertises "server-1:7001" and every dial resolves it afresh.
type tcpStream struct {
	net.Listener
	advertise advertiseAddr
}

func (s *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", string(addr))
}

func (s *tcpStream) Addr() net.Addr { return s.advertise }

// advertiseAddr is a host:port that peers dial.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// Transport settings: a small pool of connections per peer, and how long one RPC
// may take before raft gives up on it (an InstallSnapshot streams, and is bounded
// separately by raft).
const (
	transportPool    = 3
	transportTimeout = 10 * time.Second
)

// openTransport listens on bind and returns raft's network transport over it,
// advertising advertise, or the listener's own address when that is empty.
func openTransport(bind, advertise string, logger hclog.Logger) (*raft.NetworkTransport, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("replica: listen on %s: %w", bind, err)
	}
	if advertise == "" {
		tcp := ln.Addr().(*net.TCPAddr)
		if tcp.IP == nil || tcp.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("replica: bind address %s is not one peers can dial; set Advertise", ln.Addr())
		}
		advertise = tcp.String()
	} else if host, port, err := net.SplitHostPort(advertise); err != nil || host == "" {
		ln.Close()
		return nil, fmt.Errorf("replica: Advertise %q must be host:port", advertise)
	} else if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		ln.Close()
		return nil, fmt.Errorf("replica: Advertise %q has a bad port", advertise)
	}
	stream := &tcpStream{Listener: ln, advertise: advertiseAddr(advertise)}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: transportPool,
		Timeout: transportTimeout,
		Logger:  logger,
	}), nil
}
