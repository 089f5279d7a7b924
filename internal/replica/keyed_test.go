package replica_test

import (
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/baton-dev/baton/internal/replica"
)

// forgeHeartbeat sends node an AppendEntries from a peer of no cluster, claiming
// the leadership of a term far above the cluster's, as anyone who reaches the raft
// port can; it says what the node answered.
func forgeHeartbeat(t *testing.T, node *replica.Node, term uint64) error {
	t.Helper()
	intruder, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	req := &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(intruder.LocalAddr())},
		Term:      term,
	}
	var resp raft.AppendEntriesResponse
	return intruder.AppendEntries(raft.ServerID(node.ID()), raft.ServerAddress(node.Addr()), req, &resp)
}

// Whoever reaches a server's raft port can speak raft to it: a forged leader of a
// higher term is followed (its term is taken and kept, the real leader is deposed;
// with entries, it would rewrite the log). With a cluster key, raft runs over TLS
// between the holders of the key, and the forgery is refused before raft reads it;
// the servers that hold the key replicate as before.
func TestRaftSpeaksOnlyWithHoldersOfTheClusterKey(t *testing.T) {
	const forged = 1000
	t.Run("without a key, a forged leader is followed", func(t *testing.T) {
		c := newCluster(t, 3, false)
		c.apply("a")
		c.checkSame([]string{"a"})
		target := c.nodes[(c.waitLeader(electionBound)+1)%3]
		if err := forgeHeartbeat(t, target, forged); err != nil {
			t.Fatalf("the forged heartbeat was not answered: %v", err)
		}
		if got := target.Term(); got < forged {
			t.Fatalf("term %d after a forged leader's heartbeat of term %d: the forgery did not reach raft, so this test shows nothing", got, forged)
		}
	})
	t.Run("with a key, a peer without it is refused", func(t *testing.T) {
		key := []byte("0123456789abcdef0123456789abcdef")
		var refused atomic.Int64
		c := newCluster(t, 3, false, func(cfg *replica.Config) {
			cfg.Keys = [][]byte{key}
			cfg.Hooks.Refused = func(string, string, error) { refused.Add(1) }
		})
		c.apply("a")
		c.checkSame([]string{"a"})
		target := c.nodes[(c.waitLeader(electionBound)+1)%3]
		before := target.Term()
		if err := forgeHeartbeat(t, target, forged); err == nil {
			t.Error("a peer without the key had its heartbeat answered")
		}
		if got := target.Term(); got >= forged || got < before {
			t.Errorf("term %d after the refused forgery (was %d): raft took the forged term", got, before)
		}
		if refused.Load() == 0 {
			t.Error("the refusal was not reported (Hooks.Refused)")
		}
		c.apply("b") // the holders of the key still replicate
		c.checkSame([]string{"a", "b"})
	})
}
