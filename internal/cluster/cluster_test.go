package cluster

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/ration"
)

// A join that fails says why: each misconfiguration a user can make between a
// client and its seed, over real memberlist on loopback.
func TestJoinCause(t *testing.T) {
	k1 := [][]byte{[]byte("0123456789abcdef")}
	k2 := [][]byte{[]byte("fedcba9876543210")}
	k12, k21 := [][]byte{k1[0], k2[0]}, [][]byte{k2[0], k1[0]}
	for _, tc := range []struct {
		name           string
		seedKey, key   [][]byte
		seedLab, label string
		noSeed         bool
		want           string
	}{
		{name: "same key and label", seedLab: "baton", label: "baton", want: ""},
		{name: "key here, none on the seed", key: k1, seedLab: "baton", label: "baton", want: CauseKey},
		{name: "key on the seed, none here", seedKey: k1, seedLab: "baton", label: "baton", want: CauseKey},
		{name: "different keys", seedKey: k1, key: k2, seedLab: "baton", label: "baton", want: CauseKey},
		// A key being changed (ParseKeys): nodes one step apart understand each other.
		{name: "old and old,new", seedKey: k1, key: k12, seedLab: "baton", label: "baton", want: ""},
		{name: "old,new and new,old", seedKey: k12, key: k21, seedLab: "baton", label: "baton", want: ""},
		{name: "new,old and new", seedKey: k21, key: k2, seedLab: "baton", label: "baton", want: ""},
		{name: "old and new,old: two steps apart", seedKey: k1, key: k21, seedLab: "baton", label: "baton", want: CauseKey},
		{name: "different labels", seedLab: "a", label: "b", want: CauseLabel},
		{name: "nobody at the seed", seedLab: "baton", label: "baton", noSeed: true, want: CauseUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seed, err := Start(Config{Name: "seed", BindAddr: "127.0.0.1", Keys: tc.seedKey, Label: tc.seedLab,
				Local: true, Meta: Meta{Role: RoleServer}, JoinPeriod: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer seed.Close()
			addr := seed.Addr()
			if tc.noSeed {
				addr = "127.0.0.1:1"
			}
			n, err := Start(Config{Name: "node", BindAddr: "127.0.0.1", Keys: tc.key, Label: tc.label, Local: true,
				Meta: Meta{Role: RoleClient}, Join: []string{addr}, JoinPeriod: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			_, err = n.Join()
			if got := JoinCause(err); got != tc.want {
				t.Fatalf("JoinCause(%v) = %q, want %q", err, got, tc.want)
			}
			// The node's own joiner joins at start too, and may end after this
			// join: JoinErr is whichever ended last, and says the same.
			if je := n.JoinErr(); (je == nil) != (err == nil) || JoinCause(je) != tc.want {
				t.Fatalf("JoinErr = %v (%q), want the last join's error, like %v (%q)", je, JoinCause(je), err, tc.want)
			}
		})
	}
}

// A line memberlist repeats every second is written once, then once a period with
// the count of what was held back; other lines are not held back by it.
func TestLogWriterSummarisesRepeats(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	w := &logWriter{log: slog.New(slog.NewTextHandler(&buf, nil)), lines: ration.Lines{Every: time.Minute},
		now: func() time.Time { return now }}
	refused := func(port int) {
		line := "[ERR] memberlist: failed to receive: remote state is encrypted and encryption is not configured from=10.0.0.5:" +
			string(rune('0'+port%10)) + "4544\n"
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 59 { // a minute of retries, one a second
		refused(i)
		now = now.Add(time.Second)
	}
	_, _ = w.Write([]byte("[WARN] memberlist: Was able to connect to server but other probes failed\n"))
	now = now.Add(time.Second)
	refused(60) // a minute after the first: written, with the count
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines (first, the other kind, summary), got %d:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "likely_cause=\"a node with BATON_CLUSTER_KEY set") {
		t.Errorf("first line lacks the likely cause: %s", lines[0])
	}
	if !strings.Contains(lines[1], "other probes failed") {
		t.Errorf("second line = %s, want the other kind", lines[1])
	}
	if !strings.Contains(lines[2], "repeated=58") || !strings.Contains(lines[2], "since=1m0s") {
		t.Errorf("summary line = %s, want repeated=58 since=1m0s", lines[2])
	}
}

func TestLineKind(t *testing.T) {
	a := lineKind("[ERR] memberlist: failed to receive: EOF from=172.18.0.5:41234")
	b := lineKind("[ERR] memberlist: failed to receive: EOF from=172.18.0.12:5")
	if a != b {
		t.Fatalf("%q != %q: addresses must not make kinds", a, b)
	}
}

// loggingSeed starts a server node on loopback whose log the test reads.
func loggingSeed(t *testing.T) (*Node, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	seed, err := Start(Config{Name: "seed", BindAddr: "127.0.0.1", Local: true, Meta: Meta{Role: RoleServer},
		JoinPeriod: time.Hour, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seed.Close() })
	return seed, logs
}

// startNamed starts a client node called name that joins seed.
func startNamed(t *testing.T, name string, seed *Node) *Node {
	t.Helper()
	n, err := Start(Config{Name: name, BindAddr: "127.0.0.1", Local: true, Meta: Meta{Role: RoleClient},
		Join: []string{seed.Addr()}, JoinPeriod: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// awaitLogged waits up to 15 s for cond on what the seed logged.
func awaitLogged(t *testing.T, logs *syncBuffer, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the seed logged:\n%s", what, logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
}

// Two live processes under one name, over real memberlist on loopback: a node
// that sees both says which name, where, and the fix.
func TestTwoProcessesWithOneNameAreReported(t *testing.T) {
	seed, logs := loggingSeed(t)
	for range 2 {
		_, _ = startNamed(t, "twin", seed).Join() // the second is refused the name, or not: the seed saw it
	}
	awaitLogged(t, logs, "a report of two processes named twin", func() bool {
		return strings.Contains(logs.String(), "give each its own BATON_NODE_NAME")
	})
	if got := strings.Count(logs.String(), "two processes use one node name"); got != 1 {
		t.Errorf("reported %d times, want once a minute", got)
	}
}

// A node that crashed and came back at another address before the cluster declared
// its old instance dead is a restart, not a mistake: noted, never reported as two
// processes, and given the name once the old instance is declared dead.
func TestARestartAtANewAddressIsNotReportedAsTwoProcesses(t *testing.T) {
	seed, logs := loggingSeed(t)
	old := startNamed(t, "phoenix", seed)
	if _, err := old.Join(); err != nil {
		t.Fatal(err)
	}
	awaitLogged(t, logs, "the seed to see phoenix", func() bool { m, ok := seed.Lookup("phoenix"); return ok && m.State == StateAlive })
	oldAddr := old.Addr()
	old.Close() // a crash: no leave
	reborn := startNamed(t, "phoenix", seed)
	if _, err := reborn.Join(); err != nil {
		t.Fatal(err)
	}
	awaitLogged(t, logs, "the conflict to be judged a restart", func() bool {
		return strings.Contains(logs.String(), "a node restarted at a new address")
	})
	awaitLogged(t, logs, "the name at its new address", func() bool {
		m, ok := seed.Lookup("phoenix")
		return ok && m.State == StateAlive && m.Gossip == reborn.Addr()
	})
	if strings.Contains(logs.String(), "two processes use one node name") {
		t.Errorf("a restart at a new address (%s, then %s) was reported as two processes:\n%s", oldAddr, reborn.Addr(), logs.String())
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a restart at a new address logged an error:\n%s", logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestParseKeys(t *testing.T) {
	a := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	b := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef01234567"))
	for _, tc := range []struct {
		in      string
		keys    int
		wantErr string
	}{
		{"", 0, ""},
		{a, 1, ""},
		{a + "," + b, 2, ""},
		{a + ", " + b, 2, ""},
		{"not base64!", 0, "BATON_CLUSTER_KEY: key 1 must be base64"},
		{a + "," + base64.StdEncoding.EncodeToString([]byte("short")), 0, "key 2 must decode to 16, 24 or 32 bytes, got 5"},
		{a + "," + a, 0, "key 2 repeats key 1"},
		{a + ",", 0, "key 2 must decode to 16, 24 or 32 bytes, got 0"},
	} {
		keys, err := ParseKeys("BATON_CLUSTER_KEY", tc.in)
		switch {
		case tc.wantErr == "" && (err != nil || len(keys) != tc.keys):
			t.Errorf("ParseKeys(%q) = %d keys, %v; want %d keys", tc.in, len(keys), err, tc.keys)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseKeys(%q) error %v, want one saying %q", tc.in, err, tc.wantErr)
		}
	}
}
