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
	"math/big"
	"net"
	"slices"
	"time"
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
}

// ErrUnproven: a raft peer this server dialled answered, and did not prove it holds
// the key (or refused this server's proof).
var ErrUnproven = errors.New("the raft peer did not prove the key")

// errNotKeyed: the peer did not prove it holds the key.
var errNotKeyed = errors.New("the raft peer does not hold this server's key")

// newKeyed derives the servers' identities from keys: this server presents the
// first key's, and accepts a peer that presents any key's.
func newKeyed(keys [][]byte) (*keyed, error) {
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
