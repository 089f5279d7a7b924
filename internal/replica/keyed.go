package replica

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/baton-dev/baton/internal/rawio"
)

// A raft connection carries the log itself: whoever can speak raft to a server can
// append entries to it (an AppendEntries of a higher term makes the sender its
// leader) or depose its leader. So with a key (BATON_RAFT_KEY, the servers' alone,
// else BATON_CLUSTER_KEY) every raft connection is TLS 1.3, and both ends prove they
// hold it. Every server derives the same Ed25519 key pair from the key, and presents
// a certificate of it; each end accepts only a peer that proves it holds that
// private key. No certificate authority, no files to distribute: the key is the
// credential, as for gossip. Consul and etcd secure their raft traffic with TLS the
// same way, with certificates of their own.

// keyed is the TLS of the servers that hold one key (or, while it changes, several:
// cluster.ParseKeys).
type keyed struct {
	server, client *tls.Config
	// refused, when set, is told of every accepted connection that did not prove the
	// key, and why (Reason...; it is then closed): hostile input, for the caller to
	// count.
	refused func(remote, reason string, err error)
}

// handshakeTimeout bounds the TLS handshake of a raft connection: a peer that
// opens one and sends nothing holds nothing for longer.
const handshakeTimeout = 5 * time.Second

// ErrUnproven: a raft peer this server dialled answered, and did not prove it holds
// the key (or refused this server's proof).
var ErrUnproven = errors.New("the raft peer did not prove the key")

// errNotKeyed: the peer did not prove it holds the key.
var errNotKeyed = errors.New("the raft peer does not hold this server's key")

// newKeyed derives the servers' identities from keys: this server presents the
// first key's, and accepts a peer that presents any key's.
func newKeyed(keys [][]byte, refused func(remote, reason string, err error)) (*keyed, error) {
	var certs []tls.Certificate
	var accepted []ed25519.PublicKey
	for _, key := range keys {
		cert, pub, err := identity(key)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
		accepted = append(accepted, pub)
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errNotKeyed
		}
		c, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return errNotKeyed
		}
		k, ok := c.PublicKey.(ed25519.PublicKey)
		if !ok || !slices.ContainsFunc(accepted, func(a ed25519.PublicKey) bool { return k.Equal(a) }) {
			return errNotKeyed
		}
		return nil // TLS itself had the peer sign with the matching private key
	}
	own := certs[:1]
	return &keyed{
		// No session resumption: every connection proves the key afresh.
		server: &tls.Config{Certificates: own, MinVersion: tls.VersionTLS13,
			ClientAuth: tls.RequireAnyClientCert, VerifyPeerCertificate: verify, SessionTicketsDisabled: true},
		// InsecureSkipVerify skips the name and chain checks only: verify checks the key.
		client: &tls.Config{Certificates: own, MinVersion: tls.VersionTLS13,
			InsecureSkipVerify: true, VerifyPeerCertificate: verify},
		refused: refused,
	}, nil
}

// identity is the Ed25519 key pair every holder of key derives, and a certificate
// of it. The certificate only carries the public key: peers check the key, never a
// name, a chain or a date (a clock that is off must not part the cluster).
func identity(key []byte) (tls.Certificate, ed25519.PublicKey, error) {
	seed, err := hkdf.Key(sha256.New, key, nil, "baton raft transport identity v1", ed25519.SeedSize)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "baton raft"},
		NotBefore: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("replica: raft certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, pub, nil
}

// dialed makes nc, a connection this server opened, a TLS client and completes the
// handshake within timeout.
func (k *keyed) dialed(nc net.Conn, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > handshakeTimeout {
		timeout = handshakeTimeout
	}
	tc := tls.Client(nc, k.client)
	_ = nc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		if refusalReason(err) == ReasonAuth {
			return nil, fmt.Errorf("replica: raft TLS with %s: %w: %w (do both servers have the same key?)", nc.RemoteAddr(), ErrUnproven, err)
		}
		return nil, fmt.Errorf("replica: raft TLS with %s: %w", nc.RemoteAddr(), err)
	}
	_ = nc.SetDeadline(time.Time{})
	return tc, nil
}

// Why an accepted raft connection was refused (Hooks.Refused).
const (
	ReasonAuth             = "raft_auth"              // not TLS, or no proof of the key
	ReasonHandshakeTimeout = "raft_handshake_timeout" // silent past handshakeTimeout
	ReasonHandshakeEOF     = "raft_handshake_eof"     // closed or reset before proving anything
	ReasonBusy             = "raft_busy"              // maxHandshakes in progress, or maxHandshakesPerAddr from its address
	ReasonAccept           = "raft_accept"            // the listener failed (out of descriptors): nothing was accepted
)

// refusalReason sorts a failed handshake: a peer that proved the wrong thing from
// one that went away or said nothing (a port scan, a peer restarting).
func refusalReason(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return ReasonHandshakeTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return ReasonHandshakeEOF
	}
	return ReasonAuth
}

// Bounds on the connections whose handshake is in progress. An unproven connection
// costs a goroutine and a TLS state; raft is handed only proven ones. Servers open a
// few connections each, and a handshake takes a round trip or two: perAddress is
// room for a server's pool and its reconnects, and one address (a hostile peer)
// cannot fill the rest, which others need to heal (a new leader's dials, votes).
const (
	maxHandshakes        = 256
	maxHandshakesPerAddr = 8
)

// keyedListener hands raft only the connections that proved the key (Accept). Each
// handshake runs on a goroutine of its own, within handshakeTimeout: a slow or
// silent peer holds up no other. Close ends the handshakes in progress and waits for
// them.
type keyedListener struct {
	net.Listener
	k      *keyed
	ready  chan net.Conn // proven
	closed chan struct{}
	ctx    context.Context // cancelled by Close: ends the handshakes in progress
	cancel context.CancelFunc
	once   sync.Once
	wg     sync.WaitGroup // acceptLoop and the handshakes

	mu      sync.Mutex     // guards pending
	pending map[string]int // handshakes in progress by remote IP
	total   int
}

func (k *keyed) listen(ln net.Listener) *keyedListener {
	l := &keyedListener{Listener: ln, k: k, ready: make(chan net.Conn), closed: make(chan struct{}), pending: map[string]int{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *keyedListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		nc, err := l.Listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of descriptors, say: counted, and tried again a moment later, as raft's own loop does
			l.k.refuse("", ReasonAccept, err)
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
			l.k.refuse(nc.RemoteAddr().String(), ReasonBusy, errors.New("too many raft handshakes in progress"))
			nc.Close()
			continue
		}
		l.wg.Add(1)
		go l.handshake(rawio.Wrap(nc), host)
	}
}

// take reserves a handshake for a connection from host, if there is room.
func (l *keyedListener) take(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= maxHandshakes || l.pending[host] >= maxHandshakesPerAddr {
		return false
	}
	l.total++
	l.pending[host]++
	return true
}

func (l *keyedListener) release(host string) {
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

func (l *keyedListener) handshake(nc net.Conn, host string) {
	defer l.wg.Done()
	tc := tls.Server(nc, l.k.server)
	ctx, cancel := context.WithTimeout(l.ctx, handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	l.release(host)
	if err != nil {
		if l.ctx.Err() == nil { // not ended by Close
			l.k.refuse(nc.RemoteAddr().String(), refusalReason(err), err)
		}
		nc.Close()
		return
	}
	select {
	case <-l.closed: // closed meanwhile: raft is not handed a connection after its shutdown
		tc.Close()
		return
	default:
	}
	select {
	case l.ready <- tc:
	case <-l.closed:
		tc.Close()
	}
}

// Accept returns the next connection that proved the key.
func (l *keyedListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting, ends the handshakes in progress and waits for them.
func (l *keyedListener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.closed)
		l.cancel()
		err = l.Listener.Close()
		l.wg.Wait()
	})
	return err
}

func (k *keyed) refuse(remote, reason string, err error) {
	if k.refused != nil {
		k.refused(remote, reason, err)
	}
}
