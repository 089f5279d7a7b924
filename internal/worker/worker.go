// Package worker is the baton client worker: it joins the cluster through memberlist,
// finds the server there, and loops acquire, critical section, release, think, the
// way the original cliente.py did, logging one status line per step and serving its
// own metrics and status over HTTP.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/buildinfo"
	"github.com/baton-dev/baton/internal/cluster"
	"github.com/baton-dev/baton/internal/nodename"
	"github.com/baton-dev/baton/internal/unreachable"
)

// Config is the worker's configuration, read from BATON_* by main.
type Config struct {
	HTTPAddr     string        `envconfig:"HTTP_ADDR" default:":8080" desc:"HTTP listen address: metrics, health, status"`
	GossipPort   int           `envconfig:"GOSSIP_PORT" default:"7946" desc:"memberlist port (TCP and UDP); 0 picks a free one"`
	GossipBind   string        `envconfig:"GOSSIP_BIND" default:"0.0.0.0" desc:"memberlist bind address"`
	Advertise    string        `envconfig:"ADVERTISE" desc:"address other nodes reach this one at (default: memberlist picks)"`
	Join         []string      `envconfig:"JOIN" default:"server" desc:"memberlist seeds, comma-separated host or host:port"`
	NodeName     string        `envconfig:"NODE_NAME" desc:"memberlist node name (default: the hostname)"`
	Token        string        `envconfig:"TOKEN" default:"counter" desc:"name of the token to contend for"`
	Work         time.Duration `envconfig:"WORK" default:"200ms" desc:"time the worker holds the token in its critical section"`
	Think        time.Duration `envconfig:"THINK" default:"300ms" desc:"time the worker pauses between release and its next acquire"`
	SessionTTL   time.Duration `envconfig:"SESSION_TTL" desc:"session TTL to ask for; empty takes the server's"`
	ClusterKey   string        `envconfig:"CLUSTER_KEY" desc:"base64 of 16, 24 or 32 bytes: must match the server's; old,new while it changes"`
	ClusterLabel string        `envconfig:"CLUSTER_LABEL" default:"baton" desc:"memberlist label; must match the server's"`
	LogLevel     string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat    string        `envconfig:"LOG_FORMAT" default:"json" desc:"json or text"`

	// LocalGossip uses loopback memberlist timings (tests).
	LocalGossip bool `ignored:"true"`
	// Hooks let tests watch critical sections as they happen.
	Hooks Hooks `ignored:"true"`
	// DoctorGrace is how long the worker looks for its server before it warns of the
	// likely cause; zero means 5s, which a healthy start stays well within.
	DoctorGrace time.Duration `ignored:"true"`
}

// Hooks are called around each critical section, on the worker's goroutine.
type Hooks struct {
	Enter func(token string, fence uint64)
	Exit  func(token string, fence uint64, released error)
}

// Validate checks c and names the variable at fault.
func (c *Config) Validate() error {
	switch {
	case c.Token == "":
		return errors.New("BATON_TOKEN must not be empty")
	case c.Work < 0:
		return fmt.Errorf("BATON_WORK must be >= 0, got %s", c.Work)
	case c.Think < 0:
		return fmt.Errorf("BATON_THINK must be >= 0, got %s", c.Think)
	case c.SessionTTL < 0:
		return fmt.Errorf("BATON_SESSION_TTL must be >= 0, got %s", c.SessionTTL)
	case len(c.Join) == 0:
		return errors.New("BATON_JOIN must name at least one seed")
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("BATON_LOG_FORMAT must be json or text, got %q", c.LogFormat)
	}
	if _, err := cluster.ParseKeys("BATON_CLUSTER_KEY", c.ClusterKey); err != nil {
		return err
	}
	return nil
}

// Logging returns BATON_LOG_LEVEL and BATON_LOG_FORMAT (cli.LogConfig).
func (c *Config) Logging() (level, format string) { return c.LogLevel, c.LogFormat }

// nodeName is BATON_NODE_NAME, else this container's name, else the hostname
// (nodename.Default).
func (c *Config) nodeName() string {
	if c.NodeName != "" {
		return c.NodeName
	}
	return nodename.Default("baton-client")
}

// Interval is one critical section as this worker saw it.
type Interval struct {
	Token string    `json:"token"`
	Fence uint64    `json:"fence"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Outcome of the release: released (applied), stale (refused: granted to another
	// since), lost (refused: the lease had ended at the server), unknown (the answer
	// was lost with the session), failed (not sent: the client closed).
	Outcome string `json:"outcome"`
}

// Status is the worker's GET /status document.
type Status struct {
	Node      string     `json:"node"`
	State     string     `json:"state"` // joining, waiting, holding, releasing, thinking, stopping
	Token     string     `json:"token"`
	Fence     uint64     `json:"fence"`
	Counter   uint64     `json:"counter"`
	Waits     uint64     `json:"waits"`
	Connected bool       `json:"connected"`
	Session   string     `json:"session"`
	Epoch     uint64     `json:"epoch"`
	Server    string     `json:"server"`
	Problem   string     `json:"problem,omitempty"` // why there is no session, once it has lasted a while
	Done      uint64     `json:"critical_sections"`
	Stale     uint64     `json:"stale_releases"`
	Lost      uint64     `json:"leases_lost"`
	Recent    []Interval `json:"recent"` // latest critical sections, oldest first
}

// Worker runs the loop. Create with New, run with Run.
type Worker struct {
	cfg    Config
	name   string // this node's name: BATON_NODE_NAME or derived, once
	log    *slog.Logger
	reg    *prometheus.Registry
	keys   [][]byte // the cluster key (cluster.ParseKeys)
	bootID string

	acquire  prometheus.Histogram
	sections prometheus.Counter
	lost     prometheus.Counter
	stale    prometheus.Counter

	mu     sync.Mutex // guards status
	status Status

	node        *cluster.Node
	client      atomic.Pointer[baton.Client] // set once Run has found the server; read by HTTP handlers
	httpLn      net.Listener
	dialErr     atomic.Pointer[error] // the client package's last failed connect; nil once connected
	connects    atomic.Uint64         // connects resolved so far (resolve, pick)
	unreachable unreachable.Set       // servers whose connect failed lately (resolve, follow)
	replicated  atomic.Bool           // a replicating server was seen: connect to no other kind (pick)
}

// primaryKey is the key a session proves: the first of the cluster key's list.
func (w *Worker) primaryKey() []byte {
	if len(w.keys) == 0 {
		return nil
	}
	return w.keys[0]
}

const recentKept = 64

// New checks cfg and prepares a worker; nothing listens until Run.
func New(cfg Config, reg *prometheus.Registry, log *slog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	keys, _ := cluster.ParseKeys("BATON_CLUSTER_KEY", cfg.ClusterKey)
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := cfg.nodeName()
	w := &Worker{cfg: cfg, name: name, log: log, reg: reg, keys: keys, bootID: hex.EncodeToString(b[:]),
		acquire: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "baton_client_acquire_seconds",
			Help:    "Time from asking for the token to holding it.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		sections: prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_client_critical_sections_total",
			Help: "Critical sections whose release the server accepted."}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_client_leases_lost_total",
			Help: "Leases that ended before their release: session expired, connection lost, revoked."}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{Name: "baton_client_stale_releases_total",
			Help: "Releases the server refused for a stale fence."}),
		status: Status{Node: name, State: "joining", Token: cfg.Token, Recent: []Interval{}},
	}
	reg.MustRegister(w.acquire, w.sections, w.lost, w.stale,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector(),
		collectors.NewBuildInfoCollector())
	buildinfo.Register(reg, "client")
	return w, nil
}

// Run serves HTTP, joins the cluster, and loops until ctx ends; then it releases what
// it holds, says goodbye to the server, leaves the cluster and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	var err error
	if w.httpLn, err = net.Listen("tcp", w.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("BATON_HTTP_ADDR %s: %w", w.cfg.HTTPAddr, err)
	}
	srv := &http.Server{Handler: w.routes(), ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second}
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		_ = srv.Serve(w.httpLn)
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
		<-httpDone
	}()

	w.node, err = cluster.Start(cluster.Config{Name: w.name, BindAddr: w.cfg.GossipBind, Port: w.cfg.GossipPort,
		Advertise: w.cfg.Advertise, Join: w.cfg.Join, Keys: w.keys, Label: w.cfg.ClusterLabel, Local: w.cfg.LocalGossip,
		Logger: w.log, Meta: cluster.Meta{Role: cluster.RoleClient, BootID: w.bootID, HTTPPort: portOf(w.httpLn.Addr())},
		NeedJoin: w.needJoin})
	if err != nil {
		return cluster.GossipPortErr(w.cfg.GossipPort, err)
	}
	defer func() {
		_ = w.node.Leave(2 * time.Second)
		_ = w.node.Close()
	}()

	dctx, stopDoctor := context.WithCancel(ctx)
	doctorDone := make(chan struct{})
	go func() {
		defer close(doctorDone)
		grace := w.cfg.DoctorGrace
		if grace <= 0 {
			grace = 5 * time.Second
		}
		w.doctor(dctx, grace)
	}()
	defer func() { stopDoctor(); <-doctorDone }()

	// Said when the stop arrives, not once the cycle has wound up: a release to an
	// unreachable server may take up to stopGrace first.
	stopLog := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		state := w.status.State
		w.mu.Unlock()
		attrs := []any{"state", state}
		if cause := context.Cause(ctx); cause != ctx.Err() {
			attrs = append(attrs, "why", cause.Error()) // signal terminated, from main
		}
		w.log.Info("stopping", attrs...)
	})
	defer stopLog()

	clientLog := slog.New(&dialWatch{next: w.log.Handler()})
	client, err := baton.Dial(ctx, baton.Config{Resolve: w.resolve, Follow: w.follow, OnConnect: w.connected,
		Node: w.name, BootID: w.bootID, TTL: w.cfg.SessionTTL, ClusterKey: w.primaryKey(), Logger: clientLog})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before the server was found
		}
		return err
	}
	defer client.Close()
	w.client.Store(client)
	for ctx.Err() == nil {
		w.cycle(ctx, client)
	}
	w.setState("stopping")
	w.log.Info("leaving the cluster")
	return nil
}

// needJoin says when to contact the seeds again: when no server is known, and when
// the known one cannot be reached. After a partition or a server recreated at a new
// address this node's view may be stale while the seeds (the server's DNS name)
// lead to the live one.
func (w *Worker) needJoin(n *cluster.Node) bool {
	if _, ok := n.Server(); !ok {
		return true
	}
	c := w.client.Load()
	return c != nil && !c.Info().Connected
}

// doctor looks every half second at how the worker stands with its server and says
// what is likely wrong once a problem has lasted grace (see type doctor).
func (w *Worker) doctor(ctx context.Context, grace time.Duration) {
	d := &doctor{log: w.log, grace: grace}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g := d.observe(now, diagnose(w.view()))
			problem := ""
			if g.cause != "" && now.Sub(d.since) >= grace {
				problem = g.msg
			}
			w.update(func(s *Status) { s.Problem = problem })
		}
	}
}

// view gathers what diagnose reads.
func (w *Worker) view() view {
	v := view{seeds: strings.Join(w.cfg.Join, ",")}
	if c := w.client.Load(); c != nil && c.Info().Connected {
		w.dialErr.Store(nil)
		v.connected = true
		return v
	}
	if m, ok := w.server(); ok {
		v.serverAddr, v.leads = m.TokenAddr(), m.Meta.Leader
	}
	for _, m := range w.node.Members() {
		if m.State == cluster.StateAlive {
			v.members++
		}
	}
	v.joinErr = w.node.JoinErr()
	if p := w.dialErr.Load(); p != nil {
		v.dialErr = *p
	}
	return v
}

// HTTPAddr is the bound HTTP address.
func (w *Worker) HTTPAddr() string { return w.httpLn.Addr().String() }

// cycle is one acquire, critical section, release, think.
func (w *Worker) cycle(ctx context.Context, client *baton.Client) {
	w.setState("waiting")
	t0 := time.Now()
	lease, err := client.Acquire(ctx, w.cfg.Token)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("acquire failed", "token", w.cfg.Token, "err", err)
			sleep(ctx, time.Second)
		}
		return
	}
	waited := time.Since(t0)
	w.acquire.Observe(waited.Seconds())
	iv := Interval{Token: lease.Token, Fence: lease.Fence, Start: time.Now()}
	w.update(func(s *Status) {
		s.State, s.Fence, s.Counter, s.Waits = "holding", lease.Fence, lease.Record.Counter, lease.Record.Waits
	})
	w.log.Info("holding", "token", lease.Token, "fence", lease.Fence, "counter", lease.Record.Counter,
		"waits", lease.Record.Waits, "waited_ms", waited.Milliseconds())
	if h := w.cfg.Hooks.Enter; h != nil {
		h(lease.Token, lease.Fence)
	}

	// The critical section: hold for Work unless the lease ends first.
	work := time.NewTimer(w.cfg.Work)
	select {
	case <-work.C:
	case <-lease.Done():
	case <-ctx.Done():
	}
	work.Stop()
	lostEarly := lease.Err()
	iv.End = time.Now()
	if h := w.cfg.Hooks.Exit; h != nil {
		h(lease.Token, lease.Fence, lostEarly)
	}

	// Release even a lost lease: the fence decides, and a refusal is the proof that
	// the record was protected. A stopping worker still gets a moment to release.
	w.setState("releasing")
	// Long enough to reconnect after a partition of about a TTL and let the fence
	// judge a late release; a stopping worker has only its grace period.
	info := client.Info()
	rctx, cancel := releaseContext(ctx, max(5*time.Second, 3*info.TTL), stopGrace, info.Deadline)
	rec := lease.Record
	rec.Counter++
	err = lease.Release(rctx, rec)
	if cause := context.Cause(rctx); err != nil && errors.Is(cause, errReleaseCut) {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	cancel()
	switch {
	case err == nil:
		iv.Outcome = "released"
		w.sections.Inc()
		w.update(func(s *Status) { s.Done++; s.Counter = rec.Counter })
		w.log.Info("released", "token", lease.Token, "fence", lease.Fence, "counter", rec.Counter,
			"held_ms", iv.End.Sub(iv.Start).Milliseconds())
	case errors.Is(err, baton.ErrStaleFence):
		iv.Outcome = "stale"
		w.stale.Inc()
		w.update(func(s *Status) { s.Stale++ })
		w.log.Warn("release refused: stale fence", "token", lease.Token, "fence", lease.Fence, "err", err)
	case errors.Is(err, baton.ErrLeaseLost):
		iv.Outcome = "lost"
		w.log.Warn("release refused: lease lost", "token", lease.Token, "fence", lease.Fence, "err", err)
	case errors.Is(err, baton.ErrOutcomeUnknown):
		iv.Outcome = "unknown"
		w.log.Warn("release outcome unknown", "token", lease.Token, "fence", lease.Fence, "err", err)
	default:
		iv.Outcome = "failed"
		w.log.Warn("release failed", "token", lease.Token, "fence", lease.Fence, "err", err)
	}
	if lostEarly != nil || iv.Outcome != "released" {
		w.lost.Inc()
		w.update(func(s *Status) { s.Lost++ })
		w.log.Warn("lease lost", "token", lease.Token, "fence", lease.Fence, "why", lostEarly)
	}
	w.update(func(s *Status) {
		s.Recent = append(s.Recent, iv)
		if len(s.Recent) > recentKept {
			s.Recent = s.Recent[len(s.Recent)-recentKept:]
		}
	})
	w.setState("thinking")
	sleep(ctx, w.cfg.Think)
}

// stopGrace bounds a release once the worker is told to stop: compose gives a
// container 10 s (stop_grace_period) before SIGKILL, and the worker still has to say
// goodbye to the server and leave the cluster after it.
const stopGrace = 2 * time.Second

// errReleaseCut is the cause of a release given up because the worker is stopping.
var errReleaseCut = errors.New("release given up: stopping")

// releaseContext is the context a release runs under. It does not end with ctx (a
// stopping worker still releases what it holds) but within timeout; and once ctx
// ends, before the release or during it, within grace from then and not after
// leaseEnd (the session's trust deadline; zero if none), whichever is sooner, with
// cause errReleaseCut. Without the second bound a stop that arrived during a release
// to an unreachable server waited the whole timeout (3 TTLs: 15 s by default).
func releaseContext(ctx context.Context, timeout, grace time.Duration, leaseEnd time.Time) (context.Context, context.CancelFunc) {
	base, cut := context.WithCancelCause(context.WithoutCancel(ctx))
	rctx, cancelTimeout := context.WithTimeout(base, timeout)
	var (
		mu    sync.Mutex // guards timer, ended
		timer *time.Timer
		ended bool
	)
	stop := context.AfterFunc(ctx, func() {
		d := grace
		if !leaseEnd.IsZero() {
			d = min(d, time.Until(leaseEnd))
		}
		mu.Lock()
		defer mu.Unlock()
		if !ended {
			timer = time.AfterFunc(max(d, 0), func() { cut(errReleaseCut) })
		}
	})
	return rctx, func() {
		stop()
		mu.Lock()
		ended = true
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancelTimeout()
		cut(context.Canceled)
	}
}

// sleep waits d or until ctx ends: the worker's think time, not synchronisation.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (w *Worker) setState(s string) { w.update(func(st *Status) { st.State = s }) }

func (w *Worker) update(fn func(*Status)) {
	w.mu.Lock()
	fn(&w.status)
	w.mu.Unlock()
}

// Status returns a copy of the worker's status.
func (w *Worker) Status() Status {
	w.mu.Lock()
	st := w.status
	st.Recent = append([]Interval(nil), w.status.Recent...)
	w.mu.Unlock()
	if c := w.client.Load(); c != nil {
		info := c.Info()
		st.Connected, st.Session, st.Epoch, st.Server = info.Connected, fmt.Sprintf("%x", info.Session), info.Epoch, info.Server
	}
	return st
}

func (w *Worker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{Registry: w.reg}))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, r *http.Request) { rw.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		if c := w.client.Load(); c == nil || !c.Info().Connected {
			// The why, when known, in the body: a healthcheck shows it (docker inspect)
			// where the client's /status is not published.
			msg := "not connected to a server"
			if p := w.Status().Problem; p != "" {
				msg += ": " + p
			}
			http.Error(rw, msg, http.StatusServiceUnavailable)
			return
		}
		rw.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /status", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(rw)
		enc.SetIndent("", "  ")
		_ = enc.Encode(w.Status())
	})
	return mux
}

func portOf(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}
