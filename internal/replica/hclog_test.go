package replica

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestHclogAdapter(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := newHclog(base, "raft")

	lines := func() []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if line == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("bad log line %q: %v", line, err)
			}
			out = append(out, m)
		}
		buf.Reset()
		return out
	}

	l.Trace("hidden")
	if got := lines(); len(got) != 0 {
		t.Errorf("Trace below the handler's Debug level was written: %v", got)
	}
	if l.IsTrace() || !l.IsDebug() {
		t.Errorf("IsTrace, IsDebug = %v, %v; want false, true", l.IsTrace(), l.IsDebug())
	}

	l.Named("net").With("peer", "n1").Warn("slow", "servers", hclog.Fmt("%d of %d", 2, 3))
	got := lines()
	if len(got) != 1 {
		t.Fatalf("want one line, got %v", got)
	}
	want := map[string]any{"level": "WARN", "msg": "slow", "component": "raft.net", "peer": "n1", "servers": "2 of 3"}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("%s = %v, want %v (line %v)", k, got[0][k], v, got[0])
		}
	}

	r := l.Named("net").ResetNamed("snapshots")
	if r.Name() != "snapshots" {
		t.Errorf("ResetNamed name = %q", r.Name())
	}
	r.Error("boom")
	if got := lines(); len(got) != 1 || got[0]["component"] != "snapshots" || got[0]["level"] != "ERROR" {
		t.Errorf("ResetNamed line = %v, want component snapshots at ERROR", got)
	}

	l.SetLevel(hclog.Warn)
	l.Info("dropped")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[ERR] from the standard logger")
	if got := lines(); len(got) != 1 || got[0]["msg"] != "from the standard logger" || got[0]["level"] != "ERROR" {
		t.Errorf("after SetLevel(Warn): %v, want only the standard logger's error", got)
	}
}

// raft's warnings that a healthy start gives are written at INFO; the same messages
// when they mean trouble stay at WARN. Messages and args as hashicorp/raft v1.8.0
// logs them (raft.go runFollower and appendEntries, replication.go replicateTo).
func TestHclogAdapterLowersExpectedWarnings(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  string
		args []any
		want string
	}{
		{"election at start", "heartbeat timeout reached, starting election",
			[]any{"last-leader-addr", raft.ServerAddress(""), "last-leader-id", raft.ServerID("")}, "INFO"},
		{"election after a leader was lost", "heartbeat timeout reached, starting election",
			[]any{"last-leader-addr", raft.ServerAddress("10.0.0.2:7001"), "last-leader-id", raft.ServerID("server-2")}, "WARN"},
		{"no configuration yet", "no known peers, aborting election", nil, "INFO"},
		{"follower catching up from an empty log", "appendEntries rejected, sending older logs",
			[]any{"peer", raft.Server{ID: "server-2"}, "next", uint64(1)}, "INFO"},
		{"follower behind or diverged", "appendEntries rejected, sending older logs",
			[]any{"peer", raft.Server{ID: "server-2"}, "next", uint64(42)}, "WARN"},
		{"empty log asked for a previous entry", "failed to get previous log",
			[]any{"previous-index", uint64(7), "last-index", uint64(0), "error", raft.ErrLogNotFound}, "INFO"},
		{"log with a gap", "failed to get previous log",
			[]any{"previous-index", uint64(7), "last-index", uint64(5), "error", raft.ErrLogNotFound}, "WARN"},
		{"an unrelated warning", "failed to contact", []any{"server-id", raft.ServerID("server-2")}, "WARN"},
		{"args missing", "appendEntries rejected, sending older logs", nil, "WARN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := newHclog(slog.New(slog.NewJSONHandler(&buf, nil)), "raft")
			l.Warn(tc.msg, tc.args...)
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			if line["level"] != tc.want || line["msg"] != tc.msg {
				t.Errorf("logged %v %q, want %s", line["level"], line["msg"], tc.want)
			}
		})
	}
	// A handler at WARN drops the lowered ones.
	var buf bytes.Buffer
	l := newHclog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), "raft")
	l.Warn("no known peers, aborting election")
	if buf.Len() != 0 {
		t.Errorf("a handler at WARN wrote %q", buf.String())
	}
}
