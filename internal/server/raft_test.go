package server

import (
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/replica"
)

// Bootstrap like Consul's bootstrap_expect: once expect servers have found each
// other, each starts the cluster with the same set, unless a cluster exists already
// (a server leads, or has a log): then this one waits for its leader to add it.
func TestBootstrapSet(t *testing.T) {
	srv := func(name string, leader, hasLog bool) cluster.Member {
		return cluster.Member{Name: name, State: cluster.StateAlive,
			Meta: cluster.Meta{Role: cluster.RoleServer, RaftPort: 7001, Leader: leader, HasLog: hasLog}}
	}
	fresh := []cluster.Member{srv("server-1", false, false), srv("server-2", false, false), srv("server-3", false, false)}
	expecting := func(m cluster.Member, n int) cluster.Member { m.Meta.Expect = n; return m }
	for _, tc := range []struct {
		name    string
		members []cluster.Member
		self    string
		expect  int
		want    string // the set's ids, or why not
	}{
		{"three fresh servers, three expected", fresh, "server-1", 3, "server-1:7001 server-2:7001 server-3:7001"},
		{"two of three found", fresh[:2], "server-1", 3, "too few servers"},
		{"one leads", []cluster.Member{fresh[0], srv("server-2", true, true), fresh[2]}, "server-1", 3, "server-2 leads a cluster"},
		// The caveat this closes: a fresh server joining while an election is under
		// way (no one says it leads) must not start a cluster of its own.
		{"a fresh server beside servers with logs, none leading", []cluster.Member{srv("server-1", false, true), srv("server-2", false, true), srv("server-4", false, false)},
			"server-4", 3, "server-1 has a log: a cluster exists"},
		{"all expect three", []cluster.Member{expecting(fresh[0], 3), expecting(fresh[1], 3), expecting(fresh[2], 3)}, "server-1", 3,
			"server-1:7001 server-2:7001 server-3:7001"},
		// One started with BATON_BOOTSTRAP_EXPECT=2 would start a cluster of two the
		// moment it saw one other, and the third would join it: no one starts one.
		{"one expects two", []cluster.Member{expecting(fresh[0], 3), expecting(fresh[1], 2), expecting(fresh[2], 3)}, "server-1", 3,
			"server-2 expects 2 servers, this one 3"},
		{"this one expects two", []cluster.Member{expecting(fresh[0], 2), expecting(fresh[1], 3)}, "server-1", 2,
			"server-2 expects 3 servers, this one 2"},
		// A server with a log of its own is not held back by it: raft refuses to
		// bootstrap it again, and that ends its waiting.
		{"its own log", []cluster.Member{srv("server-1", false, true), fresh[1], fresh[2]}, "server-1", 3, "server-1:7001 server-2:7001 server-3:7001"},
	} {
		servers, why, _ := bootstrapSet(tc.members, tc.self, tc.expect)
		got := why
		if servers != nil {
			addrs := make([]string, len(servers))
			for i, s := range servers {
				if s.ID+":7001" != s.Addr || !s.Voter {
					t.Errorf("%s: server %+v, want a voter at its name and raft port", tc.name, s)
				}
				addrs[i] = s.Addr
			}
			got = strings.Join(addrs, " ")
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// BATON_RAFT_TIMEOUT is checked, and names itself when out of range.
func TestRaftTimeoutIsChecked(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		ok      bool
	}{{300 * time.Millisecond, true}, {50 * time.Millisecond, true}, {time.Minute, true}, {10 * time.Millisecond, false}, {0, false}, {2 * time.Minute, false}} {
		cfg := DefaultConfig()
		cfg.RaftTimeout = tc.timeout
		err := cfg.Validate()
		if ok := err == nil; ok != tc.ok || (err != nil && !strings.Contains(err.Error(), "BATON_RAFT_TIMEOUT")) {
			t.Errorf("BATON_RAFT_TIMEOUT=%s: Validate() = %v, want ok=%v naming the variable", tc.timeout, err, tc.ok)
		}
	}
}

// A leader opens its batches with their term (fsm.OpTerm) only once every server of
// its configuration reads it: an older one would skip those entries and part from
// the others.
func TestReadsTerms(t *testing.T) {
	conf := []replica.Server{{ID: "server-1"}, {ID: "server-2"}, {ID: "server-3"}}
	for _, tc := range []struct {
		name string
		seen map[string]int
		want bool
	}{
		{"every server reads terms", map[string]int{"server-1": 2, "server-2": 2, "server-3": 3}, true},
		{"one runs the version before", map[string]int{"server-1": 2, "server-2": 1, "server-3": 2}, false},
		{"one never seen", map[string]int{"server-1": 2, "server-2": 2}, false},
		{"a member outside the configuration does not count", map[string]int{"server-1": 2, "server-2": 2, "server-3": 2, "server-4": 1}, true},
	} {
		if got := readsTerms(conf, tc.seen); got != tc.want {
			t.Errorf("%s: readsTerms = %v, want %v", tc.name, got, tc.want)
		}
	}
	if readsTerms(nil, map[string]int{"server-1": 2}) {
		t.Error("an empty configuration (not bootstrapped) reads terms, want not")
	}
}

// Servers that share a membership must all replicate one log: one that does not
// owns tokens of its own, and clients split between them would hold a token twice.
func TestMisplacedServer(t *testing.T) {
	replica := cluster.Meta{Role: cluster.RoleServer, RaftPort: 7001}
	alone := cluster.Meta{Role: cluster.RoleServer}
	client := cluster.Meta{Role: cluster.RoleClient}
	for _, tc := range []struct {
		name       string
		replicated bool
		other      cluster.Meta
		complaint  string // a word of it; empty: none
	}{
		{"two replicas", true, replica, ""},
		{"a replica and a client", true, client, ""},
		{"a server alone and a client", false, client, ""},
		{"a server alone joins a replicated cluster", true, alone, "give it BATON_STATE_DIR"},
		{"two servers alone", false, alone, "run one server"},
		{"a server alone beside a replica", false, replica, "run one server"},
	} {
		got := misplacedServer(tc.replicated, cluster.Member{Name: "other", Meta: tc.other})
		if (tc.complaint == "") != (got == "") || !strings.Contains(got, tc.complaint) {
			t.Errorf("%s: %q, want a complaint with %q", tc.name, got, tc.complaint)
		}
	}
}
