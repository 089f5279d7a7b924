package replica

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
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
