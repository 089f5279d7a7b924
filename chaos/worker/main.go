// Command worker is the chaos run's client: a process that uses the Go client package
// the way an application would and says what it saw. It loops: acquire; write to the
// harness's fenced store; hold (a random time, less if Done closes); write again;
// release or Requeue (at random). Before
// each write it asks lease.Err() and the client's trust deadline, and records both.
// It reaches the servers only through the harness's proxies, and finds the leader
// from the servers' not_leader answers (resolve.go).
// Events go to stdout as JSON lines (package event), the client's log to stderr.
// SIGTERM: give back what it holds, close, exit 0.
//
// With -sabotage it ignores lease.Err() and Done and writes without its fence: a run of such
// workers must make the checker report violations.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/chaos/internal/event"
)

type config struct {
	name, servers, store, token string
	inst, first                 int
	seed                        uint64
	holdMin, holdMax            time.Duration
	thinkMax                    time.Duration
	requeue                     float64
	acquireTimeout              time.Duration
	sabotage                    bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.name, "name", "w0", "node name")
	flag.IntVar(&cfg.inst, "inst", 1, "which process of this name (the harness counts)")
	flag.StringVar(&cfg.servers, "servers", "127.0.0.1:7000", "the servers' token addresses, each as real=via (via: the harness's proxy to it), comma-separated")
	flag.IntVar(&cfg.first, "first", 0, "which of -servers to dial first")
	flag.StringVar(&cfg.store, "store", "", "fenced store URL")
	flag.StringVar(&cfg.token, "token", "counter", "token name")
	flag.Uint64Var(&cfg.seed, "seed", 1, "random seed of this process")
	flag.DurationVar(&cfg.holdMin, "hold-min", 20*time.Millisecond, "shortest hold")
	flag.DurationVar(&cfg.holdMax, "hold-max", 120*time.Millisecond, "longest hold")
	flag.DurationVar(&cfg.thinkMax, "think-max", 20*time.Millisecond, "longest pause after a Release")
	flag.Float64Var(&cfg.requeue, "requeue", 0.5, "probability of Requeue instead of Release")
	flag.DurationVar(&cfg.acquireTimeout, "acquire-timeout", 30*time.Second, "give up an Acquire or Requeue after this")
	flag.BoolVar(&cfg.sabotage, "sabotage", false, "ignore lease.Err() and write without the fence")
	flag.Parse()

	routes, err := parseRoutes(cfg.servers)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	res := newResolver(routes, cfg.first)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("w", cfg.name, "inst", cfg.inst)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, res, logger); err != nil {
		logger.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, res *resolver, logger *slog.Logger) error {
	if cfg.store == "" {
		return errors.New("-store is required")
	}
	out := event.NewWriter(os.Stdout)
	c, err := baton.Dial(ctx, baton.Config{Resolve: res.Resolve, Follow: res.Follow, Dial: res.Dial, OnConnect: res.connected,
		Node: cfg.name, Logger: logger})
	if err != nil {
		if ctx.Err() != nil {
			return nil // told to stop before the first session
		}
		return err
	}
	defer c.Close()
	w := &worker{cfg: cfg, c: c, out: out, log: logger, rng: rand.New(rand.NewPCG(cfg.seed, uint64(cfg.inst))),
		store: newStoreClient(cfg.store)}
	w.emit(event.Event{Kind: event.Start, Pid: os.Getpid()})
	w.loop(ctx)
	w.emit(event.Event{Kind: event.Stop})
	return nil
}

type worker struct {
	cfg   config
	c     *baton.Client
	out   *event.Writer
	log   *slog.Logger
	rng   *rand.Rand
	store *storeClient
}

func (w *worker) emit(e event.Event) int64 {
	e.W, e.Inst, e.Token = w.cfg.name, w.cfg.inst, w.cfg.token
	if e.T == 0 {
		e.T = event.Now()
	}
	w.out.Emit(e)
	return e.T
}

// loop runs until ctx ends; a lease held then is given back before it returns.
func (w *worker) loop(ctx context.Context) {
	var lease *baton.Lease
	for {
		if lease == nil {
			if ctx.Err() != nil {
				return
			}
			call := w.emit(event.Event{Kind: event.Acquire})
			actx, cancel := context.WithTimeout(ctx, w.cfg.acquireTimeout)
			l, err := w.c.Acquire(actx, w.cfg.token)
			cancel()
			if err != nil {
				w.emit(event.Event{Kind: event.AcquireErr, Err: err.Error()})
				w.sleep(ctx, 50*time.Millisecond) // not in a tight loop if the server refuses
				continue
			}
			w.emit(event.Event{Kind: event.Grant, Fence: l.Fence, Counter: l.Record.Counter, Call: call})
			lease = l
		}
		if ctx.Err() == nil {
			w.write(lease)
			w.hold(ctx, lease)
		}
		if ctx.Err() == nil {
			w.write(lease)
		}
		lease = w.release(ctx, lease)
	}
}

// release gives l back, by Requeue (returning the next lease) or by Release.
func (w *worker) release(ctx context.Context, l *baton.Lease) *baton.Lease {
	rec := baton.Record{Counter: l.Record.Counter + 1}
	// Never cancelled by the stop signal: a Requeue withdrawn in the queue would leave
	// its release's outcome unknown. Bounded by the timeout instead.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.acquireTimeout)
	defer cancel()
	if ctx.Err() == nil && w.rng.Float64() < w.cfg.requeue {
		call := w.emit(event.Event{Kind: event.Release, Op: "requeue", Fence: l.Fence, Counter: rec.Counter})
		next, err := l.Requeue(rctx, rec)
		w.emit(event.Event{Kind: event.ReleaseRet, Op: "requeue", Fence: l.Fence, Class: classify(err), Err: errString(err)})
		if err != nil {
			return nil
		}
		w.emit(event.Event{Kind: event.Grant, Fence: next.Fence, Counter: next.Record.Counter, Call: call})
		return next
	}
	w.emit(event.Event{Kind: event.Release, Op: "release", Fence: l.Fence, Counter: rec.Counter})
	err := l.Release(rctx, rec)
	w.emit(event.Event{Kind: event.ReleaseRet, Op: "release", Fence: l.Fence, Class: classify(err), Err: errString(err)})
	w.sleep(ctx, w.between(0, w.cfg.thinkMax))
	return nil
}

// write asks whether the lease is still trusted and, if so (or if sabotaging),
// writes to the store with its fence. The check's stamp is taken before Err is
// read, so the trusted interval it ends is never later than the truth.
func (w *worker) write(l *baton.Lease) {
	t0, now := event.Now(), time.Now()
	err := l.Err()
	info := w.c.Info()
	e := event.Event{T: t0, Kind: event.Check, Fence: l.Fence, Trusted: err == nil, Err: errString(err)}
	// Deadlines only grow; if the one read after Err had passed before Err was
	// called, Err was asked after the deadline.
	if !info.Deadline.IsZero() && !info.Deadline.After(now) {
		e.Past, e.Late = true, int64(now.Sub(info.Deadline))
	}
	e.Acted = err == nil || w.cfg.sabotage
	w.emit(e)
	if !e.Acted {
		return
	}
	sent := l.Fence
	if w.cfg.sabotage {
		sent = 0
	}
	ok, werr := w.store.write(storeWrite{W: w.cfg.name, Inst: w.cfg.inst, Lease: l.Fence, Fence: sent, Value: l.Record.Counter + 1})
	w.emit(event.Event{Kind: event.Write, Fence: l.Fence, Accepted: ok, Err: errString(werr)})
}

func (w *worker) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)))
}

// hold keeps the lease for a random time, less if Done closes first (unless
// sabotaging: then Done is ignored).
func (w *worker) hold(ctx context.Context, l *baton.Lease) {
	var done <-chan struct{}
	if !w.cfg.sabotage {
		done = l.Done()
	}
	t := time.NewTimer(w.between(w.cfg.holdMin, w.cfg.holdMax))
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	case <-ctx.Done():
	}
}

// sleep is the worker's think time (not synchronisation): it ends early
// when the worker is told to stop.
func (w *worker) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// classify names a release's outcome as the caller can know it. Only ErrStaleFence
// and ErrLeaseLost say that nothing changed; any other error leaves it unknown.
func classify(err error) string {
	switch {
	case err == nil:
		return event.OK
	case errors.Is(err, baton.ErrStaleFence), errors.Is(err, baton.ErrLeaseLost):
		return event.Refused
	default:
		return event.Unknown
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return fmt.Sprint(err)
}
