package replica

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// refusal is what a keyed listener reported of a connection it refused.
type refusal struct {
	reason string
	err    error
}

// keyedListening listens on loopback with keys, closed at cleanup; refusals are
// reported on the channel it returns.
func keyedListening(t *testing.T, keys [][]byte) (*openingListener, <-chan refusal) {
	t.Helper()
	refused := make(chan refusal, 16)
	k, err := newKeyed(keys)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(raw, k, "server-1:7001", nil, func(_, reason string, err error) { refused <- refusal{reason, err} })
	t.Cleanup(func() { ln.Close() })
	return ln, refused
}

// keyedServer is keyedListening's listener, whose every connection accepted
// (proven) is read for "raft" and answered "ack!". It returns its address, the
// results of its reads, and its refusals.
func keyedServer(t *testing.T, keys [][]byte) (string, <-chan error, <-chan refusal) {
	t.Helper()
	ln, refused := keyedListening(t, keys)
	return ln.Listener.Addr().String(), serveExchanges(ln), refused
}

// serveExchanges reads "raft" from every connection ln hands raft and answers
// "ack!"; it reports the result of each.
func serveExchanges(ln net.Listener) <-chan error {
	read := make(chan error, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 4)
				if _, err := io.ReadFull(c, b); err != nil {
					read <- err
					return
				}
				_, err := c.Write([]byte("ack!"))
				read <- err
			}()
		}
	}()
	return read
}

// exchange sends "raft" on c and reads the answer.
func exchange(c net.Conn) error {
	if _, err := c.Write([]byte("raft")); err != nil {
		return err
	}
	b := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadFull(c, b)
	return err
}

// awaitRefusal waits for the listener's report of a refusal.
func awaitRefusal(t *testing.T, refused <-chan refusal, within time.Duration) refusal {
	t.Helper()
	select {
	case r := <-refused:
		return r
	case <-time.After(within):
		t.Fatalf("no refusal reported within %s", within)
		return refusal{}
	}
}

func TestKeyedConnections(t *testing.T) {
	old := []byte("0123456789abcdef0123456789abcdef")
	other := []byte("fedcba9876543210fedcba9876543210")
	keys := func(k ...[]byte) [][]byte { return k }
	for _, tc := range []struct {
		name         string
		dial, accept [][]byte
		connected    bool
	}{
		{"same key", keys(old), keys(old), true},
		{"another key", keys(other), keys(old), false},
		// A key being changed (cluster.ParseKeys): old → old,other → other,old → other.
		// Each server moves one step at a time; any two adjacent steps connect.
		{"old dials old,other", keys(old), keys(old, other), true},
		{"old,other dials old", keys(old, other), keys(old), true},
		{"other,old dials old,other", keys(other, old), keys(old, other), true},
		{"old,other dials other,old", keys(old, other), keys(other, old), true},
		{"other dials other,old", keys(other), keys(other, old), true},
		{"other,old dials other", keys(other, old), keys(other), true},
		// Two steps apart they do not: a server presents its first key only.
		{"other,old dials old", keys(other, old), keys(old), false},
		{"old dials other,old", keys(old), keys(other, old), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, read, refused := keyedServer(t, tc.accept)
			dialer, err := newKeyed(tc.dial)
			if err != nil {
				t.Fatal(err)
			}
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c, dialErr := dialer.dialed(nc, time.Second)
			if !tc.connected {
				// In TLS 1.3 a dialer's handshake ends before the server has checked its
				// certificate: the server's refusal then ends the first exchange.
				if dialErr == nil {
					defer c.Close()
					if err := exchange(c); err == nil {
						t.Fatal("answered, want the server to refuse the dialer")
					}
					if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonAuth {
						t.Errorf("refused as %s (%v), want %s", r.reason, r.err, ReasonAuth)
					}
				}
				return
			}
			if dialErr != nil {
				t.Fatalf("dial: %v", dialErr)
			}
			defer c.Close()
			if err := exchange(c); err != nil {
				t.Fatalf("exchange: %v", err)
			}
			if err := <-read; err != nil {
				t.Fatalf("the accepting side: %v", err)
			}
			select {
			case r := <-refused:
				t.Fatalf("a refusal reported on a connection that proved its key: %s %v", r.reason, r.err)
			default:
			}
		})
	}
}

// The accepting side checks what the dialer proves, whatever the dialer checks of
// it: a TLS client that trusts any server is refused unless it proves the key, by
// signing the handshake with the key's private half.
func TestTheAcceptingSideChecksTheDialersProof(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	right, rightPub, err := identity(key)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	certOf := func(pub ed25519.PublicKey, signer ed25519.PrivateKey) tls.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: signer}
	}
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"the key's certificate", []tls.Certificate{right}, true},
		{"no certificate", nil, false},
		{"another key's certificate", []tls.Certificate{certOf(otherPriv.Public().(ed25519.PublicKey), otherPriv)}, false},
		{"the key's public half, signed with another private key", []tls.Certificate{certOf(rightPub, otherPriv)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, read, refused := keyedServer(t, [][]byte{key})
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c := tls.Client(nc, &tls.Config{InsecureSkipVerify: true, Certificates: tc.certs, MinVersion: tls.VersionTLS13})
			defer c.Close()
			err = exchange(c)
			if tc.ok {
				if err != nil {
					t.Fatalf("exchange: %v", err)
				}
				if err := <-read; err != nil {
					t.Fatalf("the accepting side: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("answered, want a refusal")
			}
			if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonAuth {
				t.Errorf("refused as %s (%v), want %s", r.reason, r.err, ReasonAuth)
			}
		})
	}
}

// What is refused says why: raft's own bytes without TLS are a missing proof; a
// peer that connects and goes away, or says nothing for the handshake's bound, is
// not.
func TestARefusalSaysWhy(t *testing.T) {
	addr, _, refused := keyedServer(t, [][]byte{[]byte("0123456789abcdef")})
	dial := func() net.Conn {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	plain := dial() // a request the size of raft's smallest, past a TLS record's header
	_, _ = plain.Write([]byte("raft: append entries, term 1000"))
	if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonAuth {
		t.Errorf("plain raft refused as %s (%v), want %s", r.reason, r.err, ReasonAuth)
	}
	plain.Close()
	dial().Close() // a port scan
	if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonHandshakeEOF {
		t.Errorf("a connection closed at once refused as %s (%v), want %s", r.reason, r.err, ReasonHandshakeEOF)
	}
	silent := dial()
	defer silent.Close()
	start := time.Now()
	if r := awaitRefusal(t, refused, handshakeTimeout+5*time.Second); r.reason != ReasonHandshakeTimeout {
		t.Errorf("a silent peer refused as %s (%v), want %s", r.reason, r.err, ReasonHandshakeTimeout)
	}
	if took := time.Since(start); took < handshakeTimeout-time.Second {
		t.Errorf("a silent peer refused after %s, want about the handshake bound, %s", took, handshakeTimeout)
	}
}

// Unproven connections from one address hold at most maxHandshakesPerAddr
// handshakes: past that, a new one from there is closed at once (raft_busy), and once
// they are refused a proven peer connects.
func TestUnprovenConnectionsAreBounded(t *testing.T) {
	key := []byte("0123456789abcdef")
	addr, read, refused := keyedServer(t, [][]byte{key})
	var silent []net.Conn
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	for range maxHandshakesPerAddr + 1 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, nc)
	}
	if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonBusy {
		t.Fatalf("the connection past %d unproven ones from one address refused as %s (%v), want %s", maxHandshakesPerAddr, r.reason, r.err, ReasonBusy)
	}
	for _, c := range silent {
		c.Close()
	}
	silent = nil
	for range maxHandshakesPerAddr {
		if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonHandshakeEOF {
			t.Fatalf("a closed unproven connection refused as %s (%v), want %s", r.reason, r.err, ReasonHandshakeEOF)
		}
	}
	dialer, _ := newKeyed([][]byte{key})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialer.dialed(nc, time.Second)
	if err != nil {
		t.Fatalf("a proven peer after the unproven ones left: %v", err)
	}
	defer c.Close()
	if err := exchange(c); err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
}

// Close ends the handshakes in progress at once, and reports none as a refusal.
func TestCloseEndsTheHandshakesInProgress(t *testing.T) {
	ln, refused := keyedListening(t, [][]byte{[]byte("0123456789abcdef")})
	silent, err := net.Dial("tcp", ln.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	deadline := time.Now().Add(5 * time.Second)
	for { // wait until its handshake is in progress
		ln.mu.Lock()
		n := ln.total
		ln.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the silent connection's handshake never started")
		}
		time.Sleep(time.Millisecond) // polling, with a deadline
	}
	start := time.Now()
	ln.Close()
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil || time.Since(start) > time.Second {
		t.Errorf("the silent peer read %v %s after Close, want its connection closed at once", err, time.Since(start))
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	select {
	case r := <-refused:
		t.Errorf("Close reported a refusal (%s: %v)", r.reason, r.err)
	default:
	}
}
