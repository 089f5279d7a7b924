package replica

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// A raft connection is dialled to an address, and raft trusts that whoever answers
// there is the server it meant: hashicorp/raft's requests name their sender, never
// their target. baton finds a server's address by its name in the membership at
// every dial, and the membership keeps a name's old address until it has declared
// the old instance dead. When servers are recreated and one gets another's old
// address, a dial in that window reaches the wrong server, which follows the same
// leader and answers; raft keeps the connection, and sends one server's entries
// and heartbeats to another for as long as it lives. The server meant hears no
// leader (with three servers, a server lost); with five, a leader could count one
// acknowledgement twice and commit an entry that only two of five hold.
//
// So a dialler opens each connection with the address it meant (after TLS, when
// keyed: nothing between the two can change it), and the server that reads it
// answers whether it is that server; raft is handed only a connection meant for
// the server that accepted it. A server is named by the host it advertises (baton's
// node name, unique in a cluster), which it keeps across a new address or port:
// the port raft knows may be an old one, which the dialler replaced with the one the
// membership publishes.
//
// Opening, from the dialler: openingMagic, ConnVersion, the address meant (two bytes
// of length, then the address). Answer: openingOK, or openingOther and the address
// of the server reached. A connection that starts otherwise is raft's own (its first
// byte is a request type, 0 to 4), from a server of an earlier version, which does
// not open its connections; it is handed to raft as it came (an upgrade in
// progress). A dialler opens a connection only to a server that reads openings
// (Config.ReadsOpening): one of an earlier version would take it for a request it
// does not know. So a dialler whose view of a server is stale in its version too
// (servers upgraded by recreating them) sends no opening; a server refuses such a
// connection from a dialler it knows to open its connections
// (Config.OpensConnections): that dialler took it for a server of an earlier
// version, which it is not.

// ConnVersion is the raft connection format this version reads: connections open
// with the address they are meant for. Servers publish it in the membership.
const ConnVersion = 1

const (
	openingMagic   = 0xBA
	openingOK      = 0
	openingOther   = 1
	maxOpeningAddr = 512 // a host name is at most 253 bytes
)

// ErrMisrouted: a raft connection reached another server than the one it was
// meant for (its address changed hands, and the dialler's view of it is stale).
var ErrMisrouted = errors.New("raft connection misrouted")

// errOpening: an opening (or its answer) this version cannot read.
var errOpening = errors.New("a raft connection opening this version cannot read")

// sendOpening opens c, a connection dialled for target, and reads the answer, all
// within timeout (at most handshakeTimeout).
func sendOpening(c net.Conn, target string, timeout time.Duration) error {
	if len(target) > maxOpeningAddr {
		return fmt.Errorf("replica: raft address %.40q... is longer than %d bytes", target, maxOpeningAddr)
	}
	if timeout <= 0 || timeout > handshakeTimeout {
		timeout = handshakeTimeout
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(appendAddr([]byte{openingMagic, ConnVersion}, target)); err != nil {
		return err
	}
	var answer [1]byte
	if _, err := io.ReadFull(c, answer[:]); err != nil {
		return err
	}
	switch answer[0] {
	case openingOK:
		return nil
	case openingOther:
		reached, err := readAddr(c)
		if err != nil {
			return err
		}
		return fmt.Errorf("replica: raft connection for %s reached %s: %w (the address changed hands, and this server's view of it is stale; it dials again)",
			target, reached, ErrMisrouted)
	}
	return fmt.Errorf("%w: answer %d", errOpening, answer[0])
}

// errUnopened: the peer closed the connection before its first byte, after TLS if
// keyed (a probe of the port, a peer checking the key): nothing to refuse.
var errUnopened = errors.New("closed before its opening")

// acceptOpening reads c's opening and answers it. It returns the connection to hand
// raft: c, or, from a server that does not open its connections, c with the byte
// read to tell raft's own request from an opening put back. dialerOpens says
// whether the dialler is known to open its connections.
func acceptOpening(c net.Conn, self string, dialerOpens func() bool) (net.Conn, error) {
	var head [2]byte
	if n, err := io.ReadFull(c, head[:1]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, errUnopened
		}
		return nil, err
	}
	if head[0] != openingMagic {
		if dialerOpens() {
			return nil, fmt.Errorf("raft connection without an opening reached this server, %s, from a server that opens its connections: %w (it took this server for one of an earlier version: its view of the address is stale)",
				self, ErrMisrouted)
		}
		return &replayed{Conn: c, first: head[0]}, nil
	}
	if _, err := io.ReadFull(c, head[1:]); err != nil {
		return nil, err
	}
	if head[1] != ConnVersion {
		return nil, fmt.Errorf("%w: version %d", errOpening, head[1])
	}
	target, err := readAddr(c)
	if err != nil {
		return nil, err
	}
	if !meantFor(target, self) {
		_, _ = c.Write(appendAddr([]byte{openingOther}, self))
		return nil, fmt.Errorf("raft connection for %s reached this server, %s: %w (the dialler's view of the address is stale)",
			target, self, ErrMisrouted)
	}
	if _, err := c.Write([]byte{openingOK}); err != nil {
		return nil, err
	}
	return c, nil
}

// meantFor says whether a connection opened for target reached the server that
// advertises self: the same host, whatever the ports (the dialler found the port;
// the host is what names a server). Host names are compared as DNS does, without
// case; IP addresses as addresses.
func meantFor(target, self string) bool {
	th, _, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	sh, _, err := net.SplitHostPort(self)
	if err != nil {
		return false
	}
	tip, sip := net.ParseIP(th), net.ParseIP(sh)
	if tip == nil && sip == nil {
		return strings.EqualFold(th, sh)
	}
	return tip != nil && tip.Equal(sip)
}

func appendAddr(b []byte, addr string) []byte {
	return append(append(b, byte(len(addr)>>8), byte(len(addr))), addr...)
}

func readAddr(r io.Reader) (string, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	size := int(n[0])<<8 | int(n[1])
	if size > maxOpeningAddr {
		return "", fmt.Errorf("%w: an address of %d bytes", errOpening, size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// replayed is a connection whose first byte was read, to tell an opening from
// raft's own request, and is read again first.
type replayed struct {
	net.Conn
	first byte
	done  bool
}

func (r *replayed) Read(p []byte) (int, error) {
	if r.done || len(p) == 0 {
		return r.Conn.Read(p)
	}
	r.done = true
	p[0] = r.first
	return 1, nil
}
