package server

import (
	"github.com/baton-dev/baton/internal/buildinfo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's instruments, on the registry the caller passes in.
// Gauges that describe state (queue length, fence, counter, members) are not here:
// the stateCollector reads them from the real state at scrape time.
type metrics struct {
	grants        *prometheus.CounterVec
	wait          *prometheus.HistogramVec
	hold          *prometheus.HistogramVec
	restarts      prometheus.Counter
	reclaims      *prometheus.CounterVec
	staleReleases *prometheus.CounterVec
	// refusedReleases counts every release that changed nothing, by reason:
	// stale_fence, lease_lost, session_expired, outcome_unknown.
	refusedReleases *prometheus.CounterVec
	protocolErrors  *prometheus.CounterVec
	connections     prometheus.Gauge
	parked          prometheus.Gauge
	// The replicated log (raft.go).
	raftLeader        prometheus.Gauge
	raftLeaderChanges prometheus.Counter
	raftCommit        prometheus.Histogram
	notLeader         prometheus.Counter
}

// latencyBuckets span a handoff on loopback (tens of µs) to a session TTL.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_grants_total", Help: "Tokens granted."}, []string{"token"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "baton_wait_seconds", Help: "Time from acquire to grant.", Buckets: latencyBuckets}, []string{"token"}),
		hold: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "baton_hold_seconds", Help: "Time from grant to release or reclaim.", Buckets: latencyBuckets}, []string{"token"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "baton_restarts_total", Help: "In-place restarts (SIGHUP or POST /admin/restart)."}),
		reclaims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_reclaims_total", Help: "Tokens taken back from a holder that did not release: reason is disconnect, expired, reboot, goodbye or cancel."},
			[]string{"token", "reason"}),
		staleReleases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_stale_releases_total", Help: "Releases rejected because their fence was not current."}, []string{"token"}),
		refusedReleases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_refused_releases_total", Help: "Releases that changed nothing, by reason: stale_fence (granted to another since), lease_lost (taken back, nobody granted since), session_expired, outcome_unknown (a resend whose first answer is forgotten)."},
			[]string{"token", "reason"}),
		protocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_protocol_errors_total", Help: "Bad input from the network, by reason."}, []string{"reason"}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_connections", Help: "Open token protocol connections."}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "baton_connections_parked", Help: "Connections quiet for 200 ms or more, watched without a goroutine."}),
	}
	m.raftLeader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "baton_raft_is_leader", Help: "1 while this server leads the raft log (a server alone with a state directory always does); 0 otherwise."})
	m.raftLeaderChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "baton_raft_leader_changes_total", Help: "Times this server saw a new raft leader."})
	m.raftCommit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "baton_raft_commit_seconds", Help: "Time from proposing a batch's log entry to its commit on this server.", Buckets: latencyBuckets})
	m.notLeader = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "baton_not_leader_total", Help: "Hellos refused because this server does not lead; the client was told who does."})
	reg.MustRegister(m.grants, m.wait, m.hold, m.restarts, m.reclaims, m.staleReleases, m.refusedReleases, m.protocolErrors, m.connections, m.parked,
		m.raftLeader, m.raftLeaderChanges, m.raftCommit, m.notLeader)
	return m
}

// registerRuntime adds the process and Go collectors and build info.
func registerRuntime(reg prometheus.Registerer) {
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(), collectors.NewBuildInfoCollector())
	buildinfo.Register(reg, "server")
}

// stateCollector reports gauges read from the server's real state at scrape time.
type stateCollector struct {
	s                                                                        *Server
	queue, fence, counter, waits, releases, holder, members, epoch, sessions *prometheus.Desc
}

func newStateCollector(s *Server) *stateCollector {
	return &stateCollector{s: s,
		queue:    prometheus.NewDesc("baton_queue_length", "Sessions waiting for the token.", []string{"token"}, nil),
		fence:    prometheus.NewDesc("baton_fence", "Fence of the token's latest grant.", []string{"token"}, nil),
		counter:  prometheus.NewDesc("baton_counter", "The shared record's counter: accepted releases.", []string{"token"}, nil),
		waits:    prometheus.NewDesc("baton_waits", "The shared record's waiting counter: requests that had to queue.", []string{"token"}, nil),
		holder:   prometheus.NewDesc("baton_holder", "1 for the node that holds the token now; absent while it is free.", []string{"token", "node"}, nil),
		releases: prometheus.NewDesc("baton_releases_total", "Releases accepted; with honest holders equal to baton_counter.", []string{"token"}, nil),
		members:  prometheus.NewDesc("baton_members", "Cluster members by state.", []string{"state"}, nil),
		epoch:    prometheus.NewDesc("baton_epoch", "Server epoch: bumps on every start and restart.", nil, nil),
		sessions: prometheus.NewDesc("baton_sessions", "Live client sessions.", nil, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queue, c.fence, c.counter, c.waits, c.releases, c.holder, c.members, c.epoch, c.sessions} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.s.Status()
	if err != nil {
		return
	}
	if st.Raft != nil && st.Raft.State != "leader" {
		st.Tokens = nil // the leader reports the tokens: one series per token across the cluster
	}
	for _, t := range st.Tokens {
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(len(t.Queue)), t.Name)
		ch <- prometheus.MustNewConstMetric(c.fence, prometheus.GaugeValue, float64(t.Fence), t.Name)
		ch <- prometheus.MustNewConstMetric(c.counter, prometheus.GaugeValue, float64(t.Counter), t.Name)
		ch <- prometheus.MustNewConstMetric(c.waits, prometheus.GaugeValue, float64(t.Waits), t.Name)
		ch <- prometheus.MustNewConstMetric(c.releases, prometheus.CounterValue, float64(t.Releases), t.Name)
		if t.Holder != "" {
			ch <- prometheus.MustNewConstMetric(c.holder, prometheus.GaugeValue, 1, t.Name, t.Holder)
		}
	}
	byState := map[string]int{"alive": 0, "dead": 0, "left": 0}
	for _, m := range st.Members {
		byState[m.State]++
	}
	for state, n := range byState {
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(n), state)
	}
	ch <- prometheus.MustNewConstMetric(c.epoch, prometheus.GaugeValue, float64(st.Epoch))
	ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(len(st.Sessions)))
}
