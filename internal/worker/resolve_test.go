package worker

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/baton-dev/baton"

	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/unreachable"
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

// A leader that died keeps saying it leads until the membership declares it dead:
// every other connect goes to another live server, in turn, which names the new
// leader; with no leader known, the servers are tried in turn.
func TestPickAlternatesLeaderAndOthers(t *testing.T) {
	srv := func(name string, leader bool) cluster.Member {
		return cluster.Member{Name: name, State: cluster.StateAlive, Meta: cluster.Meta{Role: cluster.RoleServer, Leader: leader}}
	}
	members := []cluster.Member{srv("server-3", false), srv("server-1", true), srv("server-2", false),
		{Name: "client-1", State: cluster.StateAlive, Meta: cluster.Meta{Role: cluster.RoleClient}},
		{Name: "server-4", State: cluster.StateDead, Meta: cluster.Meta{Role: cluster.RoleServer}}}
	var got []string
	for n := uint64(1); n <= 6; n++ {
		m, _ := pick(members, n, nil, false)
		got = append(got, m.Name)
	}
	if want := []string{"server-1", "server-3", "server-1", "server-2", "server-1", "server-3"}; !slices.Equal(got, want) {
		t.Errorf("connects go to %v, want %v", got, want)
	}
	noLeader := []cluster.Member{srv("server-2", false), srv("server-1", false)}
	got = got[:0]
	for n := uint64(1); n <= 4; n++ {
		m, _ := pick(noLeader, n, nil, false)
		got = append(got, m.Name)
	}
	if want := []string{"server-1", "server-2", "server-2", "server-1"}; !slices.Equal(got, want) {
		t.Errorf("with no leader, connects go to %v, want %v", got, want)
	}
	alone := []cluster.Member{srv("server", false)}
	for n := uint64(1); n <= 3; n++ {
		if m, ok := pick(alone, n, nil, false); !ok || m.Name != "server" {
			t.Errorf("a server alone: connect %d goes to %q (%v)", n, m.Name, ok)
		}
	}
	if _, ok := pick(nil, 1, nil, false); ok {
		t.Error("no member: a server picked")
	}
	// A server alone (no raft port) beside a replicated cluster: never picked,
	// whether the cluster has a leader or is electing one.
	replicated := func(name string, leader bool) cluster.Member {
		m := srv(name, leader)
		m.Meta.RaftPort = 7001
		return m
	}
	stray := srv("server-0", false)
	for _, cl := range [][]cluster.Member{
		{stray, replicated("server-1", true), replicated("server-2", false)},
		{stray, replicated("server-1", false), replicated("server-2", false)},
	} {
		for n := uint64(1); n <= 4; n++ {
			if m, _ := pick(cl, n, nil, false); m.Name == stray.Name {
				t.Errorf("connect %d goes to %s, a server that does not replicate, beside a replicated cluster", n, m.Name)
			}
		}
	}
	// Every replicated server down (a cluster restarting): still not the stray one,
	// once the worker has seen that the servers replicate.
	if m, ok := pick([]cluster.Member{stray}, 1, nil, true); ok {
		t.Errorf("with the replicated servers gone, connect goes to %s, want none", m.Name)
	}
}

// Of two servers that say they lead (a dead leader keeps saying so until the
// cluster declares it dead), connects go to the one of the higher term; a server
// whose connect failed lately is avoided while another is known.
func TestPickPrefersTheNewerLeaderAndAvoidsTheUnreachable(t *testing.T) {
	srv := func(name string, term uint64) cluster.Member {
		return cluster.Member{Name: name, Addr: name, State: cluster.StateAlive,
			Meta: cluster.Meta{Role: cluster.RoleServer, TokenPort: 7000, Leader: term > 0, Term: term}}
	}
	members := []cluster.Member{srv("server-1", 4), srv("server-2", 5), srv("server-3", 0)}
	for n := uint64(1); n <= 5; n += 2 {
		if m, _ := pick(members, n, nil, false); m.Name != "server-2" {
			t.Errorf("connect %d goes to %s, want server-2, leader since term 5 (server-1 says term 4)", n, m.Name)
		}
	}

	var u unreachable.Set
	now := time.Now()
	u.Connected("server-2:7000", errors.New("dial tcp server-2:7000: i/o timeout"), now)
	u.Connected("server-3:7000", fmt.Errorf("%w: server-3:7000 names server-2:7000", baton.ErrNotLeader), now)
	avoid := func(addr string) bool { return u.Recently(addr, now.Add(time.Second)) }
	for n := uint64(1); n <= 4; n++ {
		if m, _ := pick(members, n, avoid, false); m.Name == "server-2" {
			t.Errorf("connect %d goes to server-2, whose last connect failed a second ago", n)
		}
	}
	if !avoid("server-2:7000") || avoid("server-3:7000") {
		t.Errorf("avoided: server-2 %v, server-3 %v; want only server-2 (a not_leader answer is an answer)", avoid("server-2:7000"), avoid("server-3:7000"))
	}
	if u.Recently("server-2:7000", now.Add(unreachable.For)) {
		t.Errorf("server-2 still avoided %s after its failed connect", unreachable.For)
	}
	u.Connected("server-2:7000", nil, now)
	if u.Recently("server-2:7000", now) {
		t.Error("server-2 still avoided after a connect to it succeeded")
	}
	if m, ok := pick(members[1:2], 1, func(string) bool { return true }, false); !ok || m.Name != "server-2" {
		t.Errorf("every server avoided: picked %q (%v), want server-2, the only one", m.Name, ok)
	}
}
