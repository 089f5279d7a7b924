// Package state persists what the baton server must never lose: its epoch, every
// token's fence and record. A snapshot is written whole to a temporary file, fsynced,
// renamed over the old one and the directory fsynced, so a crash leaves either the old
// snapshot or the new one, never a torn file. The server writes a snapshot before it
// sends the grants and replies that depend on it, so a fence that reached a client is
// always on disk: no fence is reused after a crash.
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

// Save makes snap durable before it returns.
func (s *Store) Save(snap *Snapshot) error {
	b, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp := filepath.Join(s.dir, fileName+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("state: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, fileName)); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state: fsync %s: %w", s.dir, err)
	}
	return nil
}
