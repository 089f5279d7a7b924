package main

import (
	"strings"
	"testing"
	"time"
)

func ms(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

// A repetition is held to the disk's timings around it: 1,000 handoffs/s against
// writes of 0.5 ms at p50 (a ceiling of 2,000/s) is 0.5×; the tail of the writes
// moves the mean, not the p50.
func TestAdjacentRatios(t *testing.T) {
	before, after := ms(0.4, 0.4, 0.4, 2.0), ms(0.6, 0.6, 0.6, 0.6)
	a := adjacent{Rate: 1000, Before: summarize("d", before), After: summarize("d", after),
		Both: summarize("d", append(before, after...))}
	if a.Before.P50ms != 0.4 || a.After.P50ms != 0.6 || a.Both.P50ms != 0.6 {
		t.Fatalf("p50s %v %v %v", a.Before.P50ms, a.After.P50ms, a.Both.P50ms)
	}
	if a.Before.MeanMs != 0.8 {
		t.Errorf("mean before %v, want 0.8", a.Before.MeanMs)
	}
	p50, mean, lo, hi := a.ratios()
	if p50 != 0.6 || mean != 0.7 || lo != 0.4 || hi != 0.6 {
		t.Errorf("ratios %v %v %v %v, want 0.6 0.7 0.4 0.6", p50, mean, lo, hi)
	}
}

// The goal's figure is the median of the per-repetition ratios, each against its
// own moment's ceiling, not the median rate against the median ceiling.
func TestAdjacentMedians(t *testing.T) {
	rep := &report{AdjacentEach: "2s"}
	for i, c := range []struct{ rate, p50 float64 }{{1000, 0.5}, {3000, 0.25}, {2000, 0.4}} {
		d := summarize("d", ms(c.p50))
		rep.Adjacent = append(rep.Adjacent, adjacent{Shape: "N=8, one token", System: "baton-durable", Rep: i + 1,
			Rate: c.rate, Before: d, After: d, Both: d})
	}
	p50, _, ok := rep.adjacentMedians("N=8, one token", "baton-durable") // 0.5, 0.75, 0.8
	if !ok || p50 != 0.75 {
		t.Errorf("median %v %v, want 0.75", p50, ok)
	}
	if _, _, ok := rep.adjacentMedians("N=8, one token", "baton-cluster"); ok {
		t.Error("a median for a system not measured")
	}
	var b strings.Builder
	rep.adjacentMarkdown(&b)
	if !strings.Contains(b.String(), "| N=8, one token | baton-durable | 3 | 0.75× (0.50–0.80×) |") {
		t.Errorf("no median line in\n%s", b.String())
	}
}
