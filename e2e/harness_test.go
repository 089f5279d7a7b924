//go:build e2e

// Package e2e drives the real compose deployment with the commands a user types
// (docker compose up/kill/exec, docker kill/pause/network disconnect) and checks the
// outcome through the server's /status and /metrics, the workers' /status and
// Prometheus. Run with: make e2e (go test -tags e2e ./e2e).
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

// deployment is one compose project.
type deployment struct {
	t        *testing.T
	project  string
	compose  []string
	env      []string
	dir      string
	server   string // http://127.0.0.1:port
	prom     string
	ttl      time.Duration
	services []string             // what `up` starts: no grafana, which cannot be pulled here
	byNode   map[string]container // client containers by node name, refreshed on a miss
	failed   *failures            // shared by the scenarios' copies
}

// failures keeps what the scenarios reported, to repeat it after the containers'
// logs at the end of a failed run: CI keeps only the tail of the output, and 40
// lines from each of ten containers pushed the assertion itself out of it.
type failures struct {
	mu   sync.Mutex
	msgs []string
}

func (f *failures) add(test, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, test+": "+msg)
}

func (f *failures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.msgs, "\n")
}

// errorf reports a failure and keeps going; fatalf reports it and stops the scenario.
func (d *deployment) errorf(format string, args ...any) {
	d.t.Helper()
	d.failed.add(d.t.Name(), fmt.Sprintf(format, args...))
	d.t.Errorf(format, args...)
}

func (d *deployment) fatalf(format string, args ...any) {
	d.t.Helper()
	d.failed.add(d.t.Name(), fmt.Sprintf(format, args...))
	d.t.Fatalf(format, args...)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// composeCommand prefers Compose v2 (`docker compose`), else docker-compose 1.29;
// BATON_COMPOSE overrides ("docker compose" or "docker-compose").
func composeCommand(t *testing.T) []string {
	if c := os.Getenv("BATON_COMPOSE"); c != "" {
		return strings.Fields(c)
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	t.Fatal("neither `docker compose` nor docker-compose is installed")
	return nil
}

func newDeployment(t *testing.T) *deployment {
	dir, _ := filepath.Abs("..") // the repository, where docker-compose.yml is
	serverPort, promPort := freePort(t), freePort(t)
	d := &deployment{t: t, failed: &failures{}, project: fmt.Sprintf("batone2e%d", os.Getpid()), compose: composeCommand(t), dir: dir,
		server: fmt.Sprintf("http://127.0.0.1:%d", serverPort), prom: fmt.Sprintf("http://127.0.0.1:%d", promPort),
		ttl: 3 * time.Second, services: []string{"server", "client", "prometheus"}}
	d.env = append(os.Environ(),
		"BATON_SERVER_PORT=127.0.0.1:"+strconv.Itoa(serverPort),
		"BATON_PROMETHEUS_PORT=127.0.0.1:"+strconv.Itoa(promPort),
		"BATON_SESSION_TTL="+d.ttl.String(),
		"BATON_WORK=250ms", "BATON_THINK=50ms",
		"BATON_ADMIN_TOKEN=e2e-admin",
		"BATON_LOG_FORMAT=json",
		"COMPOSE_BAKE=false",
	)
	out, _ := d.run(d.compose[0], append(d.compose[1:], "version")...)
	t.Logf("compose: %s", strings.TrimSpace(out))
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := d.run(d.compose[0], append(d.compose[1:], "-p", d.project, "logs", "--no-color", "--tail", "40")...)
			t.Logf("logs at failure:\n%s", logs)
			t.Logf("what failed (repeated after the logs):\n%s", d.failed)
		}
		out, err := d.run(d.compose[0], append(d.compose[1:], "-p", d.project, "down", "-v", "--remove-orphans", "-t", "5")...)
		if err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	return d
}

// run runs a command in the repository with the deployment's environment.
func (d *deployment) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = d.dir, d.env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// do runs the compose command a user would type, failing the test on error.
func (d *deployment) do(args ...string) string {
	d.t.Helper()
	full := append(append(d.compose[1:], "-p", d.project), args...)
	start := time.Now()
	out, err := d.run(d.compose[0], full...)
	if err != nil {
		d.fatalf("%s %s: %v\n%s", strings.Join(d.compose, " "), strings.Join(args, " "), err, out)
	}
	d.t.Logf("%s %s (%s)", strings.Join(d.compose, " "), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return out
}

func (d *deployment) docker(args ...string) string {
	d.t.Helper()
	out, err := d.run("docker", args...)
	if err != nil {
		d.fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (d *deployment) status() (server.Status, error) {
	var st server.Status
	err := getJSON(d.server+"/status", &st)
	return st, err
}

func (d *deployment) mustStatus() server.Status {
	d.t.Helper()
	st, err := d.status()
	if err != nil {
		d.fatalf("%v", err)
	}
	return st
}

func (d *deployment) token() server.TokenStatus {
	d.t.Helper()
	for _, tk := range d.mustStatus().Tokens {
		if tk.Name == "counter" {
			return tk
		}
	}
	return server.TokenStatus{Name: "counter"}
}

// eventually polls cond until it holds or d passes.
func (d *deployment) eventually(timeout time.Duration, what string, cond func() bool) time.Duration {
	d.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			d.fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// clients lists the running client containers with their node name and address.
type container struct{ ID, Name, Node, IP string }

func (d *deployment) containers(service string) []container {
	d.t.Helper()
	ids := strings.Fields(d.do("ps", "-q", service))
	var out []container
	for _, id := range ids {
		f := strings.Fields(d.docker("inspect", "-f",
			"{{.Name}} {{.Config.Hostname}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}{{.State.Running}}", id))
		if len(f) < 3 || f[len(f)-1] != "true" {
			continue
		}
		c := container{ID: id, Name: strings.TrimPrefix(f[0], "/"), Node: f[1]}
		if len(f) > 3 {
			c.IP = f[2]
		}
		// A worker names itself after its container (client-3), not its hostname:
		// ask it.
		if service == "client" && c.IP != "" {
			if st, err := d.workerStatus(c); err == nil && st.Node != "" {
				c.Node = st.Node
			}
		}
		out = append(out, c)
	}
	return out
}

func (d *deployment) workerStatus(c container) (worker.Status, error) {
	var st worker.Status
	err := getJSON("http://"+net.JoinHostPort(c.IP, "8080")+"/status", &st)
	return st, err
}

// metric sums a server metric's samples whose labels contain all of match.
func (d *deployment) metric(name string, match ...string) float64 {
	d.t.Helper()
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(d.server + "/metrics")
	if err != nil {
		d.fatalf("%v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// promQuery returns the values of an instant query, by a label's value.
func (d *deployment) promQuery(q, label string) (map[string]float64, error) {
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := getJSON(d.prom+"/api/v1/query?query="+urlEscape(q), &r); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		out[s.Metric[label]] = v
	}
	return out, nil
}

func urlEscape(s string) string {
	r := strings.NewReplacer(" ", "%20", "+", "%2B", "{", "%7B", "}", "%7D", "\"", "%22", "[", "%5B", "]", "%5D", "=", "%3D", "(", "%28", ")", "%29")
	return r.Replace(s)
}

func tokenOf(ts []server.TokenStatus) server.TokenStatus {
	for _, t := range ts {
		if t.Name == "counter" {
			return t
		}
	}
	return server.TokenStatus{}
}

// aliveClients counts client members alive with a session.
func aliveClients(st server.Status) (members, sessions int) {
	for _, m := range st.Members {
		if m.Role == "client" && m.State == "alive" {
			members++
		}
	}
	return members, len(st.Sessions)
}

// holderContainer finds the container whose node holds the token. Holds are short
// and listing containers is slow (docker-compose 1.29 takes ~0.4 s), so the
// node → container map is kept and listed again only when the holder is not in it.
func (d *deployment) holderContainer() (container, server.TokenStatus) {
	d.t.Helper()
	var hc container
	var tk server.TokenStatus
	d.eventually(10*time.Second, "a holder that maps to a running client container", func() bool {
		tk = d.token()
		if tk.Holder == "" {
			return false
		}
		if c, ok := d.byNode[tk.Holder]; ok {
			hc = c
			return true
		}
		d.byNode = map[string]container{}
		for _, c := range d.containers("client") {
			d.byNode[c.Node] = c
		}
		return false
	})
	return hc, tk
}
