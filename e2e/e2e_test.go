//go:build e2e

package e2e

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/worker"
)

// TestDeployment brings the deployment up once and runs the scenarios in order on
// it; each says what it measured. The deployment is torn down, volumes included,
// however the test ends.
func TestDeployment(t *testing.T) {
	d := newDeployment(t)
	d.do("build", "server", "client")
	tag := cmp.Or(os.Getenv("BATON_TAG"), "dev")
	for _, img := range []string{"server", "client"} {
		size := d.docker("image", "inspect", "-f", "{{.Size}}", fmt.Sprintf("baton-%s:%s", img, tag))
		t.Logf("image baton-%s:%s: %s bytes", img, tag, size)
	}
	up := time.Now()
	d.do(append([]string{"up", "-d", "--scale", "client=8"}, d.services...)...)
	t.Logf("up returned after %s", time.Since(up).Round(time.Millisecond))
	d.relistServers()

	type step struct {
		name string
		fn   func(*deployment, time.Time)
	}
	steps := []step{
		{"1_up_8_clients", scenarioUp},
		{"2_scale_12_then_4", scenarioScale},
		{"8_prometheus_scrapes", scenarioPrometheus},
		{"3_hup_three_times", scenarioHUP},
		{"4_kill_holder", scenarioKillHolder},
		{"5_network_disconnect_holder", scenarioDisconnect},
		{"6_pause_holder", scenarioPause},
		{"9a_dashboard_panels_have_data", scenarioDashboardData},
		{"9b_status_page_in_chromium", scenarioStatusPage},
		{"10_kill_leader", scenarioKillLeader},
		{"11_pause_leader", scenarioPauseLeader},
		{"12_network_disconnect_leader", scenarioDisconnectLeader},
		{"7_recreate_all_servers", scenarioRecreateServers},
	}
	// BATON_E2E_KILLS=N kills the leader N times, for the spread of the failover time
	// (docs/replication.md); CI kills it once.
	if n, _ := strconv.Atoi(os.Getenv("BATON_E2E_KILLS")); n > 1 {
		i := slices.IndexFunc(steps, func(s step) bool { return s.name == "10_kill_leader" })
		kills := make([]step, n)
		for k := range kills {
			kills[k] = step{fmt.Sprintf("10_kill_leader_%d", k+1), scenarioKillLeader}
		}
		steps = slices.Replace(steps, i, i+1, kills...)
	}
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) {
			sd := *d
			sd.t = t
			s.fn(&sd, up)
		})
		if !ok && strings.HasPrefix(s.name, "1_") {
			t.Fatal("the deployment did not come up; the other scenarios need it")
		}
	}
}

// 1. Three servers elect a leader (`--scale client=8` leaves them three), each
// answers on its host port; all 8 clients become members and get the token; the
// counter grows; grants are fair once all are in line; no two critical sections
// overlap; no stale release was accepted.
func scenarioUp(d *deployment, up time.Time) {
	var lead server.Status
	d.eventually(90*time.Second, "a raft leader among the servers", func() bool {
		st, _, err := d.leader()
		lead = st
		return err == nil
	})
	d.t.Logf("%s leads (term %d) %s after up began", lead.Raft.ID, lead.Raft.Term, time.Since(up).Round(time.Millisecond))
	if n := len(d.list("server")); n != replicas {
		d.errorf("%d server containers run after `up --scale client=8`, want %d", n, replicas)
	}
	d.checkPublished()
	d.eventually(90*time.Second, "8 alive client members with sessions", func() bool {
		st, err := d.status()
		if err != nil {
			return false
		}
		m, s := aliveClients(st)
		return m == 8 && s == 8
	})
	full := time.Now()
	d.t.Logf("full membership %s after up began", full.Sub(up).Round(time.Millisecond))
	clients := d.containers("client")
	if len(clients) != 8 {
		d.fatalf("%d client containers running, want 8", len(clients))
	}
	// Fairness is judged on the sections that began once all 8 had sessions: before
	// that, the containers start seconds apart and the first ones take turns alone
	// (CI once saw one client 5 sections ahead of the last to start). The clients'
	// clocks are this host's clock.
	const rounds = 3
	var sts []worker.Status
	sinceFull := make([]int, len(clients))
	d.eventually(90*time.Second, fmt.Sprintf("every client to complete %d critical sections after full membership", rounds), func() bool {
		sts = sts[:0]
		for i, c := range clients {
			st, err := d.workerStatus(c)
			if err != nil {
				return false
			}
			sinceFull[i] = 0
			for _, iv := range st.Recent {
				if iv.Start.After(full) {
					sinceFull[i]++
				}
			}
			if sinceFull[i] < rounds {
				return false
			}
			sts = append(sts, st)
		}
		return true
	})
	done := make([]uint64, 0, len(sts))
	var intervals []worker.Interval
	for _, st := range sts {
		done = append(done, st.Done)
		intervals = append(intervals, st.Recent...)
	}
	d.t.Logf("critical sections per client: %v in all, %v since full membership", done, sinceFull)
	// In a FIFO queue where every client is back in line before its next turn (a
	// round takes 8 × BATON_WORK, think time is BATON_THINK), grants go round robin:
	// one more for those queued ahead of the last to join, one for the window's end.
	if lo, hi := slices.Min(sinceFull), slices.Max(sinceFull); hi-lo > 2 {
		d.errorf("unfair: since full membership one client did %d critical sections, another %d (FIFO keeps them within 2)", hi, lo)
	}
	slices.SortFunc(intervals, func(a, b worker.Interval) int { return a.Start.Compare(b.Start) })
	d.checkSections(intervals)
	d.t.Logf("%d client-reported critical sections checked for overlap and rising fences", len(intervals))
	tk := d.token()
	if tk.Counter != tk.Releases {
		d.errorf("counter %d != accepted releases %d", tk.Counter, tk.Releases)
	}
	// `exec server` runs in the first replica, which may follow: its table is the
	// replicated state. `--index N` reaches the leader, server-N.
	lead, _, err := d.leader()
	if err != nil {
		d.fatalf("%v", err)
	}
	for _, args := range [][]string{{"exec", "-T", "server"}, {"exec", "-T", "--index", strings.TrimPrefix(lead.Raft.ID, "server-"), "server"}} {
		table := d.do(append(args, "/server", "status")...)
		for _, want := range []string{"TOKEN", "HOLDER", "FENCE", "counter", "MEMBER", "GRANTS", "WAITS", "client", "server-3"} {
			if !strings.Contains(table, want) {
				d.errorf("`%s /server status` lacks %q:\n%s", strings.Join(args, " "), want, table)
			}
		}
		d.t.Logf("%s /server status:\n%s", strings.Join(args, " "), table)
	}
	if n := d.metric("baton_stale_releases_total"); n != 0 {
		d.errorf("%v stale releases in a healthy run", n)
	}
	d.checkHealthyLogs()
}

// checkHealthyLogs reads what the servers and clients logged since `up`, before any
// fault: the README says a healthy start logs no warning. An ERROR line fails the
// run; a WARN line is shown (a loaded machine's timing may cause one, a client's
// connect to a server not yet up).
func (d *deployment) checkHealthyLogs() {
	logs := d.do("logs", "--no-color", "server", "client")
	var warns, errs []string
	for _, line := range strings.Split(logs, "\n") {
		switch {
		case strings.Contains(line, `"level":"ERROR"`):
			errs = append(errs, line)
		case strings.Contains(line, `"level":"WARN"`):
			warns = append(warns, line)
		}
	}
	if len(warns) > 0 {
		d.t.Logf("%d WARN lines in a healthy start:\n%s", len(warns), strings.Join(warns, "\n"))
	}
	if len(errs) > 0 {
		d.errorf("%d ERROR lines in a healthy start:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

// 2. Scale to 12, then to 4: joins and graceful leaves show in /status and the
// metrics; no grant is lost, the token never sticks.
func scenarioScale(d *deployment, _ time.Time) {
	reclaims := d.metric("baton_reclaims_total", `reason="disconnect"`) + d.metric("baton_reclaims_total", `reason="expired"`)
	d.do(append([]string{"up", "-d", "--no-recreate", "--scale", "client=12"}, d.services...)...)
	took := d.eventually(90*time.Second, "12 alive client members with sessions", func() bool {
		st, err := d.status()
		m, s := aliveClients(st)
		return err == nil && m == 12 && s == 12
	})
	d.t.Logf("scaled to 12 in %s", took.Round(time.Millisecond))
	before := d.token().Counter
	d.do(append([]string{"up", "-d", "--no-recreate", "--scale", "client=4"}, d.services...)...)
	took = d.eventually(60*time.Second, "4 alive clients, 4 sessions, 8 members left", func() bool {
		st, err := d.status()
		if err != nil {
			return false
		}
		m, s := aliveClients(st)
		left := 0
		for _, mm := range st.Members {
			if mm.Role == "client" && mm.State == "left" {
				left++
			}
		}
		return m == 4 && s == 4 && left >= 8
	})
	d.t.Logf("scaled down to 4 in %s", took.Round(time.Millisecond))
	if n := d.leaderMetric("baton_members", `state="left"`); n < 8 {
		d.errorf("baton_members{state=left} = %v, want >= 8", n)
	}
	if n := d.metric("baton_reclaims_total", `reason="disconnect"`) + d.metric("baton_reclaims_total", `reason="expired"`); n != reclaims {
		d.errorf("graceful scale-down caused %v reclaims: stopping workers must release first", n-reclaims)
	}
	d.eventually(20*time.Second, "the counter to keep growing with 4 clients", func() bool { return d.token().Counter > before+8 })
	d.do(append([]string{"up", "-d", "--no-recreate", "--scale", "client=8"}, d.services...)...)
	d.eventually(90*time.Second, "8 clients again", func() bool {
		st, err := d.status()
		m, s := aliveClients(st)
		return err == nil && m == 8 && s == 8
	})
}

// 8. Prometheus really scrapes every server and every client replica, sees one
// leader and the token's gauges from it alone, and grants rising.
func scenarioPrometheus(d *deployment, _ time.Time) {
	clients := len(d.containers("client"))
	d.eventually(90*time.Second, fmt.Sprintf("Prometheus up=1 for %d servers and %d clients", replicas, clients), func() bool {
		srv, err1 := d.promQuery(`up{job="baton-server"}`, "instance")
		cli, err2 := d.promQuery(`up{job="baton-client"} == 1`, "instance")
		if err1 != nil || err2 != nil || len(srv) != replicas {
			return false
		}
		for _, v := range srv {
			if v != 1 {
				return false
			}
		}
		return len(cli) == clients
	})
	d.eventually(30*time.Second, "one leader in Prometheus, the only one to export the token's fence", func() bool {
		leaders, err1 := d.promQuery(`sum(baton_raft_is_leader)`, "")
		fences, err2 := d.promQuery(`count(baton_fence)`, "")
		return err1 == nil && err2 == nil && leaders[""] == 1 && fences[""] == 1
	})
	var first float64
	d.eventually(60*time.Second, "baton_grants_total rising in Prometheus", func() bool {
		v, err := d.promQuery(`sum(baton_grants_total)`, "")
		if err != nil || len(v) == 0 {
			return false
		}
		if first == 0 {
			first = v[""]
			return false
		}
		return v[""] > first
	})
}

// 3. `docker compose kill -s HUP server`, three times under load: it signals every
// server; the containers stay up, the epoch rises with each, the leader counts its
// restarts, fence and counter continue, clients resume.
func scenarioHUP(d *deployment, _ time.Time) {
	d.settled(60*time.Second, "before the HUPs")
	st0 := d.mustStatus()
	restarts0 := d.metric("baton_restarts_total")
	last := d.token()
	before := d.list("server")
	for i := 1; i <= 3; i++ {
		epoch := d.mustStatus().Epoch
		d.do("kill", "-s", "HUP", "server")
		at := time.Now()
		d.eventually(10*time.Second, fmt.Sprintf("an epoch above %d", epoch), func() bool {
			st, err := d.status()
			return err == nil && st.Epoch > epoch
		})
		d.eventually(20*time.Second, "clients to resume after HUP", func() bool { return d.token().Counter > last.Counter+1 })
		st := d.mustStatus()
		d.t.Logf("HUP %d: clients resumed %s after the signal; %s leads, epoch %d", i, time.Since(at).Round(time.Millisecond), st.Raft.ID, st.Epoch)
		now := tokenOf(st.Tokens)
		if now.Fence < last.Fence || now.Counter < last.Counter {
			d.fatalf("HUP %d went back: fence %d→%d counter %d→%d", i, last.Fence, now.Fence, last.Counter, now.Counter)
		}
		if now.Counter != now.Releases {
			d.errorf("HUP %d: counter %d != accepted releases %d", i, now.Counter, now.Releases)
		}
		last = now
	}
	for _, c := range before {
		state := d.docker("inspect", "-f", "{{.State.Running}} {{.RestartCount}}", c.ID)
		if state != "true 0" {
			d.errorf("%s after HUPs: running and restart count %q, want the same container running, never restarted", c.Name, state)
		}
	}
	if n := d.metric("baton_restarts_total"); n < restarts0+3 {
		d.errorf("baton_restarts_total over the servers %v, want at least %v", n, restarts0+3)
	}
	d.t.Logf("epoch %d → %d", st0.Epoch, d.mustStatus().Epoch)
}

// 4. SIGKILL of the container that holds the token: the next grant within 1 s, the
// reclaim counted.
func scenarioKillHolder(d *deployment, _ time.Time) {
	for attempt := 1; attempt <= 8; attempt++ {
		reclaims := d.metric("baton_reclaims_total", `reason="disconnect"`)
		hc, tk := d.freshHolder()
		issued := time.Now()
		d.docker("kill", "-s", "KILL", hc.ID)
		took := d.eventually(5*time.Second, "the next grant after the holder's kill", func() bool { return d.token().Fence > tk.Fence })
		reason, ok := d.reclaimed(tk.Fence)
		if !ok {
			// A client killed between holds is simply gone: start it again, so that
			// the scenarios after this one have the clients they expect.
			d.t.Logf("attempt %d: %s released before the kill landed; started again", attempt, hc.Node)
			d.docker("start", hc.ID)
			continue
		}
		d.t.Logf("killed holder %s (fence %d): reclaimed (%s), next grant %s after docker kill returned, %s after it was issued",
			hc.Node, tk.Fence, reason, took.Round(time.Millisecond), time.Since(issued).Round(time.Millisecond))
		if reason != "disconnect" {
			d.errorf("the killed holder's token was reclaimed for %q, want disconnect: the server must see its connection close", reason)
		}
		if d.metric("baton_reclaims_total", `reason="disconnect"`) <= reclaims {
			d.errorf("baton_reclaims_total{reason=\"disconnect\"} did not count the reclaim")
		}
		if took > time.Second {
			d.errorf("next grant %s after the holder was killed, want < 1s", took)
		}
		return
	}
	d.fatalf("no kill landed while the token was held in 8 attempts")
}

// freshHolder waits for the next grant and returns its holder at once, so that most
// of its hold is still ahead when a fault is applied to it (`docker kill` takes a
// few hundred milliseconds on a busy machine; a hold, 250 ms).
func (d *deployment) freshHolder() (container, server.TokenStatus) {
	d.t.Helper()
	start := d.token().Fence
	d.eventually(20*time.Second, "a fresh grant", func() bool { return d.token().Fence > start })
	return d.holderContainer()
}

// reclaimed says whether, and why, the leader took back the grant of fence without
// a release: its events list each reclaim with the fence and the reason.
func (d *deployment) reclaimed(fence uint64) (reason string, ok bool) {
	d.t.Helper()
	for _, e := range d.mustStatus().Events {
		if e.Kind == "reclaim" && e.Token == "counter" && e.Fence == fence {
			return e.Detail, true
		}
	}
	return "", false
}

func (d *deployment) sessionExpiry(node string) time.Time {
	d.t.Helper()
	st := d.mustStatus()
	for _, s := range st.Sessions {
		if s.Node == node {
			left, err := time.ParseDuration(s.ExpiresIn)
			if err == nil {
				return time.Now().Add(left)
			}
		}
	}
	d.fatalf("no session for %s", node)
	return time.Time{}
}

// cutHolder applies cut to the holder just after it was granted the token and waits
// for the next grant. A cut that lands after the holder released on its own proves
// nothing; then the holder is healed and the next one tried. It returns the holder,
// its fence, when its session was due to expire, and when the next grant came.
func (d *deployment) cutHolder(what string, cut, heal func(container)) (container, uint64, time.Time, time.Time, time.Time) {
	d.t.Helper()
	for attempt := 1; attempt <= 8; attempt++ {
		hc, tk := d.freshHolder()
		expiresAt := d.sessionExpiry(hc.Node)
		cut(hc)
		at := time.Now()
		d.eventually(4*d.ttl, "the next grant after the "+what, func() bool { return d.token().Fence > tk.Fence })
		granted := time.Now()
		if reason, ok := d.reclaimed(tk.Fence); ok {
			if reason != "expired" {
				d.errorf("the %s holder's token was reclaimed for %q, want expired", what, reason)
			}
			return hc, tk.Fence, expiresAt, at, granted
		}
		d.t.Logf("attempt %d: %s released before the %s landed; again", attempt, hc.Node, what)
		heal(hc)
	}
	d.fatalf("no %s landed during a hold in 8 attempts", what)
	return container{}, 0, time.Time{}, time.Time{}, time.Time{}
}

// 5. `docker network disconnect` of the holder: no grant before its session expires;
// after reconnecting it rejoins, and its late release is never reported applied: the
// server refuses it (stale) if it reaches it on the new session, or, if it left
// before the cut was noticed, the client says its outcome is unknown (the answer was
// lost with the session).
func scenarioDisconnect(d *deployment, _ time.Time) {
	network := d.project + "_default"
	connect := func(c container) { d.docker("network", "connect", network, c.ID) }
	hc, fence, expiresAt, cut, granted := d.cutHolder("network disconnect",
		func(c container) { d.docker("network", "disconnect", network, c.ID) }, connect)
	d.t.Logf("holder %s (fence %d) cut off: next grant %s after the cut (TTL %s)", hc.Node, fence, granted.Sub(cut).Round(time.Millisecond), d.ttl)
	if early := expiresAt.Sub(granted); early > 50*time.Millisecond {
		d.errorf("token re-granted %s before the cut-off holder's session expired", early)
	}
	connect(hc)
	took := d.eventually(60*time.Second, "the cut-off client to rejoin with a new session", func() bool {
		st, err := d.status()
		if err != nil {
			return false
		}
		for _, s := range st.Sessions {
			if s.Node == hc.Node && s.Connected {
				return true
			}
		}
		return false
	})
	d.t.Logf("rejoined %s after reconnecting", took.Round(time.Millisecond))
	var outcome string
	d.eventually(30*time.Second, "the cut-off holder to report its release's outcome", func() bool {
		// Reconnected, the container may have another address on the network.
		hc.IP = strings.TrimSpace(d.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", hc.ID))
		ws, err := d.workerStatus(hc)
		if err != nil {
			return false
		}
		for _, iv := range ws.Recent {
			if iv.Fence == fence {
				outcome = iv.Outcome
				return true
			}
		}
		return false
	})
	d.t.Logf("the cut-off holder's release (fence %d): %s", fence, outcome)
	switch outcome {
	case "stale", "lost", "unknown": // refused (counted by the server), or its answer lost with the session
	case "released":
		d.errorf("the cut-off holder's release of fence %d reported applied, though its session expired first", fence)
	default:
		d.errorf("the cut-off holder's release of fence %d: outcome %q, want stale, lost or unknown", fence, outcome)
	}
	if tk := d.token(); tk.Counter != tk.Releases {
		d.errorf("counter %d != accepted releases %d", tk.Counter, tk.Releases)
	}
}

// 6. `docker pause` of the holder past its TTL, then unpause: the fence rejects its
// stale release; the counter equals accepted releases.
func scenarioPause(d *deployment, _ time.Time) {
	stale := d.metric("baton_stale_releases_total")
	unpause := func(c container) { d.docker("unpause", c.ID) }
	hc, fence, _, paused, granted := d.cutHolder("pause", func(c container) { d.docker("pause", c.ID) }, unpause)
	d.t.Logf("holder %s (fence %d) paused: next grant %s later", hc.Node, fence, granted.Sub(paused).Round(time.Millisecond))
	unpause(hc)
	d.eventually(30*time.Second, "the paused holder's stale release to be rejected", func() bool {
		return d.metric("baton_stale_releases_total") > stale
	})
	if tk := d.token(); tk.Counter != tk.Releases {
		d.errorf("counter %d != accepted releases %d", tk.Counter, tk.Releases)
	}
}

// 7. Every server container recreated at once (`up -d --force-recreate server`:
// new containers, maybe new addresses, the same names and the shared state volume):
// they elect a leader from their logs, clients find it through memberlist, the fence
// never goes back.
func scenarioRecreateServers(d *deployment, _ time.Time) {
	d.settled(60*time.Second, "before recreating the servers")
	before := d.token()
	st0 := d.mustStatus()
	old := d.list("server")
	at := time.Now()
	d.do("up", "-d", "--no-deps", "--force-recreate", "server")
	upTook := time.Since(at)
	d.relistServers()
	var lead server.Status
	elected := d.eventually(60*time.Second, "a leader among the recreated servers", func() bool {
		st, c, err := d.leader()
		if err != nil || slices.ContainsFunc(old, func(o container) bool { return o.ID == c.ID }) {
			return false
		}
		if tk := tokenOf(st.Tokens); tk.Fence < before.Fence {
			d.fatalf("fence went back: %d after recreate, %d before", tk.Fence, before.Fence)
		}
		lead = st
		return true
	})
	back := d.settled(90*time.Second, "after recreating the servers")
	// Begun once `up` returned: the old servers are gone by then.
	first := d.firstGrantAfter(at.Add(upTook), 30*time.Second, "a critical section begun after the recreation")
	now := d.list("server")
	var moved []string
	for _, c := range now {
		for _, o := range old {
			if o.ID == c.ID {
				d.errorf("%s was not recreated", c.Name)
			}
			if o.Node == c.Node && o.IP != c.IP {
				moved = append(moved, fmt.Sprintf("%s %s → %s", c.Node, o.IP, c.IP))
			}
		}
	}
	// A server that took another's old address refuses the raft connections meant for
	// that one, which the others dial while their membership still has the old address.
	misrouted := d.metric("baton_protocol_errors_total", `reason="raft_misrouted"`)
	d.t.Logf("servers recreated (`up` took %s; %d moved address: %v; %.0f raft connections reached the wrong server and were refused): %s leads %s after `up` began, all clients back %s after that; the first critical section began %s after `up` began (fence %d)",
		upTook.Round(time.Millisecond), len(moved), moved, misrouted, lead.Raft.ID, (upTook + elected).Round(time.Millisecond), back.Round(time.Millisecond),
		first.Start.Sub(at).Round(time.Millisecond), first.Fence)
	after := d.mustStatus()
	tk := tokenOf(after.Tokens)
	if tk.Fence <= before.Fence || tk.Counter < before.Counter || first.Fence <= before.Fence {
		d.errorf("after recreate fence %d (first section's %d) counter %d; before %d and %d", tk.Fence, first.Fence, tk.Counter, before.Fence, before.Counter)
	}
	if tk.Counter != tk.Releases {
		d.errorf("counter %d != accepted releases %d", tk.Counter, tk.Releases)
	}
	if after.Epoch <= st0.Epoch {
		d.errorf("epoch %d after recreate, %d before", after.Epoch, st0.Epoch)
	}
}
