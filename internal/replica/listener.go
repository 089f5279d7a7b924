package replica

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/baton-dev/baton/internal/rawio"
)

// Every raft connection a server accepts has an opening before raft reads it: with
// a key, the TLS handshake in which the peer proves it (keyed.go); then the name of
// the server the dialler meant to reach (opening.go). openingListener runs each
// connection's opening on a goroutine of its own and hands raft only the
// connections whose opening succeeded: a slow, silent or hostile peer holds up no
// other, and raft never reads what it should not.

// handshakeTimeout bounds a connection's opening: a peer that connects and sends
// nothing holds nothing for longer.
const handshakeTimeout = 5 * time.Second

// Why an accepted raft connection was refused (Hooks.Refused).
const (
	ReasonAuth             = "raft_auth"              // not TLS, or no proof of the key
	ReasonHandshakeTimeout = "raft_handshake_timeout" // silent past handshakeTimeout
	ReasonHandshakeEOF     = "raft_handshake_eof"     // closed or reset before its opening ended
	ReasonBusy             = "raft_busy"              // maxHandshakes in progress, or maxHandshakesPerAddr from its address
	ReasonAccept           = "raft_accept"            // the listener failed (out of descriptors): nothing was accepted
	ReasonMisrouted        = "raft_misrouted"         // meant for another server (ErrMisrouted)
	ReasonOpening          = "raft_opening"           // an opening this version cannot read
)

// refusalReason sorts a failed opening: a peer that proved the wrong thing from
// one that went away or said nothing (a port scan, a peer restarting).
func refusalReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, ErrMisrouted):
		return ReasonMisrouted
	case errors.Is(err, errOpening):
		return ReasonOpening
	case errors.As(err, &ne) && ne.Timeout():
		return ReasonHandshakeTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return ReasonHandshakeEOF
	}
	return ReasonAuth
}

// Bounds on the connections whose opening is in progress. One costs a goroutine
// and, keyed, a TLS state. Servers open a few connections each, and an opening
// takes a round trip or two: perAddress is room for a server's pool and its
// reconnects, and one address (a hostile peer) cannot fill the rest, which others
// need to heal (a new leader's dials, votes).
const (
	maxHandshakes        = 256
	maxHandshakesPerAddr = 8
)

// openingListener hands raft (Accept) the connections whose opening succeeded:
// keyed, the peer proved the key; and the connection is meant for self, the
// address this server advertises. Close ends the openings in progress and waits
// for them.
type openingListener struct {
	net.Listener
	k       *keyed // nil: plain TCP
	self    string
	opens   func(remoteIP string) bool             // Config.OpensConnections; nil: none known to
	refused func(remote, reason string, err error) // nil: not told
	ready   chan net.Conn                          // opened
	closed  chan struct{}
	ctx     context.Context // cancelled by Close: ends the openings in progress
	cancel  context.CancelFunc
	once    sync.Once
	wg      sync.WaitGroup // acceptLoop and the openings

	mu      sync.Mutex     // guards pending and total
	pending map[string]int // openings in progress by remote IP
	total   int
}

// listen accepts raft connections on ln for the server that advertises self;
// opens and refused may be nil.
func listen(ln net.Listener, k *keyed, self string, opens func(string) bool, refused func(remote, reason string, err error)) *openingListener {
	l := &openingListener{Listener: ln, k: k, self: self, opens: opens, refused: refused, ready: make(chan net.Conn),
		closed: make(chan struct{}), pending: map[string]int{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *openingListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		nc, err := l.Listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of descriptors, say: counted, and tried again a moment later, as raft's own loop does
			l.refuse("", ReasonAccept, err)
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-l.closed:
				return
			}
			continue
		}
		backoff = 0
		host := remoteHost(nc)
		if !l.take(host) {
			l.refuse(nc.RemoteAddr().String(), ReasonBusy, errors.New("too many raft connections opening"))
			nc.Close()
			continue
		}
		l.wg.Add(1)
		go l.open(rawio.Wrap(nc), host)
	}
}

// take reserves an opening for a connection from host, if there is room.
func (l *openingListener) take(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= maxHandshakes || l.pending[host] >= maxHandshakesPerAddr {
		return false
	}
	l.total++
	l.pending[host]++
	return true
}

func (l *openingListener) release(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.pending[host]--; l.pending[host] == 0 {
		delete(l.pending, host)
	}
}

func remoteHost(nc net.Conn) string {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return nc.RemoteAddr().String()
}

// open runs nc's opening within handshakeTimeout and hands the connection to
// Accept, or refuses it.
func (l *openingListener) open(nc net.Conn, host string) {
	defer l.wg.Done()
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	// Close ends the opening at once: its reads and writes time out.
	stop := context.AfterFunc(l.ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	c, err := l.opening(nc, host)
	l.release(host)
	if !stop() { // closed meanwhile: raft is not handed a connection after its shutdown
		nc.Close()
		return
	}
	if errors.Is(err, errUnopened) {
		nc.Close()
		return
	}
	if err != nil {
		l.refuse(nc.RemoteAddr().String(), refusalReason(err), err)
		nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	select {
	case l.ready <- c:
	case <-l.closed:
		c.Close()
	}
}

// opening is the TLS handshake (keyed), then the opening that names the server
// the connection is for; host is the dialler's address.
func (l *openingListener) opening(nc net.Conn, host string) (net.Conn, error) {
	c := nc
	if l.k != nil {
		tc := tls.Server(nc, l.k.server)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = tc
	}
	return acceptOpening(c, l.self, func() bool { return l.opens != nil && l.opens(host) })
}

// Accept returns the next connection whose opening succeeded.
func (l *openingListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting, ends the openings in progress and waits for them.
func (l *openingListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.closed)
		l.cancel()
		err = l.Listener.Close()
		l.wg.Wait()
	})
	return err
}

func (l *openingListener) refuse(remote, reason string, err error) {
	if l.refused != nil {
		l.refused(remote, reason, err)
	}
}
