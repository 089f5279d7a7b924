package replica

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestMeantFor(t *testing.T) {
	for _, tc := range []struct {
		target, self string
		want         bool
	}{
		{"server-1:7001", "server-1:7001", true},
		{"server-1:7001", "server-1:7002", true}, // restarted on another port: the dialler found it by name
		{"Server-1:7001", "server-1:7001", true}, // host names are not case-sensitive
		{"server-3:7001", "server-1:7001", false},
		{"server-1.example:7001", "server-1:7001", false},
		{"127.0.0.1:7001", "127.0.0.1:7001", true},
		{"10.0.0.5:7001", "10.0.0.5:7002", true}, // a node named by its IP address, restarted on another port
		{"10.0.0.5:7001", "10.0.0.6:7001", false},
		{"[::ffff:10.0.0.5]:7001", "10.0.0.5:7001", true},
		{"[::1]:7001", "[::1]:7001", true},
		{"127.0.0.1:7001", "server-1:7001", false}, // an address and a name: nothing says they are one
		{"server-1:7001", "127.0.0.1:7001", false},
		{"server-1", "server-1:7001", false}, // not host:port
		{"", "server-1:7001", false},
	} {
		if got := meantFor(tc.target, tc.self); got != tc.want {
			t.Errorf("meantFor(%q, %q) = %v, want %v", tc.target, tc.self, got, tc.want)
		}
	}
}

// openingServer listens as the server that advertises self, with keys (nil: plain
// TCP), taking every dialler to open its connections when opens; what it hands
// raft is read for "raft" and answered "ack!" (keyedServer).
func openingServer(t *testing.T, self string, keys [][]byte, opens bool) (string, <-chan error, <-chan refusal) {
	t.Helper()
	var k *keyed
	if keys != nil {
		var err error
		if k, err = newKeyed(keys); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan refusal, 16)
	ln := listen(raw, k, self, func(string) bool { return opens }, func(_, reason string, err error) { refused <- refusal{reason, err} })
	t.Cleanup(func() { ln.Close() })
	return raw.Addr().String(), serveExchanges(ln), refused
}

// A connection is opened for the server it is meant for: the one reached hands it
// to raft when it is that server, and refuses it otherwise, naming itself to the
// dialler (ErrMisrouted) and to its own Hooks.Refused (raft_misrouted). Raft never
// reads a refused connection.
func TestAnOpeningNamesTheServerMeant(t *testing.T) {
	key := [][]byte{[]byte("0123456789abcdef")}
	for _, tc := range []struct {
		name   string
		keys   [][]byte
		target string
		ok     bool
	}{
		{"plain, meant for it", nil, "server-1:7001", true},
		{"plain, meant for another", nil, "server-3:7001", false},
		{"keyed, meant for it", key, "server-1:7001", true},
		{"keyed, meant for another", key, "server-3:7001", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, read, refused := openingServer(t, "server-1:7001", tc.keys, true)
			s := &tcpStream{dial: func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			}}
			if tc.keys != nil {
				s.keyed, _ = newKeyed(tc.keys)
			}
			c, err := s.Dial(raft.ServerAddress(tc.target), time.Second)
			if tc.ok {
				if err != nil {
					t.Fatalf("dial for %s: %v", tc.target, err)
				}
				defer c.Close()
				if err := exchange(c); err != nil {
					t.Fatalf("exchange: %v", err)
				}
				if err := <-read; err != nil {
					t.Fatalf("the accepting side: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrMisrouted) || !strings.Contains(err.Error(), "server-1:7001") {
				t.Fatalf("dial for %s reaching server-1: err = %v, want ErrMisrouted naming server-1:7001", tc.target, err)
			}
			if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonMisrouted || !strings.Contains(r.err.Error(), tc.target) {
				t.Errorf("refused as %s (%v), want %s naming %s", r.reason, r.err, ReasonMisrouted, tc.target)
			}
		})
	}
}

// A connection from a server of an earlier version starts with raft's own request:
// it is handed to raft whole. From a server known to open its connections, it is
// refused: that dialler took this server for one of an earlier version. A peer
// that closes before its first byte (a probe) is not refused, only closed. An
// opening this version cannot read is refused.
func TestAConnectionWithoutOpening(t *testing.T) {
	addr, read, refused := openingServer(t, "server-1:7001", nil, false)
	dial := func() net.Conn {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	dial().Close()                           // a probe of the port
	if err := exchange(dial()); err != nil { // "raft" whole, then "ack!"
		t.Fatalf("raft's own bytes without an opening: %v", err)
	}
	if err := <-read; err != nil {
		t.Fatalf("the accepting side: %v", err)
	}
	for name, opening := range map[string][]byte{
		"a later version":    {openingMagic, ConnVersion + 1, 0, 1, 'x'},
		"an endless address": {openingMagic, ConnVersion, 0xff, 0xff},
	} {
		nc := dial()
		if _, err := nc.Write(opening); err != nil {
			t.Fatal(err)
		}
		if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonOpening {
			t.Errorf("%s: refused as %s (%v), want %s (the probe before is not refused)", name, r.reason, r.err, ReasonOpening)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(nc, make([]byte, 1)); err == nil {
			t.Errorf("%s: answered, want the connection closed", name)
		}
	}

	addr, _, refused = openingServer(t, "server-1:7001", nil, true)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := exchange(nc); err == nil {
		t.Fatal("raft's own bytes from a dialler known to open its connections were answered, want a refusal")
	}
	if r := awaitRefusal(t, refused, 5*time.Second); r.reason != ReasonMisrouted {
		t.Errorf("refused as %s (%v), want %s", r.reason, r.err, ReasonMisrouted)
	}
}

// A dial that reached the wrong server is made again while the address is stale,
// and succeeds once it leads to the server meant: raft sees no failed request, and
// does not back off from that follower. One that stays misrouted fails after
// redialWait.
func TestDialWaitsOutAMisroutedAddress(t *testing.T) {
	wrong, _, refusedWrong := openingServer(t, "server-1:7001", nil, true)
	right, read, _ := openingServer(t, "server-3:7001", nil, true)
	var dials int
	s := &tcpStream{closed: make(chan struct{}), dial: func(ctx context.Context, _ string) (net.Conn, error) {
		dials++ // raft dials a peer from one goroutine at a time; so does this test
		to := wrong
		if dials > 3 { // the membership learnt the new address
			to = right
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", to)
	}}
	c, err := s.Dial(raft.ServerAddress("server-3:7001"), 10*time.Second)
	if err != nil {
		t.Fatalf("dial for server-3, whose address reached server-1 three times: %v", err)
	}
	defer c.Close()
	if err := exchange(c); err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if err := <-read; err != nil {
		t.Fatalf("server-3: %v", err)
	}
	for range 3 {
		if r := awaitRefusal(t, refusedWrong, 5*time.Second); r.reason != ReasonMisrouted {
			t.Errorf("server-1 refused as %s (%v), want %s", r.reason, r.err, ReasonMisrouted)
		}
	}

	stale := &tcpStream{closed: make(chan struct{}), dial: func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", wrong)
	}}
	start := time.Now()
	if _, err := stale.Dial(raft.ServerAddress("server-3:7001"), 10*time.Second); !errors.Is(err, ErrMisrouted) {
		t.Fatalf("dial whose address stays stale: err = %v, want ErrMisrouted", err)
	}
	if took := time.Since(start); took > redialWait+time.Second {
		t.Errorf("a dial whose address stays stale failed after %s, want within redialWait (%s)", took, redialWait)
	}
}
