package server

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// Two servers that do not replicate, in one membership, each own tokens of their
// own, and clients split between them: each says so in /status (and on its page),
// not only once in its log, and says it no more once the other has gone.
func TestServersThatDoNotReplicateSayItInTheirStatus(t *testing.T) {
	open := func(name string, join ...string) *Server {
		cfg := DefaultConfig()
		cfg.TokenAddr, cfg.HTTPAddr, cfg.GossipBind, cfg.GossipPort, cfg.LocalGossip = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0, true
		cfg.NodeName, cfg.Join = name, join
		s, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Open(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := open("server-a")
	defer a.Close()
	b := open("server-b", a.GossipAddr())
	problem := func(s *Server) string {
		st, err := s.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Problem
	}
	await := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s within 10 s; server-a's problem: %q", what, problem(a))
			}
			time.Sleep(20 * time.Millisecond) // polling, with a deadline
		}
	}
	await("both servers to name the other in /status problem", func() bool {
		return strings.HasPrefix(problem(a), "server-b: another server in this cluster, and this one does not replicate") &&
			strings.HasPrefix(problem(b), "server-a: another server")
	})
	b.Close()
	await("server-a's problem to end with server-b gone", func() bool { return problem(a) == "" })
}
