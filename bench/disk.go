package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// timeFsync appends 64 B to a file and fsyncs it, one write at a time, for d, in
// dir: a durable server's state directory, beside its raft log. It returns every
// write's time. A durable handoff on one token needs at least one such write, so
// 1/p50 is its ceiling (issue 14's), and 1/mean the ceiling of writes made one
// after another. bench/raftstore measures the same with more variants
// (docs/raft-store.md).
func timeFsync(dir string, d time.Duration) ([]time.Duration, error) {
	f, err := os.CreateTemp(dir, "bench-fsync")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 64)
	var lat []time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); {
		start := time.Now()
		if _, err := f.Write(buf); err != nil { // sequential: the offset advances
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(start))
	}
	if len(lat) == 0 {
		return nil, errors.New("no write completed")
	}
	return lat, nil
}

// summarize is the timing of the writes lat, made in dir.
func summarize(dir string, lat []time.Duration) diskResult {
	lat = slices.Clone(lat)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	slices.Sort(lat)
	pct := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	return diskResult{Dir: dir, Writes: len(lat), P50ms: pct(0.50), P99ms: pct(0.99),
		MeanMs: float64(sum.Microseconds()) / 1000 / float64(len(lat))}
}

// adjacent is one measurement of a durable baton system on one token with the
// disk's append+fsync timed in its own state directory right before it and right
// after it, with nothing else of the bench running: the ceiling it is held to is
// the disk's speed of that moment. On a shared machine the disk changes speed from
// one minute to the next (2 to 4 times); timed for 2 s at the start of a
// repetition, a minute or more away from the measurement, the same code made 0.36×
// and 0.78× of its ceiling in two runs 6 minutes apart.
type adjacent struct {
	Shape  string `json:"shape"`
	System string `json:"system"`
	Rep    int    `json:"rep"`
	// Rate is the measurement's handoffs/s (sections/s where there are none).
	Rate   float64    `json:"rate"`
	Before diskResult `json:"disk_before"`
	After  diskResult `json:"disk_after"`
	// Both is the two timings' writes together: the ceiling's figures.
	Both diskResult `json:"disk_both"`
}

// ratios are the measurement's rate against the disk's 1/p50 and 1/mean (writes
// one after another) in the timings around it: both is what the ceiling is taken
// from, and lo and hi the least and most of the ratio against either timing alone,
// which say how far the disk moved across the measurement.
func (a adjacent) ratios() (p50, mean, lo, hi float64) {
	r := func(ms float64) float64 { return a.Rate * ms / 1000 }
	p50, mean = r(a.Both.P50ms), r(a.Both.MeanMs)
	b, c := r(a.Before.P50ms), r(a.After.P50ms)
	return p50, mean, min(b, c), max(b, c)
}

// timeAround times the disk for half of d in dir, runs measure, and times it for
// the other half; the disk is idle in both (the system's server has no client,
// every other server is stopped).
func timeAround(dir string, d time.Duration, measure func() error) (before, after []time.Duration, err error) {
	if before, err = timeFsync(dir, d/2); err != nil {
		return nil, nil, fmt.Errorf("disk before: %w", err)
	}
	if err := measure(); err != nil {
		return nil, nil, err
	}
	if after, err = timeFsync(dir, d/2); err != nil {
		return nil, nil, fmt.Errorf("disk after: %w", err)
	}
	return before, after, nil
}

// adjacentMarkdown writes every measurement held to the disk's ceiling of its
// moment, and for each shape and system the median of their ratios: the goal's
// figure ("≥ 0.6× the fsync ceiling" is judged on the median against 1/p50).
func (rep *report) adjacentMarkdown(b *strings.Builder) {
	if len(rep.Adjacent) == 0 {
		return
	}
	fmt.Fprintf(b, "\nThe disk's append+fsync of 64 B, one at a time, in the measured server's state directory (under %s), for half of %s right before and half right after "+
		"each measurement on one token: each repetition against the ceiling of its own moment. "+
		"p50 / mean in ms; the ratio is handoffs/s against 1/p50 and against 1/mean of both timings' writes together, "+
		"then against 1/p50 of each timing alone (how far the disk moved across the measurement).\n\n"+
		"| shape | system | rep | handoffs/s | disk before | disk after | both | ceiling 1/p50 | ratio to 1/p50 | ratio to 1/mean | before / after alone |\n"+
		"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n", filepath.Dir(rep.Adjacent[0].Before.Dir), rep.AdjacentEach)
	type key struct{ shape, system string }
	var order []key
	p50s, means := map[key][]float64{}, map[key][]float64{}
	for _, a := range rep.Adjacent {
		p50, mean, lo, hi := a.ratios()
		k := key{a.Shape, a.System}
		if p50s[k] == nil {
			order = append(order, k)
		}
		p50s[k], means[k] = append(p50s[k], p50), append(means[k], mean)
		fmt.Fprintf(b, "| %s | %s | %d | %.0f | %.3f / %.3f | %.3f / %.3f | %.3f / %.3f | %.0f | %.2f× | %.2f× | %.2f–%.2f× |\n",
			a.Shape, a.System, a.Rep, a.Rate, a.Before.P50ms, a.Before.MeanMs, a.After.P50ms, a.After.MeanMs,
			a.Both.P50ms, a.Both.MeanMs, 1000/a.Both.P50ms, p50, mean, lo, hi)
	}
	fmt.Fprintf(b, "\nMedians of the per-repetition ratios (least–most):\n\n| shape | system | reps | to 1/p50 | to 1/mean |\n|---|---|---:|---:|---:|\n")
	for _, k := range order {
		fmt.Fprintf(b, "| %s | %s | %d | %s | %s |\n", k.shape, k.system, len(p50s[k]), spread(p50s[k]), spread(means[k]))
	}
}

// spread is the median of v and its range: "0.71× (0.62–0.80×)".
func spread(v []float64) string {
	v = slices.Clone(v)
	slices.Sort(v)
	return fmt.Sprintf("%.2f× (%.2f–%.2f×)", medianOf(v), v[0], v[len(v)-1])
}

// medianOf is the median of the sorted v, the mean of the middle two when even.
func medianOf(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// adjacentMedians are the medians of system's per-repetition ratios on shape to
// 1/p50 and to 1/mean of the disk's timings around each; ok is false where it has
// none.
func (rep *report) adjacentMedians(shape, system string) (p50, mean float64, ok bool) {
	var p, m []float64
	for _, a := range rep.Adjacent {
		if a.Shape == shape && a.System == system {
			r50, rMean, _, _ := a.ratios()
			p, m = append(p, r50), append(m, rMean)
		}
	}
	if len(p) == 0 {
		return 0, 0, false
	}
	slices.Sort(p)
	slices.Sort(m)
	return medianOf(p), medianOf(m), true
}
