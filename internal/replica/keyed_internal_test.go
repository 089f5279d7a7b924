package replica

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Two ends of a raft connection over loopback: the dialer holds dialKeys (none: it
// speaks plain TCP and writes what raft would), the listener holds acceptKeys. It
// returns the dialer's error, what the accepting side's first read returned, and
// the refusal the accepting side reported, if any.
func keyedPair(t *testing.T, dialKeys, acceptKeys [][]byte) (dialErr, readErr, refusal error) {
	t.Helper()
	refused := make(chan error, 1)
	acc, err := newKeyed(acceptKeys, func(_ string, err error) { refused <- err })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	read := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			read <- err
			return
		}
		c := acc.accepted(nc)
		defer c.Close()
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil {
			read <- err
			return
		}
		if string(b) != "raft" {
			read <- errors.New("read " + string(b) + ", want raft")
			return
		}
		_, err = c.Write([]byte("ack!"))
		read <- err
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var c net.Conn = nc
	if dialKeys != nil {
		dial, err := newKeyed(dialKeys, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, dialErr = dial.dialed(nc, time.Second)
	}
	if dialErr == nil {
		defer c.Close()
		if dialKeys != nil {
			_, _ = c.Write([]byte("raft"))
		} else { // a request the size of raft's smallest, past a TLS record's header
			_, _ = c.Write([]byte("raft: append entries, term 1000"))
		}
		if dialKeys != nil {
			b := make([]byte, 4)
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "ack!" {
				dialErr = errors.New("no answer through the keyed connection")
			}
		}
	}
	select {
	case readErr = <-read:
	case <-time.After(2 * handshakeTimeout):
		t.Fatal("the accepting side neither read nor refused")
	}
	select {
	case refusal = <-refused:
	default:
	}
	return dialErr, readErr, refusal
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
			dialErr, readErr, refusal := keyedPair(t, tc.dial, tc.accept)
			if tc.connected {
				if dialErr != nil || readErr != nil || refusal != nil {
					t.Fatalf("dial %v, read %v, refusal %v; want a connection", dialErr, readErr, refusal)
				}
				return
			}
			if dialErr == nil && refusal == nil {
				t.Error("connected, want a refusal")
			}
			if readErr != io.EOF {
				t.Errorf("the accepting side read %v, want the end of the stream (raft then closes it quietly)", readErr)
			}
		})
	}
	t.Run("no key: raft's own bytes are refused", func(t *testing.T) {
		_, readErr, refusal := keyedPair(t, nil, keys(old))
		if readErr != io.EOF || refusal == nil {
			t.Errorf("read %v, refusal %v; want io.EOF and a refusal", readErr, refusal)
		}
	})
}

// A peer that connects and says nothing holds its connection's goroutine for the
// handshake's bound at most, then is refused.
func TestASilentPeerIsRefusedAfterTheHandshakeBound(t *testing.T) {
	acc, err := newKeyed([][]byte{[]byte("0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer b.Close()
	c := acc.accepted(a)
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	if err != io.EOF {
		t.Fatalf("read %v from a silent peer, want io.EOF", err)
	}
	if took := time.Since(start); took < handshakeTimeout || took > handshakeTimeout+2*time.Second {
		t.Errorf("refused after %s, want about the handshake bound, %s", took, handshakeTimeout)
	}
}
