package server

import (
	"strings"
	"testing"
)

// BATON_RAFT_ADVERTISE_PORT is the raft port the other servers dial (a NAT, a port
// mapping, a proxy in front of BATON_RAFT_PORT); 0 means BATON_RAFT_PORT. It is
// checked, and names itself when wrong.
func TestRaftAdvertisePort(t *testing.T) {
	for _, tc := range []struct {
		name            string
		port, advertise int
		want            int    // raftAdvertisePort
		bad             string // "" when valid, else a word of the error
	}{
		{"default: the bound port", 7001, 0, 7001, ""},
		{"mapped", 7001, 17001, 17001, ""},
		{"the same port", 7001, 7001, 7001, ""},
		{"both picked at start", 0, 0, 0, ""},
		{"negative", 7001, -1, 0, "BATON_RAFT_ADVERTISE_PORT must be 0..65535"},
		{"too high", 7001, 65536, 0, "BATON_RAFT_ADVERTISE_PORT must be 0..65535"},
		{"mapped onto a port picked at start", 0, 17001, 0, "needs a fixed BATON_RAFT_PORT"},
	} {
		cfg := DefaultConfig()
		cfg.RaftPort, cfg.RaftAdvertisePort = tc.port, tc.advertise
		err := cfg.Validate()
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: Validate() = %v, want ok", tc.name, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: Validate() = %v, want an error saying %q", tc.name, err, tc.bad)
		case tc.bad == "" && cfg.raftAdvertisePort() != tc.want:
			t.Errorf("%s: raftAdvertisePort() = %d, want %d", tc.name, cfg.raftAdvertisePort(), tc.want)
		}
	}
}
