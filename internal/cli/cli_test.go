package cli

import (
	"bytes"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

type spec struct {
	SessionTTL time.Duration `envconfig:"SESSION_TTL" default:"5s"`
	MaxConns   int           `envconfig:"MAX_CONNS"`
	ClusterKey string        `envconfig:"CLUSTER_KEY"`
	Join       []string      `envconfig:"JOIN"`
	Ignored    bool          `ignored:"true"`
}

func TestKnown(t *testing.T) {
	got := Known(&spec{})
	want := []string{"BATON_SESSION_TTL", "BATON_MAX_CONNS", "BATON_CLUSTER_KEY", "BATON_JOIN"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Known = %q, want %q", got, want)
	}
}

func TestClosest(t *testing.T) {
	known := []string{"BATON_SESSION_TTL", "BATON_MAX_CONNS", "BATON_CLUSTER_KEY", "BATON_CLUSTER_LABEL",
		"BATON_JOIN", "BATON_TOKEN", "BATON_TOKEN_ADDR", "BATON_LOG_LEVEL", "BATON_LOG_FORMAT"}
	for _, tc := range []struct{ in, want string }{
		{"BATON_SESION_TTL", "BATON_SESSION_TTL"},      // a letter missing
		{"BATON_SESSION_TLT", "BATON_SESSION_TTL"},     // two letters swapped
		{"BATON_MAX_CONN", "BATON_MAX_CONNS"},          // plural lost
		{"BATON_CLUSTER_KEYS", "BATON_CLUSTER_KEY"},    // one too many
		{"BATON_CLUSTER_LABLE", "BATON_CLUSTER_LABEL"}, // swap near the end
		{"BATON_join", "BATON_JOIN"},                   // case
		{"BATON_TOKEN_ADR", "BATON_TOKEN_ADDR"},        // nearer the longer name
		{"BATON_LOGLEVEL", "BATON_LOG_LEVEL"},
		{"BATON_LOG_FMT", "BATON_LOG_FORMAT"},
		{"BATON_TOKEN", "BATON_TOKEN"}, // itself
	} {
		if got := Closest(tc.in, known); got != tc.want {
			t.Errorf("Closest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := Closest("BATON_X", nil); got != "" {
		t.Errorf("Closest with no names = %q, want empty", got)
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "abc", 3}, {"abc", "abc", 0},
		{"abc", "abd", 1}, {"abc", "acb", 1}, {"abc", "ab", 1}, {"kitten", "sitting", 3},
	} {
		if got := distance(tc.a, tc.b); got != tc.want {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestWarnUnknown(t *testing.T) {
	environ := []string{"PATH=/bin", "BATON_SESION_TTL=1s", "BATON_JOIN=server", "BATON_GO_IMAGE=x",
		"BATON_MAX_CON=3", "BATONX=1"}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	WarnUnknown(log, environ, Known(&spec{}))
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 warnings (not for known, deployment or non-BATON_ names), got:\n%s", out)
	}
	for i, want := range []string{"BATON_MAX_CON; did you mean BATON_MAX_CONNS?",
		"BATON_SESION_TTL; did you mean BATON_SESSION_TTL?"} {
		if !strings.Contains(lines[i], "level=WARN") || !strings.Contains(lines[i], want) {
			t.Errorf("warning %d = %q, want a WARN with %q", i, lines[i], want)
		}
	}
}

func TestDurationsReadable(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		Logger(&buf, format, new(slog.LevelVar)).Info("x", "session_ttl", 5*time.Second, "in", 250*time.Millisecond)
		out := buf.String()
		for _, want := range []string{"5s", "250ms"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: %q lacks %q", format, out, want)
			}
		}
		if strings.Contains(out, "5000000000") {
			t.Errorf("%s: duration in nanoseconds: %q", format, out)
		}
	}
}
