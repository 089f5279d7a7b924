package cluster

import (
	"errors"
	"strings"
	"testing"
)

func TestGossipPortErr(t *testing.T) {
	inUse := errors.New(`cluster: could not set up network transport: failed to obtain an address: failed to start TCP listener on "127.0.0.1" port 27941: listen tcp 127.0.0.1:27941: bind: address already in use`)
	udpInUse := errors.New(`cluster: could not set up network transport: failed to obtain an address: failed to start UDP listener on "0.0.0.0" port 7946: listen udp 0.0.0.0:7946: bind: address already in use`)
	other := errors.New("cluster: could not set up network transport: failed to obtain an address: failed to start TCP listener on \"10.9.9.9\" port 7946: listen tcp 10.9.9.9:7946: bind: cannot assign requested address")
	for _, tc := range []struct {
		name string
		port int
		err  error
		want string // the whole message; "" for err unchanged
	}{
		{"tcp in use", 27941, inUse, "BATON_GOSSIP_PORT 27941: " + inUse.Error() + ": each process on a host needs its own (0 picks a free one)"},
		{"udp in use", 7946, udpInUse, "BATON_GOSSIP_PORT 7946: " + udpInUse.Error() + ": each process on a host needs its own (0 picks a free one)"},
		{"another bind error", 7946, other, ""},
		{"nil", 7946, nil, ""},
	} {
		got := GossipPortErr(tc.port, tc.err)
		switch {
		case tc.want == "" && got != tc.err:
			t.Errorf("%s: %v, want it unchanged", tc.name, got)
		case tc.want != "" && (got == nil || got.Error() != tc.want || !errors.Is(got, tc.err)):
			t.Errorf("%s: %v\nwant: %s (wrapping the cause)", tc.name, got, tc.want)
		}
	}
	if got := GossipPortErr(1, inUse); !strings.HasPrefix(got.Error(), "BATON_GOSSIP_PORT 1: ") {
		t.Errorf("%v: the port given, not the one in the text, is named", got)
	}
}
