package worker

import (
	"testing"

	"github.com/baton-dev/baton/internal/cluster"
)

// The worker follows a not_leader answer only to an alive server it knows.
func TestServerAt(t *testing.T) {
	server := func(addr, state string, leaving bool) cluster.Member {
		return cluster.Member{Name: addr, Addr: addr, State: state,
			Meta: cluster.Meta{Role: cluster.RoleServer, TokenPort: 7000, Leaving: leaving}}
	}
	members := []cluster.Member{
		server("10.0.0.1", cluster.StateAlive, false),
		server("10.0.0.2", cluster.StateAlive, true),
		server("10.0.0.3", cluster.StateDead, false),
		server("10.0.0.4", cluster.StateLeft, false),
		{Name: "w1", Addr: "10.0.0.5", State: cluster.StateAlive, Meta: cluster.Meta{Role: cluster.RoleClient, TokenPort: 7000}},
	}
	for addr, want := range map[string]bool{
		"10.0.0.1:7000": true,
		"10.0.0.1:7001": false, // another port of a known server
		"10.0.0.2:7000": false, // leaving
		"10.0.0.3:7000": false, // dead
		"10.0.0.4:7000": false, // left
		"10.0.0.5:7000": false, // a client, whatever its meta says
		"10.0.0.9:7000": false, // unknown
		"":              false,
	} {
		if got := serverAt(members, addr); got != want {
			t.Errorf("serverAt(%q) = %v, want %v", addr, got, want)
		}
	}
}
