package replica

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter is an hclog.Logger that writes to a slog.Logger: hashicorp/raft and
// its transport log through hclog, baton through slog. Levels map one to one; hclog's
// Trace is slog's Debug-4. The logger's name goes in a "component" attribute.
type hclogAdapter struct {
	base    *slog.Logger // as handed in
	log     *slog.Logger // base with the component and implied args
	name    string
	implied []any
	// level is hclog's own threshold (SetLevel), shared by the loggers derived from
	// this one as hclog's are; NoLevel defers to the slog handler alone.
	level *atomic.Int32
}

// newHclog returns an hclog.Logger named name on top of l.
func newHclog(l *slog.Logger, name string) *hclogAdapter {
	a := &hclogAdapter{base: l, name: name, level: new(atomic.Int32)}
	a.log = a.build()
	return a
}

// build is base with the component and the implied args: rebuilt rather than
// derived, because slog cannot take an attribute back (ResetNamed).
func (a *hclogAdapter) build() *slog.Logger {
	l := a.base
	if a.name != "" {
		l = l.With("component", a.name)
	}
	if len(a.implied) > 0 {
		l = l.With(a.implied...)
	}
	return l
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *hclogAdapter) enabled(l hclog.Level) bool {
	if min := hclog.Level(a.level.Load()); min != hclog.NoLevel && l < min {
		return false
	}
	return a.log.Enabled(context.Background(), slogLevel(l))
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Warn && expected(msg, args) {
		level = hclog.Info
	}
	if level == hclog.Off || !a.enabled(level) {
		return
	}
	a.log.Log(context.Background(), slogLevel(level), msg, formatArgs(args)...)
}

// expected reports whether a warning of hashicorp/raft (v1.8.0: the messages and
// keys below are its) is what a healthy start does, which Log writes at INFO: a
// warning at every start teaches operators to ignore warnings.
//
//   - "heartbeat timeout reached, starting election" with no leader known before
//     (last-leader-id empty): a server that just started, alone or first of its
//     cluster, stands for election. After a leader was known it is a lost leader:
//     WARN.
//   - "no known peers, aborting election": a server with no configuration yet, which
//     only a server that was never bootstrapped has, waiting for its peers.
//   - "appendEntries rejected, sending older logs" with next=1, and "failed to get
//     previous log" with last-index=0: a leader meeting a follower whose log is
//     empty, a new server catching up from the start. With entries on the follower
//     they mean diverged logs: WARN.
func expected(msg string, args []any) bool {
	switch msg {
	case "heartbeat timeout reached, starting election":
		id, _ := argString(args, "last-leader-id")
		addr, _ := argString(args, "last-leader-addr")
		return id == "" && addr == ""
	case "no known peers, aborting election":
		return true
	case "appendEntries rejected, sending older logs":
		next, ok := argString(args, "next")
		return ok && next == "1"
	case "failed to get previous log":
		last, ok := argString(args, "last-index")
		return ok && last == "0"
	}
	return false
}

// argString is the value of key in hclog's key, value args, as text; false if key
// is absent.
func argString(args []any, key string) (string, bool) {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == key {
			return fmt.Sprint(args[i+1]), true
		}
	}
	return "", false
}

// formatArgs renders hclog.Fmt values (raft logs configurations with them), which
// slog would print as a raw slice.
func formatArgs(args []any) []any {
	var out []any // a copy, made at the first change: args may be the caller's
	for i, v := range args {
		f, ok := v.(hclog.Format)
		if !ok || len(f) == 0 {
			continue
		}
		format, ok := f[0].(string)
		if !ok {
			continue
		}
		if out == nil {
			out = slices.Clone(args)
		}
		out[i] = fmt.Sprintf(format, f[1:]...)
	}
	if out == nil {
		return args
	}
	return out
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	b := *a
	b.implied = append(append([]any(nil), a.implied...), args...)
	b.log = b.build()
	return &b
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	b := *a
	b.name = name
	b.log = b.build()
	return &b
}

func (a *hclogAdapter) SetLevel(level hclog.Level) { a.level.Store(int32(level)) }
func (a *hclogAdapter) GetLevel() hclog.Level {
	if l := hclog.Level(a.level.Load()); l != hclog.NoLevel {
		return l
	}
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if a.log.Enabled(context.Background(), slogLevel(l)) {
			return l
		}
	}
	return hclog.Off
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{a: a, opts: *opts}
}

// stdWriter logs each line written to it, at the level its "[LEVEL]" prefix names
// when InferLevels is set, else at ForceLevel or Info.
type stdWriter struct {
	a    *hclogAdapter
	opts hclog.StandardLoggerOptions
}

func (w *stdWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		msg := string(line)
		level := hclog.Info
		if w.opts.ForceLevel != hclog.NoLevel {
			level = w.opts.ForceLevel
		}
		if w.opts.InferLevels {
			for prefix, l := range map[string]hclog.Level{
				"[TRACE]": hclog.Trace, "[DEBUG]": hclog.Debug, "[INFO]": hclog.Info,
				"[WARN]": hclog.Warn, "[ERR]": hclog.Error, "[ERROR]": hclog.Error,
			} {
				if i := strings.Index(msg, prefix); i >= 0 {
					level, msg = l, strings.TrimSpace(msg[i+len(prefix):])
					break
				}
			}
		}
		w.a.Log(level, msg)
	}
	return len(p), nil
}
