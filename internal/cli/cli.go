// Package cli holds what both baton binaries do alike: read the environment and warn
// about BATON_ variables they do not know, build the logger, answer -h with the
// configuration table, probe their own health.
package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
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

// LogConfig is what Logger needs of a binary's configuration.
type LogConfig interface {
	Logging() (level, format string)
}

// Config is what Start needs of a binary's configuration: its logging, and a check
// whose errors name the variable at fault.
type Config interface {
	LogConfig
	Validate() error
}

// Start does what both binaries do first: answer healthcheck (by probing healthPath
// on this host's BATON_HTTP_ADDR) and -h, read the BATON_ environment into cfg and
// check it (Configure; exit 2 with one plain line on stderr when it is unusable,
// before any logger exists), build the logger at a level a restart may change, and
// warn about every BATON_ variable cfg does not read. Anything else on the command
// line is an error.
func Start(about, healthPath string, cfg Config) (*slog.Logger, *slog.LevelVar) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "healthcheck":
			os.Exit(Healthcheck(healthPath))
		case "-h", "-help", "--help", "help":
			Usage(os.Stdout, about, cfg)
			os.Exit(0)
		default:
			fmt.Fprintf(os.Stderr, "unknown argument %q\n\n", os.Args[1])
			Usage(os.Stderr, about, cfg)
			os.Exit(2)
		}
	}
	level, err := Configure(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baton:", err)
		os.Exit(2)
	}
	_, format := cfg.Logging()
	logger := Logger(os.Stderr, format, level)
	WarnUnknown(logger, os.Environ(), Known(cfg))
	return logger, level
}

// Configure reads the BATON_ environment into cfg (Load), checks it (cfg.Validate)
// and parses its log level. A value that does not parse and one that parses but is
// out of bounds are alike mistakes in the environment: Start exits 2 for both, with
// this error, which names the variable.
func Configure(cfg Config) (*slog.LevelVar, error) {
	if err := Load(cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	level := new(slog.LevelVar)
	name, _ := cfg.Logging()
	if err := level.UnmarshalText([]byte(name)); err != nil {
		return nil, fmt.Errorf("BATON_LOG_LEVEL: %v", err)
	}
	return level, nil
}

// DeployVars are BATON_ variables that docker-compose.yml, the Makefile, deploy/run.sh
// and the e2e suite read, not the binaries; a shell that exports them for compose may
// run a binary too. A test keeps it equal to what those files read.
var DeployVars = []string{
	// images: compose, the Makefile, deploy/images/build-local.sh
	"BATON_GO_IMAGE", "BATON_PROMETHEUS_IMAGE", "BATON_GRAFANA_IMAGE", "BATON_IMAGE_PREFIX", "BATON_TAG",
	// deploy/run.sh: local or registry images
	"BATON_IMAGES",
	// compose's wiring: how many servers, which host ports
	"BATON_SERVERS", "BATON_SERVER_PORTS", "BATON_GRAFANA_PORT", "BATON_PROMETHEUS_PORT",
	// the e2e suite
	"BATON_COMPOSE", "BATON_E2E_KILLS",
}

// Known lists the BATON_ variables spec reads, as envconfig names them.
func Known(spec any) []string {
	var b bytes.Buffer
	if err := envconfig.Usagef("baton", spec, &b, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		return nil
	}
	return strings.Fields(b.String())
}

// Unknown returns, sorted, the BATON_ variables in environ (KEY=value entries) that
// are neither in known nor in DeployVars, each with the known name closest to it.
func Unknown(environ, known []string) [][2]string {
	ok := map[string]bool{}
	for _, k := range append(append([]string(nil), known...), DeployVars...) {
		ok[k] = true
	}
	var out [][2]string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "BATON_") || ok[k] {
			continue
		}
		out = append(out, [2]string{k, Closest(k, known)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// WarnUnknown logs a warning for every BATON_ variable in environ that this binary
// does not read: a misspelt name would otherwise be ignored without a word.
func WarnUnknown(log *slog.Logger, environ, known []string) {
	for _, u := range Unknown(environ, known) {
		log.Warn("unknown variable ignored: "+u[0]+"; did you mean "+u[1]+"?", "variable", u[0], "closest", u[1])
	}
}

// Closest returns the name in names nearest to s by edit distance (insertions,
// deletions, substitutions and swaps of neighbours, case ignored); the first of
// equals wins. "" if names is empty.
func Closest(s string, names []string) string {
	best, bestD := "", -1
	for _, n := range names {
		if d := distance(strings.ToUpper(s), strings.ToUpper(n)); bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the optimal string alignment distance between a and b (bytes).
func distance(a, b string) int {
	// d[i][j]: distance between a[:i] and b[:j], three rows kept.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// Load reads the BATON_ environment into spec. A value that cannot be converted to
// its field's type is reported as the variable, the value and how to write it:
// BATON_SESSION_TTL="5": not a duration; write it with a unit, like 5s or 200ms.
func Load(spec any) error {
	err := envconfig.Process("baton", spec)
	var pe *envconfig.ParseError
	if errors.As(err, &pe) {
		return errors.New(explain(pe))
	}
	return err
}

// explain says what is wrong with a value envconfig could not convert, by the type
// of its field, and how to write one.
func explain(pe *envconfig.ParseError) string {
	head := fmt.Sprintf("%s=%q: ", pe.KeyName, pe.Value)
	if strings.HasPrefix(pe.TypeName, "map[") {
		return head + "not a list of key:value pairs; write it like a:1,b:2"
	}
	elem, list := strings.CutPrefix(pe.TypeName, "[]")
	k, ok := kinds[strings.TrimRight(elem, "0123456789")] // int64 as int, float32 as float
	if !ok {
		return head + "cannot be read as " + pe.TypeName + ": " + pe.Err.Error()
	}
	what := k.what
	var ne *strconv.NumError
	isNum := errors.As(pe.Err, &ne)
	if isNum && errors.Is(ne.Err, strconv.ErrRange) {
		what = "out of range for " + elem
	}
	if !list {
		return head + what + "; " + k.how
	}
	item := "an item"
	if isNum {
		item = strconv.Quote(ne.Num)
	}
	return head + item + " is " + what + "; write a comma-separated list, like " + k.list
}

// kinds are the field types envconfig converts with words for a bad value, by the
// type's name without its size: what it is not, how to write one, and a list of
// them.
var kinds = map[string]struct{ what, how, list string }{
	"time.Duration": {"not a duration", "write it with a unit, like 5s or 200ms", "5s,200ms"},
	"bool":          {"not a bool", "write true or false", "true,false"},
	"int":           {"not a whole number", "write it in digits, like 3", "1,2,3"},
	"uint":          {"not a whole number of 0 or more", "write it in digits, like 3", "1,2,3"},
	"float":         {"not a number", "write it like 0.5", "0.5,2"},
}

// Logger builds the process logger: JSON (for containers) or text, at a level that a
// restart may change. Durations read as people write them (5s, 200ms) in both.
func Logger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: ReadableDurations}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ReadableDurations is a slog ReplaceAttr that writes a time.Duration as its
// String (5s) rather than as nanoseconds, which the JSON handler would.
func ReadableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
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
// probes its own path (/healthz, or /readyz for a client, which is healthy only while
// it has a server). It reads BATON_HTTP_ADDR like the binary does.
func Healthcheck(path string) int {
	addr := os.Getenv("BATON_HTTP_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	if _, err := Get(context.Background(), LocalURL(addr, path)); err != nil {
		fmt.Fprintln(os.Stderr, "unhealthy:", err)
		return 1
	}
	return 0
}
