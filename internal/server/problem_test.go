package server

import (
	"strings"
	"testing"
	"time"
)

// Two servers that do not replicate, in one membership, each own tokens of their
// own, and clients split between them: each says so in /status (and on its page),
// not only once in its log, and says it no more once the other has gone.
func TestServersThatDoNotReplicateSayItInTheirStatus(t *testing.T) {
	a := openLoopbackServer(t, func(c *Config) { c.NodeName = "server-a" })
	b := openLoopbackServer(t, func(c *Config) { c.NodeName, c.Join = "server-b", []string{a.GossipAddr()} })
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
