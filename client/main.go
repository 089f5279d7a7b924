// Command client is the baton worker: it finds the server through memberlist and
// loops acquire, critical section, release, think. Configuration comes from BATON_*
// variables (client -h prints them); SIGTERM or SIGINT release, leave and exit 0.
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
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

const about = `baton client: a worker that contends for one token in a loop.

Usage:
  client              run the worker
  client healthcheck  exit 0 if this host's worker answers /healthz
  client -h           this help`

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "healthcheck":
			os.Exit(cli.Healthcheck())
		case "-h", "-help", "--help", "help":
			cli.Usage(os.Stdout, about, &worker.Config{})
			return
		default:
			fmt.Fprintf(os.Stderr, "unknown argument %q\n\n", os.Args[1])
			cli.Usage(os.Stderr, about, &worker.Config{})
			os.Exit(2)
		}
	}
	var cfg worker.Config
	if err := cli.Load(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "baton client:", err)
		os.Exit(2)
	}
	level := new(slog.LevelVar)
	if l, err := server.ParseLevel(cfg.LogLevel); err == nil {
		level.Set(l)
	}
	logger := cli.Logger(os.Stderr, cfg.LogFormat, level)
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
