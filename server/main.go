// Command server is the baton token server. Configuration comes from BATON_*
// variables (server -h prints them); SIGHUP restarts it in place, SIGTERM or SIGINT
// stop it gracefully. Subcommands: status (the status table), healthcheck.
package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/baton-dev/baton/internal/cli"
	"github.com/baton-dev/baton/internal/server"
)

const about = `baton server: hands out named tokens one holder at a time, in FIFO order.

Usage:
  server                run the server
  server status [ADDR]  print members, tokens, holder and counters of the server at ADDR
                        (host:port or a URL; default: this host's BATON_HTTP_ADDR)
  server healthcheck    exit 0 if this host's server answers /healthz
  server -h             this help

Signals: HUP restarts in place; TERM or INT shut down gracefully.`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "status" {
		os.Exit(statusCommand(os.Args[2:]))
	}
	var cfg server.Config
	logger, level := cli.Start(about, "/healthz", &cfg)
	if err := run(cfg, logger, level, nil); err != nil {
		logger.Error("exit", "err", err)
		os.Exit(1)
	}
}

// run serves until SIGTERM or SIGINT, restarting in place on SIGHUP. started, if not
// nil, is told the server once it is up (tests).
func run(cfg server.Config, logger *slog.Logger, level *slog.LevelVar, started func(*server.Server)) error {
	reload := func() (server.Config, error) {
		var c server.Config
		if err := cli.Load(&c); err != nil {
			return c, err
		}
		return c, c.Validate()
	}
	srv, err := server.New(cfg, server.Options{Logger: logger, Level: level, Registry: prometheus.NewRegistry(), Reload: reload})
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := srv.Open(); err != nil {
		return err
	}
	if started != nil {
		started(srv)
	}
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			if _, err := srv.Restart("SIGHUP"); err != nil {
				logger.Error("restart failed", "err", err)
			}
			continue
		}
		logger.Info("shutting down", "signal", sig.String())
		return srv.Close()
	}
	return nil
}
