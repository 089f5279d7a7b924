// Command client is the baton worker: it finds the server through memberlist and
// loops acquire, critical section, release, think. Configuration comes from BATON_*
// variables (client -h prints them); SIGTERM or SIGINT release, leave and exit 0.
package main

import (
	"context"
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
  client -h           this help`

func main() {
	var cfg worker.Config
	logger, _ := cli.Start(about, "/readyz", &cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	w, err := worker.New(cfg, prometheus.NewRegistry(), logger)
	if err == nil {
		err = w.Run(ctx)
	}
	if err != nil {
		logger.Error("exit", "err", err)
		os.Exit(1)
	}
}
