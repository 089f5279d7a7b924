package replica

import (
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
	"time"
)

// A raft connection carries the log itself: whoever can speak raft to a server can
// append entries to it (an AppendEntries of a higher term makes the sender its
// leader) or depose its leader. So with a cluster key (BATON_CLUSTER_KEY, which
// already encrypts gossip and gates client sessions) every raft connection is TLS
// 1.3, and both ends prove they hold the key. Every server derives the same Ed25519
// key pair from the cluster key, and presents a certificate of it; each end accepts
// only a peer that proves it holds that private key. No certificate authority, no
// files to distribute: the key is the credential, as for gossip. Consul and etcd
// secure their raft traffic with TLS the same way, with certificates of their own.

// keyed is the TLS of the servers that hold one cluster key.
type keyed struct {
	server, client *tls.Config
	// Refused, when set, is told of every accepted connection that did not prove the
	// key (it is then closed): hostile input, for the caller to count.
	refused func(remote string, err error)
}

// handshakeTimeout bounds the TLS handshake of a raft connection: a peer that
// opens one and sends nothing holds nothing for longer.
const handshakeTimeout = 5 * time.Second

// errNotKeyed: the peer did not prove it holds the cluster key.
var errNotKeyed = errors.New("replica: raft peer does not hold this cluster key (BATON_CLUSTER_KEY)")

// newKeyed derives the servers' identities from keys: this server presents the
// first key's, and accepts a peer that presents any key's.
func newKeyed(keys [][]byte, refused func(remote string, err error)) (*keyed, error) {
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
		server: &tls.Config{Certificates: own, MinVersion: tls.VersionTLS13,
			ClientAuth: tls.RequireAnyClientCert, VerifyPeerCertificate: verify},
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
	tc := tls.Client(nc, k.client)
	_ = nc.SetDeadline(time.Now().Add(min(timeout, handshakeTimeout)))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("replica: raft TLS with %s: %w (do both servers have the same BATON_CLUSTER_KEY?)", nc.RemoteAddr(), err)
	}
	_ = nc.SetDeadline(time.Time{})
	return tc, nil
}

// accepted makes nc, a connection a peer opened, a TLS server whose handshake runs
// at its first read, on raft's goroutine for that connection: a slow or silent peer
// holds up no other connection, nor raft's accept loop.
func (k *keyed) accepted(nc net.Conn) net.Conn {
	return &acceptedConn{Conn: tls.Server(nc, k.server), raw: nc, k: k}
}

// acceptedConn is an accepted raft connection until and after its handshake. raft
// reads it first (a request), and from one goroutine.
type acceptedConn struct {
	*tls.Conn
	raw  net.Conn
	k    *keyed
	once sync.Once
	err  error
}

func (c *acceptedConn) handshake() error {
	c.once.Do(func() {
		_ = c.raw.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := c.Conn.Handshake(); err != nil {
			if c.k.refused != nil {
				c.k.refused(c.raw.RemoteAddr().String(), err)
			}
			// Said and counted by refused: raft sees the end of the stream, which it
			// does not log as an error of its own.
			c.err = io.EOF
			return
		}
		_ = c.raw.SetDeadline(time.Time{})
	})
	return c.err
}

func (c *acceptedConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *acceptedConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
