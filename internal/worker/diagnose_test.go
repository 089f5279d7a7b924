package worker

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton"
)

func TestDiagnose(t *testing.T) {
	refused := func(code string) error { return fmt.Errorf("%w: %s: hello refused", baton.ErrRefused, code) }
	notLeader := fmt.Errorf("%w: a:7000 knows no leader", baton.ErrNotLeader)
	for _, tc := range []struct {
		name  string
		v     view
		cause string
		words string
	}{
		{"connected", view{connected: true, joinErr: errors.New("EOF")}, "", ""},
		{"wrong key", view{joinErr: errors.New("failed to join 1.2.3.4:7946: no installed keys could decrypt the message")},
			"join:key", "BATON_CLUSTER_KEY"},
		{"key on one side", view{joinErr: errors.New("failed to join x: remote state is encrypted and encryption is not configured")},
			"join:key", "BATON_CLUSTER_KEY"},
		{"wrong label", view{joinErr: errors.New("1 error occurred:\n\t* failed to join 172.18.0.2:7946: EOF\n\n")},
			"join:label", "BATON_CLUSTER_LABEL"},
		{"no seed", view{seeds: "srv", joinErr: errors.New("failed to resolve srv: lookup srv: no such host")},
			"join:unreachable", "BATON_JOIN (srv)"},
		{"seed is the token port", view{seeds: "127.0.0.1:27001", joinErr: errors.New("1 error occurred:\n\t* failed to join 127.0.0.1:27001: received invalid msgType (0), expected pushPullMsg (6)\n\n")},
			"join:not-gossip", "BATON_JOIN (127.0.0.1:27001): a seed answers, but not as a gossip port; is that the gossip port (BATON_GOSSIP_PORT, 7946), not the token port (7000)?"},
		{"seed fails otherwise", view{seeds: "s", joinErr: errors.New("failed to join s:7946: something new")},
			"join:other", "cannot join the cluster through BATON_JOIN (s)"},
		{"joined, no server", view{members: 3}, "no-server", "no member is a server"},
		{"alone, no join yet", view{members: 1, seeds: "server"}, "alone", "no server in the cluster yet"},
		{"refused: key", view{serverAddr: "a:7000", dialErr: refused("auth")}, "refused:auth", "BATON_CLUSTER_KEY"},
		{"refused: version", view{serverAddr: "a:7000", dialErr: refused("version")}, "refused:version", "version"},
		{"refused: other", view{serverAddr: "a:7000", dialErr: refused("too_many")}, "refused", "refuses"},
		{"not leader, none known", view{serverAddr: "a:7000", dialErr: notLeader}, "no-leader", "election"},
		{"not leader, though it says it leads", view{serverAddr: "a:7000", leads: true, dialErr: notLeader}, "not-leader", "a:7000"},
		{"token port closed", view{serverAddr: "a:7000", dialErr: errors.New("connection refused")}, "dial", "a:7000"},
		{"connecting", view{serverAddr: "a:7000"}, "connecting", "a:7000"},
		// A server seen in the cluster outranks an old join error.
		{"server known", view{serverAddr: "a:7000", joinErr: errors.New("EOF")}, "connecting", "a:7000"},
	} {
		g := diagnose(tc.v)
		if g.cause != tc.cause || !strings.Contains(g.msg, tc.words) {
			t.Errorf("%s: diagnose = %q %q, want %q with %q", tc.name, g.cause, g.msg, tc.cause, tc.words)
		}
	}
}

// The doctor stays quiet for grace, warns once per cause, again on a new cause, and
// again for the same cause only after a connection in between.
func TestDoctorWarnsOncePerCause(t *testing.T) {
	var buf bytes.Buffer
	d := &doctor{log: slog.New(slog.NewTextHandler(&buf, nil)), grace: 5 * time.Second}
	t0 := time.Unix(0, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	key := diagnosis{cause: "join:key", msg: "key", err: errors.New("no installed keys")}
	label := diagnosis{cause: "join:label", msg: "label"}
	steps := []struct {
		at   float64
		g    diagnosis
		want string // the log line's start, "" for none
	}{
		{0, diagnosis{cause: "alone", msg: "alone"}, "level=INFO msg=\"looking for the server\""},
		{1, diagnosis{}, ""}, // a healthy start: connected within a second, no warning
		{10, key, "level=INFO msg=\"looking for the server\""},
		{12, key, ""},
		{15, key, "level=WARN msg=key"},
		{20, key, ""},
		{25, label, ""},
		{30, label, "level=WARN msg=label"},
		{31, key, ""},
		{36, key, "level=WARN msg=key"},
		{37, diagnosis{}, "level=INFO msg=\"connected: the earlier problem is gone\""},
		{40, key, "level=INFO msg=\"looking for the server\""},
		{45, key, "level=WARN msg=key"},
	}
	for _, s := range steps {
		buf.Reset()
		d.observe(at(s.at), s.g)
		got := strings.TrimSpace(buf.String())
		if s.want == "" && got != "" || s.want != "" && !strings.Contains(got, s.want) {
			t.Errorf("at %vs (%s): logged %q, want %q", s.at, s.g.cause, got, s.want)
		}
	}
}

// The client package's failed connects are written at DEBUG (the doctor, told by
// Config.OnConnect, says what they mean); everything else passes unchanged.
func TestDialWatch(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(&dialWatch{next: slog.NewTextHandler(&buf, nil)})
	dialErr := fmt.Errorf("%w: auth: bad proof", baton.ErrRefused)
	log.With("node", "w1").Warn("connect failed, retrying", "err", dialErr, "attempt", 1)
	log.Debug("connect failed, retrying", "err", dialErr, "attempt", 2)
	log.Warn("connection lost", "err", "EOF")
	out := buf.String()
	if strings.Contains(out, "connect failed") || !strings.Contains(out, "level=WARN msg=\"connection lost\"") {
		t.Fatalf("at INFO, want only the other line:\n%s", out)
	}
	buf.Reset()
	log = slog.New(&dialWatch{next: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})})
	log.Warn("connect failed, retrying", "err", dialErr, "attempt", 1)
	if !strings.Contains(buf.String(), "level=DEBUG msg=\"connect failed, retrying\"") || !strings.Contains(buf.String(), "attempt=1") {
		t.Fatalf("at DEBUG, want the line demoted with its attributes: %s", buf.String())
	}
}

func TestOneLine(t *testing.T) {
	err := errors.New("1 error occurred:\n\t* failed to join 127.0.0.1:7946: EOF\n\n")
	if got, want := oneLine(err), "failed to join 127.0.0.1:7946: EOF"; got != want {
		t.Fatalf("oneLine = %q, want %q", got, want)
	}
	err = errors.New("2 errors occurred:\n\t* a\n\t* b\n\n")
	if got, want := oneLine(err), "2 errors occurred:; a; b"; got != want {
		t.Fatalf("oneLine = %q, want %q", got, want)
	}
}
