package e2e

import (
	"os"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/baton-dev/baton/internal/cli"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

// wired are the variables docker-compose.yml sets itself, per service: the
// healthchecks, Prometheus' scrape port, the seeds and the state volume rely on them.
// The README's configuration section says so.
var wired = map[string][]string{
	"server": {"BATON_TOKEN_ADDR", "BATON_HTTP_ADDR", "BATON_GOSSIP_PORT", "BATON_GOSSIP_BIND", "BATON_ADVERTISE",
		"BATON_JOIN", "BATON_NODE_NAME", "BATON_STATE_DIR"},
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
