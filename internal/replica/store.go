package replica

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Layout of Config.Dir:
//
//	node-id      this server's raft id, written once
//	wal/         the raft log and stable store (hashicorp/raft-wal: segment files and a
//	             small bbolt meta database)
//	snapshots/   raft.FileSnapshotStore
//
// The log store is raft-wal, chosen by measurement over raft-boltdb/v2: see
// docs/raft-store.md. Only this file knows which store it is.
const (
	idFile  = "node-id"
	walDir  = "wal"
	logTail = 512 // recent entries kept in memory for replication (raft.LogCache)
)

// stores is what raft persists through, and how to close it.
type stores struct {
	logs   raft.LogStore
	stable raft.StableStore
	snaps  raft.SnapshotStore
	close  func() error
}

// openStores opens the stores in dir, or in-memory ones when dir is empty.
func openStores(dir string, retain int, logger hclog.Logger) (*stores, error) {
	if dir == "" {
		mem := raft.NewInmemStore()
		return &stores{logs: mem, stable: mem, snaps: raft.NewInmemSnapshotStore(), close: func() error { return nil }}, nil
	}
	if err := os.MkdirAll(filepath.Join(dir, walDir), 0o700); err != nil {
		return nil, fmt.Errorf("replica: state dir: %w", err)
	}
	// raft-wal v0.4.0's Close left its meta database open, and with it the
	// database's file lock: a node reopened in the same process would wait on the
	// lock forever. So the meta database is made here and closed after the WAL (a
	// no-op since v0.4.1, whose Close closes it).
	meta := &metadb.BoltMetaDB{}
	wal, err := raftwal.Open(filepath.Join(dir, walDir), raftwal.WithMetaStore(meta), raftwal.WithLogger(logger.Named("wal")))
	if err != nil {
		meta.Close()
		return nil, fmt.Errorf("replica: open log store in %s: %w", dir, err)
	}
	closeWAL := func() error { return errors.Join(wal.Close(), meta.Close()) }
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, retain, logger.Named("snapshots"))
	if err != nil {
		closeWAL()
		return nil, fmt.Errorf("replica: open snapshot store in %s: %w", dir, err)
	}
	cache, err := raft.NewLogCache(logTail, wal)
	if err != nil {
		closeWAL()
		return nil, err
	}
	return &stores{logs: cache, stable: wal, snaps: snaps, close: closeWAL}, nil
}

// serverID settles this server's raft id. With a dir, the id is kept in dir/node-id:
// a stored id wins over an empty want, and a different want is refused (a volume
// mounted on the wrong server would otherwise join under two names). Without a dir,
// want is used, or a random id is made.
func serverID(dir, want string) (string, error) {
	if dir == "" {
		if want != "" {
			return want, nil
		}
		return randomID()
	}
	path := filepath.Join(dir, idFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		have := string(bytes.TrimSpace(b))
		if have == "" {
			return "", fmt.Errorf("replica: %s is empty", path)
		}
		if want != "" && want != have {
			return "", fmt.Errorf("replica: %s holds id %q, but the configured id is %q: is this the right state directory?", path, have, want)
		}
		return have, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("replica: read server id: %w", err)
	}
	id := want
	if id == "" {
		if id, err = randomID(); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("replica: state dir: %w", err)
	}
	if err := writeFileSync(path, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("replica: write server id: %w", err)
	}
	return id, nil
}

func randomID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// writeFileSync writes path whole or not at all: a temporary file, fsync, rename,
// fsync of the directory.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
