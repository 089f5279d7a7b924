//go:build e2e

// Package e2e drives the real compose deployment with the commands a user types
// (docker compose up/kill/exec, docker kill/pause/network disconnect) and checks the
// outcome through the servers' /status and /metrics, the workers' /status and
// Prometheus. Run with: make e2e (go test -tags e2e ./e2e).
//
// The deployment runs three servers that replicate the token state by raft; only
// the leader serves clients. The harness reads the servers at their container
// addresses (this host is on the compose network), finds the leader by asking every
// server, and takes the token's state from it.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

// replicas is how many servers docker-compose.yml runs (deploy.replicas).
const replicas = 3

// deployment is one compose project.
type deployment struct {
	t        *testing.T
	project  string
	compose  []string
	env      []string
	dir      string
	ports    [2]int // the host ports published for the servers' HTTP, first and last
	prom     string
	ttl      time.Duration
	services []string             // what `up` starts: no grafana, which cannot be pulled here
	byNode   map[string]container // client containers by node name, refreshed on a miss
	servers  *serverSet           // shared by the scenarios' copies
	failed   *failures            // shared by the scenarios' copies
}

// serverSet keeps the server containers' addresses between polls; they are listed
// again when no server answers as the leader (a server restarted or recreated at a
// new address).
type serverSet struct {
	mu   sync.Mutex // guards list
	list []container
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

// freePorts finds n consecutive free ports on 127.0.0.1 and returns the first: the
// servers' HTTP ports are published as a range, one per replica. It looks below
// Linux's ephemeral range (32768 and up), where an outgoing connection could take a
// port between this check and docker's bind.
func freePorts(t *testing.T, n int) int {
	for range 200 {
		base := 20000 + rand.IntN(12000)
		var ls []net.Listener
		for p := base; p < base+n; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == n {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
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
	serverPort, promPort := freePorts(t, replicas), freePort(t)
	d := &deployment{t: t, failed: &failures{}, servers: &serverSet{}, project: fmt.Sprintf("batone2e%d", os.Getpid()),
		compose: composeCommand(t), dir: dir, ports: [2]int{serverPort, serverPort + replicas - 1},
		prom: fmt.Sprintf("http://127.0.0.1:%d", promPort), ttl: 3 * time.Second, services: []string{"server", "client", "prometheus"}}
	d.env = append(os.Environ(),
		fmt.Sprintf("BATON_SERVERS=%d", replicas),
		fmt.Sprintf("BATON_SERVER_PORTS=127.0.0.1:%d-%d", d.ports[0], d.ports[1]),
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
	return getJSONWithin(url, 3*time.Second, v)
}

func getJSONWithin(url string, timeout time.Duration, v any) error {
	c := http.Client{Timeout: timeout}
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

// status is the leader's /status.
func (d *deployment) status() (server.Status, error) {
	st, _, err := d.leader()
	return st, err
}

// view is one server's /status, or why it could not be read.
type view struct {
	c   container
	st  server.Status
	err error
}

func (v view) role() string {
	if v.err != nil || v.st.Raft == nil {
		return ""
	}
	return v.st.Raft.State
}

// views reads every known server's /status at once. A paused or cut-off server
// costs its timeout, not a poll's worth of them.
func (d *deployment) views() []view {
	d.servers.mu.Lock()
	list := slices.Clone(d.servers.list)
	d.servers.mu.Unlock()
	out := make([]view, len(list))
	var wg sync.WaitGroup
	for i, c := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].c = c
			out[i].err = getJSONWithin("http://"+net.JoinHostPort(c.IP, "8080")+"/status", time.Second, &out[i].st)
		}()
	}
	wg.Wait()
	return out
}

// leader finds the server that leads: of those that say so, the one of the highest
// term (a cut-off leader may not know yet that it was deposed). When none does, the
// server containers are listed again for the next call.
func (d *deployment) leader() (server.Status, container, error) {
	var best *view
	vs := d.views()
	stale := false
	for i, v := range vs {
		// A container recreated at the address another had: list them again.
		stale = stale || v.err == nil && v.st.Node != v.c.Node
		if v.role() == "leader" && (best == nil || v.st.Raft.Term > best.st.Raft.Term) {
			best = &vs[i]
		}
	}
	if stale {
		d.relistServers()
		vs = d.views()
		best = nil
		for i, v := range vs {
			if v.role() == "leader" && (best == nil || v.st.Raft.Term > best.st.Raft.Term) {
				best = &vs[i]
			}
		}
	}
	if best == nil {
		d.relistServers()
		var errs []string
		for _, v := range vs {
			switch {
			case v.err != nil:
				errs = append(errs, fmt.Sprintf("%s: %v", v.c.Name, v.err))
			case v.st.Raft == nil:
				errs = append(errs, v.c.Name+": no raft in /status")
			default:
				errs = append(errs, fmt.Sprintf("%s: %s (leader %q, term %d)", v.c.Name, v.st.Raft.State, v.st.Raft.Leader, v.st.Raft.Term))
			}
		}
		return server.Status{}, container{}, fmt.Errorf("no server leads: %s", strings.Join(errs, "; "))
	}
	return best.st, best.c, nil
}

func (d *deployment) relistServers() {
	list := d.list("server")
	d.servers.mu.Lock()
	d.servers.list = list
	d.servers.mu.Unlock()
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

// eventually polls cond until it holds or timeout passes. An optional last says
// what was seen last, for the failure message.
func (d *deployment) eventually(timeout time.Duration, what string, cond func() bool, last ...func() string) time.Duration {
	d.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			seen := ""
			for _, l := range last {
				seen += "; last seen: " + l()
			}
			d.fatalf("timed out after %s waiting for: %s%s", timeout, what, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// clients lists the running client containers with their node name and address.
type container struct{ ID, Name, Node, IP string }

func (d *deployment) containers(service string) []container {
	d.t.Helper()
	out := d.list(service)
	for i, c := range out {
		// A worker names itself after its container (client-3), not its hostname:
		// ask it.
		if service == "client" && c.IP != "" {
			if st, err := d.workerStatus(c); err == nil && st.Node != "" {
				out[i].Node = st.Node
			}
		}
	}
	return out
}

// list lists a service's running containers, with one docker inspect for all and
// without logging: it runs inside polls. Node is the container's name without the
// project ("server-2", from Compose v2's "<project>-server-2" or v1's
// "<project>_server_2"), which is what the servers name themselves.
func (d *deployment) list(service string) []container {
	d.t.Helper()
	out, err := d.run(d.compose[0], append(d.compose[1:], "-p", d.project, "ps", "-q", service)...)
	if err != nil {
		d.fatalf("compose ps %s: %v\n%s", service, err, out)
	}
	ids := strings.Fields(out)
	if len(ids) == 0 {
		return nil
	}
	lines, err := d.run("docker", append([]string{"inspect", "-f",
		"{{.Id}} {{.Name}} {{.State.Running}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"}, ids...)...)
	if err != nil {
		// A container removed between ps and inspect: the next poll lists again.
		return nil
	}
	var cs []container
	for _, line := range strings.Split(strings.TrimSpace(lines), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "true" {
			continue
		}
		name := strings.TrimPrefix(f[1], "/")
		node := strings.ReplaceAll(strings.TrimLeft(strings.TrimPrefix(name, d.project), "-_"), "_", "-")
		c := container{ID: f[0][:12], Name: name, Node: node}
		if len(f) > 3 {
			c.IP = f[3]
		}
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b container) int { return strings.Compare(a.Name, b.Name) })
	return cs
}

func (d *deployment) workerStatus(c container) (worker.Status, error) {
	var st worker.Status
	err := getJSON("http://"+net.JoinHostPort(c.IP, "8080")+"/status", &st)
	return st, err
}

// metric sums a server metric's samples whose labels contain all of match, over
// every server that answers: counters such as reclaims and stale releases count on
// whichever server led when they happened.
func (d *deployment) metric(name string, match ...string) float64 {
	d.t.Helper()
	d.servers.mu.Lock()
	list := slices.Clone(d.servers.list)
	d.servers.mu.Unlock()
	sum, answered := 0.0, 0
	for _, c := range list {
		v, err := scrape("http://"+net.JoinHostPort(c.IP, "8080"), name, match...)
		if err == nil {
			sum += v
			answered++
		}
	}
	if answered == 0 {
		d.fatalf("no server answers /metrics")
	}
	return sum
}

// leaderMetric is metric on the leader alone: for gauges each server reports from
// its own view (members).
func (d *deployment) leaderMetric(name string, match ...string) float64 {
	d.t.Helper()
	_, c, err := d.leader()
	if err != nil {
		d.fatalf("%v", err)
	}
	v, err := scrape("http://"+net.JoinHostPort(c.IP, "8080"), name, match...)
	if err != nil {
		d.fatalf("%v", err)
	}
	return v
}

func scrape(base, name string, match ...string) (float64, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
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
	return sum, nil
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

// settled waits until the cluster is whole again: every server container answers,
// one leads and the others follow it in its term, the leader's configuration has
// every server as a voter, and every running client has a connected session on it.
// It returns how long that took.
func (d *deployment) settled(timeout time.Duration, after string) time.Duration {
	d.t.Helper()
	clients := len(d.list("client"))
	d.relistServers()
	var last string
	took := d.eventually(timeout, fmt.Sprintf("%s: %d servers agreeing on a leader, %d clients with sessions on it", after, replicas, clients), func() bool {
		vs := d.views()
		if len(vs) != replicas {
			last = fmt.Sprintf("%d server containers running", len(vs))
			d.relistServers()
			return false
		}
		var lead *server.Status
		for i, v := range vs {
			if v.err != nil || v.st.Raft == nil {
				last = fmt.Sprintf("%s: %v", v.c.Name, v.err)
				return false
			}
			if v.role() == "leader" {
				lead = &vs[i].st
			}
		}
		if lead == nil {
			last = "no leader"
			return false
		}
		voters := 0
		for _, sv := range lead.Raft.Servers {
			if sv.Voter {
				voters++
			}
		}
		for _, v := range vs {
			if v.st.Raft.Leader != lead.Raft.ID || v.st.Raft.Term != lead.Raft.Term {
				last = fmt.Sprintf("%s follows %q in term %d; %s leads in term %d", v.c.Name, v.st.Raft.Leader, v.st.Raft.Term, lead.Raft.ID, lead.Raft.Term)
				return false
			}
		}
		connected := 0
		for _, s := range lead.Sessions {
			if s.Connected {
				connected++
			}
		}
		last = fmt.Sprintf("leader %s term %d, %d voters, %d of %d sessions connected", lead.Raft.ID, lead.Raft.Term, voters, connected, len(lead.Sessions))
		return voters == replicas && connected == clients && len(lead.Sessions) == clients
	}, func() string { return last + "; " + d.serverStates() })
	return took
}

// serverStates says how each server container is, for a failure message: a server
// that crashes at start shows as restarting, its restart count rising.
func (d *deployment) serverStates() string {
	out, err := d.run(d.compose[0], append(d.compose[1:], "-p", d.project, "ps", "-a", "-q", "server")...)
	if err != nil || len(strings.Fields(out)) == 0 {
		return "no server containers"
	}
	states, _ := d.run("docker", append([]string{"inspect", "-f", "{{.Name}} {{.State.Status}} restarts={{.RestartCount}}"}, strings.Fields(out)...)...)
	return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(states), "\n", ",")), " ")
}

// sections gathers the critical sections every running client reports (its latest
// 64), oldest first.
func (d *deployment) sections() []worker.Interval {
	d.t.Helper()
	var all []worker.Interval
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range d.list("client") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := d.workerStatus(c)
			if err != nil {
				return // cut off or paused: it reports later
			}
			mu.Lock()
			all = append(all, st.Recent...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(all, func(a, b worker.Interval) int { return a.Start.Compare(b.Start) })
	return all
}

// checkSections checks what the clients saw, with no client frozen or cut off:
// their critical sections never overlap, and each began with a fence greater than
// the one before it (fences never go back, across failovers included).
func (d *deployment) checkSections(ivs []worker.Interval) {
	d.t.Helper()
	for i := 1; i < len(ivs); i++ {
		a, b := ivs[i-1], ivs[i]
		if b.Start.Before(a.End) {
			d.errorf("overlapping critical sections: fence %d [%s, %s] and fence %d starting %s",
				a.Fence, a.Start.Format(time.StampMicro), a.End.Format(time.StampMicro), b.Fence, b.Start.Format(time.StampMicro))
		}
		if b.Fence <= a.Fence {
			d.errorf("fence went back: %d began at %s, after %d at %s", b.Fence, b.Start.Format(time.StampMicro),
				a.Fence, a.Start.Format(time.StampMicro))
		}
	}
}

// firstGrantAfter waits for a critical section that began after t, as its client
// reports it once done, and returns when it began.
func (d *deployment) firstGrantAfter(t time.Time, timeout time.Duration, what string) worker.Interval {
	d.t.Helper()
	var first worker.Interval
	d.eventually(timeout, what, func() bool {
		for _, iv := range d.sections() {
			if iv.Start.After(t) {
				first = iv
				return true
			}
		}
		return false
	})
	return first
}

// published maps each server's node name to the URL of the host port compose gave
// it from the range (`docker compose port --index N server 8080`, as the README
// says), failing when two share one, one falls outside the range, or one does not
// answer /status and /readyz there.
func (d *deployment) published() map[string]string {
	d.t.Helper()
	out := map[string]string{}
	for i := 1; i <= replicas; i++ {
		addr := d.do("port", "--index", strconv.Itoa(i), "server", "8080")
		addr = strings.TrimSpace(addr)
		_, p, err := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if err != nil || port < d.ports[0] || port > d.ports[1] {
			d.fatalf("server %d published at %q, want a port in %d-%d", i, addr, d.ports[0], d.ports[1])
		}
		url := "http://" + addr
		var st server.Status
		if err := getJSON(url+"/status", &st); err != nil {
			d.fatalf("server %d at %s: %v", i, url, err)
		}
		if prev, dup := out[st.Node]; dup {
			d.fatalf("%s answers at %s and at %s", st.Node, prev, url)
		}
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			d.fatalf("%v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			d.errorf("%s: /readyz %s, want 200 on a server that leads or follows a leader", st.Node, resp.Status)
		}
		out[st.Node] = url
	}
	return out
}

// checkPublished logs where each server is reachable from this host.
func (d *deployment) checkPublished() {
	d.t.Helper()
	pub := d.published()
	var lines []string
	for node, url := range pub {
		lines = append(lines, node+" "+url)
	}
	slices.Sort(lines)
	d.t.Logf("servers on the host: %s", strings.Join(lines, ", "))
}
