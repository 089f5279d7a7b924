package main

import (
	"errors"
	"os"
	"slices"
	"time"
)

// diskResult is one timing of the disk's append+fsync.
type diskResult struct {
	Dir    string  `json:"dir"`
	Writes int     `json:"writes"`
	P50ms  float64 `json:"append_fsync_p50_ms"`
	P99ms  float64 `json:"append_fsync_p99_ms"`
	// MeanMs is what a write takes on average: writes one at a time, as a single
	// token's handoffs are, make at most 1/MeanMs a second, and on a disk with a long
	// tail that is well below 1/P50ms.
	MeanMs float64 `json:"append_fsync_mean_ms"`
}

// timeFsync appends 64 B to a file and fsyncs it, one write at a time, for d, in the
// directory where the durable servers keep their state (os.TempDir, as their
// os.MkdirTemp): one durable write's time on that disk. A durable handoff on one
// token needs at least one such write, so 1/p50 is its ceiling (issue 14's), and
// 1/mean the ceiling of writes made one after another. bench/raftstore
// measures the same with more variants (docs/raft-store.md).
func timeFsync(d time.Duration) (diskResult, error) {
	f, err := os.CreateTemp("", "bench-fsync")
	if err != nil {
		return diskResult{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 64)
	var lat []time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); {
		start := time.Now()
		if _, err := f.Write(buf); err != nil { // sequential: the offset advances
			return diskResult{}, err
		}
		if err := f.Sync(); err != nil {
			return diskResult{}, err
		}
		lat = append(lat, time.Since(start))
	}
	if len(lat) == 0 {
		return diskResult{}, errors.New("no write completed")
	}
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	return diskResult{Dir: os.TempDir(), Writes: len(lat), P50ms: pct(0.50), P99ms: pct(0.99),
		MeanMs: float64(sum.Microseconds()) / 1000 / float64(len(lat))}, nil
}
