// Package state reads the state file of the versions before the raft log:
// baton-state.json, the epoch and every token's fence and record, written whole per
// batch. The server now keeps its state in a raft log (internal/server, durable.go)
// and reads this file once, to migrate it, when its log is new.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

const fileName = "baton-state.json"

// Token is one token's durable state.
type Token struct {
	Name     string `json:"name"`
	Fence    uint64 `json:"fence"`
	Counter  uint64 `json:"counter"`
	Waits    uint64 `json:"waits"`
	Grants   uint64 `json:"grants"`
	Releases uint64 `json:"releases"`
	Held     bool   `json:"held"` // a lease may be out: after a crash, wait a TTL before granting
}

// Snapshot is the whole durable state.
type Snapshot struct {
	Epoch  uint64        `json:"epoch"`
	TTL    time.Duration `json:"ttl_ns"` // the longest session TTL granted, for the grace after a crash
	Tokens []Token       `json:"tokens"`
}

// Store reads and writes snapshots in one directory.
type Store struct {
	dir string
}

// Open prepares dir (creating it) and returns a Store on it.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Load returns the last snapshot; ok is false when there is none yet.
func (s *Store) Load() (snap Snapshot, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(s.dir, fileName))
	if errors.Is(err, fs.ErrNotExist) {
		return Snapshot{}, false, nil
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("state: %w", err)
	}
	if err := json.Unmarshal(b, &snap); err != nil {
		return Snapshot{}, false, fmt.Errorf("state: %s is corrupt: %w", filepath.Join(s.dir, fileName), err)
	}
	return snap, true, nil
}
