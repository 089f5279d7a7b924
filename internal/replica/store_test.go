package replica

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// A deposed leader drops the entries it had not committed when it rejoins (raft
// deletes its log's tail), and must still start again afterwards. raft-wal v0.4.0
// marked the segment being written as sealed without writing its index block when
// the cut fell inside it, and then panicked at every start ("sealed segment has no
// index block", hashicorp/raft-wal#31); v0.4.1 writes the block.
func TestLogStoreRestartsAfterItsTailIsCut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), walDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	open := func() (*raftwal.WAL, func()) {
		t.Helper()
		meta := &metadb.BoltMetaDB{}
		w, err := raftwal.Open(dir, raftwal.WithMetaStore(meta))
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return w, func() { w.Close(); meta.Close() }
	}
	w, closeWAL := open()
	payload := bytes.Repeat([]byte("x"), 200)
	for i := uint64(1); i <= 400; i++ { // all in the segment being written
		if err := w.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: payload}); err != nil {
			t.Fatal(err)
		}
	}
	// Cut back the tail, as a new leader whose log differs demands.
	if err := w.DeleteRange(100, 400); err != nil {
		t.Fatalf("delete tail: %v", err)
	}
	if err := w.StoreLog(&raft.Log{Index: 100, Term: 2, Type: raft.LogCommand, Data: payload}); err != nil {
		t.Fatal(err)
	}
	closeWAL()
	w, closeWAL = open()
	defer closeWAL()
	last, err := w.LastIndex()
	if err != nil || last != 100 {
		t.Fatalf("after restart: last index %d (%v), want 100", last, err)
	}
	var l raft.Log
	if err := w.GetLog(99, &l); err != nil || l.Term != 1 {
		t.Fatalf("entry 99 after restart: %+v (%v), want term 1", l, err)
	}
	if err := w.GetLog(100, &l); err != nil || l.Term != 2 {
		t.Fatalf("entry 100 after restart: %+v (%v), want term 2", l, err)
	}
}
