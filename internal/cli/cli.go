// Package cli holds what both baton binaries do alike: read the environment, build
// the logger, answer -h with the configuration table, probe their own health.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Usage prints what a binary does and the envconfig table of spec.
func Usage(w io.Writer, about string, spec any) {
	fmt.Fprintln(w, about)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	_ = envconfig.Usagef("baton", spec, tw, envconfig.DefaultTableFormat)
	_ = tw.Flush()
}

// LogConfig is what Start needs of a binary's configuration.
type LogConfig interface {
	Logging() (level, format string)
}

// Start does what both binaries do first: answer healthcheck and -h, read the
// BATON_ environment into cfg (exit 2 when it is unusable), and build the logger
// at a level a restart may change. Anything else on the command line is an error.
func Start(about string, cfg LogConfig) (*slog.Logger, *slog.LevelVar) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "healthcheck":
			os.Exit(Healthcheck())
		case "-h", "-help", "--help", "help":
			Usage(os.Stdout, about, cfg)
			os.Exit(0)
		default:
			fmt.Fprintf(os.Stderr, "unknown argument %q\n\n", os.Args[1])
			Usage(os.Stderr, about, cfg)
			os.Exit(2)
		}
	}
	if err := Load(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "baton:", err)
		os.Exit(2)
	}
	level := new(slog.LevelVar)
	name, format := cfg.Logging()
	if err := level.UnmarshalText([]byte(name)); err != nil {
		fmt.Fprintf(os.Stderr, "baton: BATON_LOG_LEVEL: %v\n", err)
		os.Exit(2)
	}
	return Logger(os.Stderr, format, level), level
}

// Load reads the BATON_ environment into spec.
func Load(spec any) error {
	return envconfig.Process("baton", spec)
}

// Logger builds the process logger: JSON (for containers) or text, at a level that a
// restart may change.
func Logger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// LocalURL turns a listen address like ":8080" into a URL on this host.
func LocalURL(listen, path string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen + path
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path
}

// Get fetches url with a timeout and returns the body of a 200 answer.
func Get(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// Healthcheck is the images' HEALTHCHECK: no shell in a scratch image, so the binary
// probes its own /healthz. It reads BATON_HTTP_ADDR like the binary does.
func Healthcheck() int {
	addr := os.Getenv("BATON_HTTP_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	if _, err := Get(context.Background(), LocalURL(addr, "/healthz")); err != nil {
		fmt.Fprintln(os.Stderr, "unhealthy:", err)
		return 1
	}
	return 0
}
