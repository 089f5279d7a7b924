package worker

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A release's context outlives the worker's own only by the stop's grace, or up to
// the lease's end if that is sooner, whether the stop comes before the release or
// during it; without a stop it runs to its timeout. The long bounds are an hour: a
// context that ends within the test's deadline ended by the short one.
func TestReleaseContextBoundsAStoppingRelease(t *testing.T) {
	const hour, short = time.Hour, 20 * time.Millisecond
	for _, tc := range []struct {
		name         string
		stopBefore   bool // the stop arrives before the release starts
		grace        time.Duration
		leaseEnd     time.Duration // from now; 0: none known
		leaseEndPast bool
	}{
		{name: "stop during the release: grace", grace: short},
		{name: "stop before the release: grace", stopBefore: true, grace: short},
		{name: "stop during the release: the lease ends first", grace: hour, leaseEnd: short},
		{name: "stop before the release: the lease ends first", stopBefore: true, grace: hour, leaseEnd: short},
		{name: "stop after the lease ended: at once", grace: hour, leaseEndPast: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			if tc.stopBefore {
				stop()
			}
			var end time.Time
			switch {
			case tc.leaseEndPast:
				end = time.Now().Add(-time.Second)
			case tc.leaseEnd > 0:
				end = time.Now().Add(tc.leaseEnd)
			}
			rctx, cancel := releaseContext(ctx, hour, tc.grace, end)
			defer cancel()
			if !tc.stopBefore {
				if err := rctx.Err(); err != nil {
					t.Fatalf("release context ended before the stop: %v", err)
				}
				stop()
			}
			select {
			case <-rctx.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("release context still open 10s after the stop: the hour-long timeout rules")
			}
			if cause := context.Cause(rctx); !errors.Is(cause, errReleaseCut) {
				t.Errorf("cause %v, want errReleaseCut", cause)
			}
		})
	}
}

// Without a stop the timeout rules; the worker's context ending is not a cancel of
// the release by itself; and cancel ends it, once, with no cause of a cut.
func TestReleaseContextWithoutAStop(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	rctx, cancel := releaseContext(ctx, 20*time.Millisecond, time.Hour, time.Time{})
	defer cancel()
	select {
	case <-rctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("release context outlived its timeout")
	}
	if !errors.Is(rctx.Err(), context.DeadlineExceeded) || errors.Is(context.Cause(rctx), errReleaseCut) {
		t.Errorf("err %v, cause %v: want the timeout", rctx.Err(), context.Cause(rctx))
	}

	rctx, cancel = releaseContext(ctx, time.Hour, time.Hour, time.Time{})
	cancel()
	stop() // after the release: nothing left to cut
	cancel()
	if !errors.Is(rctx.Err(), context.Canceled) || errors.Is(context.Cause(rctx), errReleaseCut) {
		t.Errorf("err %v, cause %v: want canceled by its own cancel", rctx.Err(), context.Cause(rctx))
	}
}
