package server

import (
	"encoding/base64"
	"testing"

	"github.com/baton-dev/baton/internal/wire"
)

// While the cluster key changes, a session may be opened with the proof of any of
// the server's keys, and of no other.
func TestAClientProvesAnyOfTheServersKeys(t *testing.T) {
	old, next, other := []byte("old-key-old-key!"), []byte("new-key-new-key!"), []byte("other-key-other!")
	nonce := []byte("0123456789abcdef")
	proof := func(k []byte) []byte { return wire.MAC(k, nonce, "c1", "boot") }
	for _, tc := range []struct {
		name   string
		keys   [][]byte
		proves []byte
		want   bool
	}{
		{"the one key", [][]byte{old}, proof(old), true},
		{"the first of two", [][]byte{next, old}, proof(next), true},
		{"the second of two", [][]byte{next, old}, proof(old), true},
		{"another key", [][]byte{next, old}, proof(other), false},
		{"no proof", [][]byte{old}, nil, false},
		{"a proof for another node", [][]byte{old}, wire.MAC(old, nonce, "c2", "boot"), false},
	} {
		if got := provesAKey(tc.keys, tc.proves, nonce, "c1", "boot"); got != tc.want {
			t.Errorf("%s: provesAKey = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Raft proves BATON_RAFT_KEY, which only servers hold, when it is set; else the
// cluster key.
func TestRaftProvesItsOwnKeyWhenItHasOne(t *testing.T) {
	clusterKeys := [][]byte{[]byte("cluster-key-0123")}
	cfg := DefaultConfig()
	if got := raftKeys(cfg, clusterKeys); len(got) != 1 || string(got[0]) != "cluster-key-0123" {
		t.Errorf("without BATON_RAFT_KEY raft proves %q, want the cluster key", got)
	}
	cfg.RaftKey = base64.StdEncoding.EncodeToString([]byte("raft-key-0123456")) + "," + base64.StdEncoding.EncodeToString([]byte("raft-key-old-012"))
	if got := raftKeys(cfg, clusterKeys); len(got) != 2 || string(got[0]) != "raft-key-0123456" {
		t.Errorf("with BATON_RAFT_KEY raft proves %q, want its two keys, the first first", got)
	}
	if got := raftKeys(DefaultConfig(), nil); got != nil {
		t.Errorf("with no key raft proves %q, want none (plain TCP)", got)
	}
}
