package e2e

import (
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/baton-dev/baton/internal/cli"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

// wired are the variables docker-compose.yml sets itself (or leaves unset on
// purpose), per service: the healthchecks, Prometheus' scrape port, the seeds, the
// raft cluster and the state volume rely on them. The README's configuration section
// says so.
var wired = map[string][]string{
	"server": {"BATON_TOKEN_ADDR", "BATON_HTTP_ADDR", "BATON_GOSSIP_PORT", "BATON_GOSSIP_BIND", "BATON_ADVERTISE",
		"BATON_JOIN", "BATON_NODE_NAME", "BATON_STATE_DIR", "BATON_BOOTSTRAP_EXPECT", "BATON_RAFT_PORT",
		"BATON_RAFT_ADVERTISE_PORT"}, // unset: the replicas reach each other's BATON_RAFT_PORT on the compose network
	"client": {"BATON_HTTP_ADDR", "BATON_GOSSIP_PORT", "BATON_GOSSIP_BIND", "BATON_ADVERTISE", "BATON_JOIN",
		"BATON_NODE_NAME"},
}

// Every variable a binary documents reaches its container from the shell, unless
// compose wires it: a BATON_MAX_CONNS set on the host must not be ignored silently.
func TestComposePassesEveryVariable(t *testing.T) {
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	known := map[string][]string{"server": cli.Known(&server.Config{}), "client": cli.Known(&worker.Config{})}
	for svc, vars := range known {
		env := doc.Services[svc].Environment
		isWired := map[string]bool{}
		for _, v := range wired[svc] {
			isWired[v] = true
		}
		for _, v := range vars {
			val, ok := env[v]
			switch {
			case isWired[v]:
				if ok && strings.Contains(val, "${"+v) {
					t.Errorf("%s: %s is wired by compose but taken from the shell: %q", svc, v, val)
				}
			case !ok:
				t.Errorf("%s: %s is not passed to the container", svc, v)
			case !strings.HasPrefix(val, "${"+v+":-") && !strings.HasPrefix(val, "${"+v+"}"):
				t.Errorf("%s: %s = %q, want it from the shell: ${%s:-default}", svc, v, val, v)
			}
		}
		var extra []string
		for k := range env {
			if strings.HasPrefix(k, "BATON_") && !contains(vars, k) {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		if len(extra) > 0 {
			t.Errorf("%s: compose sets %v, which the binary does not read (it would warn)", svc, extra)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The server service runs as many replicas as the first election waits for, by
// default three, both from BATON_SERVERS; each with a name of its own (no
// BATON_NODE_NAME: the container's), one host port each (a range, or none), and the
// one state volume they share, each in its own directory under it.
func TestComposeRunsThreeServers(t *testing.T) {
	var doc struct {
		Services map[string]struct {
			Deploy struct {
				Replicas string `yaml:"replicas"`
			} `yaml:"deploy"`
			Environment map[string]string `yaml:"environment"`
			Ports       []string          `yaml:"ports"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	readYAML(t, "../docker-compose.yml", &doc)
	srv := doc.Services["server"]
	const servers = "${BATON_SERVERS:-3}"
	if srv.Deploy.Replicas != servers {
		t.Errorf("server: deploy.replicas %q, want %s", srv.Deploy.Replicas, servers)
	}
	if got := srv.Environment["BATON_BOOTSTRAP_EXPECT"]; got != srv.Deploy.Replicas {
		t.Errorf("server: BATON_BOOTSTRAP_EXPECT %q, want the replicas' number %q: servers that start together must agree on the first configuration", got, srv.Deploy.Replicas)
	}
	replicas := 3
	if v, ok := srv.Environment["BATON_NODE_NAME"]; ok {
		t.Errorf("server: BATON_NODE_NAME = %q would name every replica alike", v)
	}
	if got := srv.Environment["BATON_JOIN"]; got != "server" {
		t.Errorf("server: BATON_JOIN %q, want server (the service's DNS name: every replica)", got)
	}
	for _, p := range srv.Ports {
		// "${BATON_SERVER_PORTS:-8080-8082}:8080": the default range must hold a
		// port per replica, or the replicas beyond it fail to start.
		def := p
		if i := strings.Index(p, ":-"); i >= 0 {
			def = p[i+2 : strings.Index(p, "}")]
		}
		lo, hi, isRange := strings.Cut(def[strings.LastIndex(def, ":")+1:], "-")
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if !isRange || err1 != nil || err2 != nil || b-a+1 < replicas {
			t.Errorf("server: port %q: a fixed host port collides across %d replicas; give a range of at least that many", p, replicas)
		}
	}
	if len(srv.Volumes) != 1 || !strings.HasSuffix(srv.Volumes[0], ":"+srv.Environment["BATON_STATE_DIR"]) {
		t.Errorf("server: volumes %v, want the one state volume at BATON_STATE_DIR %s", srv.Volumes, srv.Environment["BATON_STATE_DIR"])
	}
}
