// Command client is the baton worker: it finds the server through memberlist and
// loops acquire, critical section, release, think. Configuration comes from BATON_*
// variables (client -h prints them); SIGTERM, SIGINT or SIGHUP (its terminal closed)
// release what it holds, leave and exit 0.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/cli"
	"github.com/baton-dev/baton/internal/worker"
)

const about = `baton client: a worker that contends for one token in a loop.

Usage:
  client              run the worker
  client healthcheck  exit 0 if this host's worker is connected to a server (/readyz)
  client -h           this help

Signals: TERM, INT or HUP release the token if held, leave the cluster and exit 0.`

// stopSignals stop the worker gracefully. HUP is among them: a worker started from
// a terminal gets it when the terminal closes, and would otherwise die (status 129)
// holding its token until the session expires. Not when HUP is ignored at start
// (nohup): catching it would undo that, and the worker would stop at logout.
func stopSignals() []os.Signal {
	sigs := []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	return sigs
}

func main() {
	var cfg worker.Config
	logger, _ := cli.Start(about, "/readyz", &cfg)
	if err := run(cfg, logger, nil); err != nil {
		logger.Error("exit", "err", err)
		os.Exit(1)
	}
}

// run works until one of stopSignals arrives, then stops the worker and returns nil.
// started, if not nil, is told the worker once the signals are caught (tests).
func run(cfg worker.Config, logger *slog.Logger, started func(*worker.Worker)) error {
	w, err := worker.New(cfg, prometheus.NewRegistry(), logger)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, stopSignals()...)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case sig := <-sigs:
			cancel(fmt.Errorf("signal %s", sig))
		case <-ctx.Done():
		}
	}()
	defer func() { cancel(nil); <-watched }()
	if started != nil {
		started(w)
	}
	return w.Run(ctx)
}
