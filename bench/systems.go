package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
)

// locker is one session of one system: it takes and gives back named locks.
type locker interface {
	Lock(ctx context.Context, token string) (unlock func() error, err error)
	Close() error
}

// system is a lock service under test: its server runs in a process of its own.
type system struct {
	name  string
	start func() (*proc, error)
	dial  func(p *proc, id int) (locker, error)
	// multi says whether it takes many token names (the floor serves one token).
	multi bool
	// keeps says whether a released token stays in the server's state (its fence and
	// record): only there can idle tokens be present (-idle-tokens).
	keeps bool
	// durable says whether it answers only what is on disk: the disk's append+fsync
	// is then measured beside it.
	durable bool
	// settle, if set, runs before each measurement, once the system's servers are
	// continued: the cluster waits there for its election to end.
	settle func(p *proc) error
	// drain, if set, runs after each measurement, once its clients are closed.
	drain func(p *proc)
}

// proc is a system's server: one child process, or for a replicated system its
// members, one child each.
type proc struct {
	cmd  *exec.Cmd // nil for a replicated system
	addr string
	http string
	dir  string // a durable baton server's state directory
	// gossip is a cluster member's memberlist address.
	gossip string
	key    []byte // a cluster's key, for its clients

	out *bufio.Reader // the child's stdout, after its address line
	// A cluster member's child says when it starts and stops serving (cluster.go).
	leading atomic.Bool
	leads   atomic.Int64 // times it started to lead
	members []*proc
}

// children are the processes of p's servers.
func (p *proc) children() []*proc {
	if p.members != nil {
		return p.members
	}
	return []*proc{p}
}

func (p *proc) signal(sig os.Signal) {
	for _, c := range p.children() {
		_ = c.cmd.Process.Signal(sig)
	}
}

// stateDir is where p's first server keeps its state ("" in memory): the
// directory, on the disk, that its raft log is written to.
func (p *proc) stateDir() string {
	return p.children()[0].dir
}

// stat is the CPU time and resident memory of p's servers, summed.
func (p *proc) stat() (cpu time.Duration, rssMB float64) {
	for _, c := range p.children() {
		t, r := procStat(c.cmd.Process.Pid)
		cpu, rssMB = cpu+t, rssMB+r
	}
	return cpu, rssMB
}

// stop interrupts p's servers and waits for them to exit, killing one that takes
// longer than 5 s.
func (p *proc) stop() {
	var wg sync.WaitGroup
	for _, c := range p.children() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = c.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = c.cmd.Process.Kill()
				<-done
			}
		}()
	}
	wg.Wait()
}

// startChild re-executes this binary with -serve kind and args and reads the address
// line it prints when ready: its address, then, where it has them, its HTTP address
// and its state directory.
func startChild(kind string, args ...string) (*proc, error) {
	cmd := exec.Command(os.Args[0], append([]string{"-serve", kind}, args...)...)
	cmd.Stderr = os.Stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	out := bufio.NewReader(pipe)
	line, err := out.ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) < 1 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("%s server said %q: %v", kind, line, err)
	}
	p := &proc{cmd: cmd, addr: f[0], out: out}
	if len(f) > 1 {
		p.http = f[1]
	}
	if len(f) > 2 {
		p.dir = f[2]
	}
	if len(f) > 3 {
		p.gossip = f[3]
	}
	return p, nil
}

func child(kind string) func() (*proc, error) {
	return func() (*proc, error) { return startChild(kind) }
}

var systems = map[string]*system{
	"floor": {name: "floor", start: child("floor"), dial: dialFloor},
	"baton": {name: "baton", start: child("baton"), dial: dialBaton, multi: true, keeps: true, drain: drainSessions},
	// baton with a state directory and no peers: a raft log of one server, every
	// batch made durable before its replies leave.
	"baton-durable": {name: "baton-durable", start: child("baton-durable"), dial: dialBaton, multi: true, keeps: true, durable: true,
		drain: drainSessions},
	// baton as compose deploys it: three such servers replicating one log (cluster.go).
	"baton-cluster": {name: "baton-cluster", start: startCluster, dial: dialCluster, multi: true, keeps: true, durable: true,
		settle: func(p *proc) error { return p.settle(30 * time.Second) }, drain: drainSessions},
	// the same with a cluster key: raft over TLS between the servers, sessions proven.
	"baton-cluster-keyed": {name: "baton-cluster-keyed", start: startKeyedCluster, dial: dialCluster, multi: true, keeps: true,
		durable: true, settle: func(p *proc) error { return p.settle(30 * time.Second) }, drain: drainSessions},
	"etcd":  {name: "etcd", start: child("etcd"), dial: dialEtcd, multi: true, durable: true},
	"redis": {name: "redis", start: startRedis, dial: dialRedis, multi: true},
}

// drainSessions waits until every one of a baton system's servers has no session
// left, up to 15 s. A client's Close sends its goodbye without waiting for an answer,
// and the server is stopped (SIGSTOP) right after a measurement: without the wait,
// it would continue, for the next one, past every session's deadline and expire
// those sessions (taking back what they held) before it read their goodbyes, and a
// cluster would lose a goodbye batch still committing (its leader steps down when it
// continues, having heard from no quorum within its lease), to expire the sessions
// later. A cluster follower's state is the committed one. A drain that times out is
// reported, not fatal.
func drainSessions(p *proc) {
	const timeout = 15 * time.Second
	deadline := time.Now().Add(timeout)
	for {
		left := 0.0
		for _, c := range p.children() {
			n, ok := serverGauges(c.http, "baton_sessions")["baton_sessions"]
			if !ok {
				n = 1 // not answering: not known to be drained
			}
			left += n
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "sessions still open %s after their clients closed: %.0f (summed over the servers)\n", timeout, left)
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// serveChild runs the server of kind in this process until SIGINT or SIGTERM; m
// configures a cluster member.
func serveChild(kind string, m *member, wait func()) error {
	switch kind {
	case "baton", "baton-durable", "baton-cluster":
		cfg := server.DefaultConfig()
		cfg.TokenAddr, cfg.HTTPAddr, cfg.GossipBind, cfg.GossipPort, cfg.NodeName = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0, "bench"
		// Tokens stay in the state once made: room for every shape's tokens, the
		// idle ones included.
		cfg.MaxConns, cfg.MaxTokens = 20000, 20000
		if kind != "baton" {
			dir, err := os.MkdirTemp("", "bench-"+kind)
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			cfg.StateDir = dir
		}
		if kind == "baton-cluster" {
			if m == nil {
				return errors.New("baton-cluster needs -member")
			}
			cfg.NodeName, cfg.RaftPort, cfg.Join, cfg.ClusterKey = m.Name, 0, m.Join, m.Key
			cfg.BootstrapExpect = clusterSize
		}
		logger, closeLog, err := serverLogger(kind, cfg.NodeName)
		if err != nil {
			return err
		}
		defer closeLog()
		srv, err := server.New(cfg, server.Options{Logger: logger})
		if err == nil {
			err = srv.Open()
		}
		if err != nil {
			return err
		}
		line := []any{srv.TokenAddr(), srv.HTTPAddr(), cfg.StateDir} // the address line: startChild
		if m != nil {
			line = append(line, srv.GossipAddr()) // the others join it there
		}
		fmt.Println(line...)
		if m != nil {
			stop := make(chan struct{})
			watched := make(chan struct{})
			go func() { defer close(watched); watchLeading(srv.Leading, stop) }()
			defer func() { close(stop); <-watched }()
		}
		wait()
		return srv.Close()
	case "floor":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		fmt.Println(ln.Addr())
		go floorServe(ln)
		wait()
		return ln.Close()
	case "etcd":
		dir, err := os.MkdirTemp("", "bench-etcd")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg := embed.NewConfig()
		cfg.Dir = dir
		cfg.LogLevel = "fatal" // its shutdown logs errors that are not
		client, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(freePort()))
		peer, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(freePort()))
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			return err
		}
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			return errors.New("etcd did not become ready")
		}
		fmt.Println(client.Host)
		wait()
		e.Close()
		return nil
	}
	return fmt.Errorf("unknown server %q", kind)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// floor: the least a FIFO token server can do. One byte per message, one round trip
// per handoff: A (acquire) is answered G (granted) when the token comes; R releases.
// No sessions, no fences, no metrics, one token.
func floorServe(ln net.Listener) {
	var mu sync.Mutex // guards holder, queue
	var holder net.Conn
	var queue []net.Conn
	passOn := func() { // with mu held: the token goes to the first waiter, if any
		holder = nil
		if len(queue) > 0 {
			holder, queue = queue[0], queue[1:]
			_, _ = holder.Write([]byte{'G'})
		}
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			defer func() { // a closed connection gives the token on and leaves the queue
				mu.Lock()
				defer mu.Unlock()
				queue = slices.DeleteFunc(queue, func(q net.Conn) bool { return q == c })
				if holder == c {
					passOn()
				}
			}()
			buf := make([]byte, 1)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				mu.Lock()
				switch buf[0] {
				case 'A':
					if holder == nil {
						holder = c
						_, _ = c.Write([]byte{'G'})
					} else {
						queue = append(queue, c)
					}
				case 'R':
					if holder == c {
						passOn()
					}
				}
				mu.Unlock()
			}
		}()
	}
}

type floorLocker struct{ c net.Conn }

func dialFloor(p *proc, _ int) (locker, error) {
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &floorLocker{c: c}, nil
}

func (f *floorLocker) Lock(ctx context.Context, _ string) (func() error, error) {
	if _, err := f.c.Write([]byte{'A'}); err != nil {
		return nil, err
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(f.c, buf); err != nil {
		return nil, err
	}
	return func() error { _, err := f.c.Write([]byte{'R'}); return err }, nil
}

func (f *floorLocker) Close() error { return f.c.Close() }

// requeuer is a locker that can give its token back and queue for it again in one
// step: the loop uses it from the second turn on where a system has it.
type requeuer interface {
	Requeue(ctx context.Context) error
}

// baton: the real client package against the real server, sessions, fences and
// metrics on. From the second turn on, a session's release and next acquire go in
// one frame (Lease.Requeue).
type batonLocker struct {
	c   *baton.Client
	cur *baton.Lease // the lease of the current turn
}

func dialBaton(p *proc, id int) (locker, error) {
	return dialBatonWith(baton.Config{Addr: p.addr}, id)
}

// dialBatonWith opens session id with cfg, which says where the server is.
func dialBatonWith(cfg baton.Config, id int) (locker, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Node = fmt.Sprintf("bench-%d-%d", os.Getpid(), id)
	c, err := baton.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &batonLocker{c: c}, nil
}

// serverLogger is a baton child's logger: discarded, unless BENCH_SERVER_LOG names
// a directory, where each server writes its log (text, info and above) to a file of
// its own.
func serverLogger(kind, node string) (*slog.Logger, func(), error) {
	dir := os.Getenv("BENCH_SERVER_LOG")
	if dir == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil)), func() {}, nil
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%s-%d.log", kind, node, os.Getpid())))
	if err != nil {
		return nil, nil, fmt.Errorf("BENCH_SERVER_LOG: %w", err)
	}
	return slog.New(slog.NewTextHandler(f, nil)), func() { f.Close() }, nil
}

func (b *batonLocker) Lock(ctx context.Context, token string) (func() error, error) {
	l, err := b.c.Acquire(ctx, token)
	if err != nil {
		return nil, err
	}
	b.cur = l
	return func() error { return b.cur.Release(ctx, baton.Record{Counter: b.cur.Record.Counter + 1}) }, nil
}

func (b *batonLocker) Requeue(ctx context.Context) error {
	next, err := b.cur.Requeue(ctx, baton.Record{Counter: b.cur.Record.Counter + 1})
	if err != nil {
		return err
	}
	b.cur = next
	return nil
}

func (b *batonLocker) Close() error { return b.c.Close() }

// etcd: concurrency.Mutex on a session, the way etcd documents locks.
type etcdLocker struct {
	cli  *clientv3.Client
	sess *concurrency.Session
}

func dialEtcd(p *proc, _ int) (locker, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{p.addr}, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &etcdLocker{cli: cli, sess: sess}, nil
}

func (e *etcdLocker) Lock(ctx context.Context, token string) (func() error, error) {
	m := concurrency.NewMutex(e.sess, "/bench/"+token)
	if err := m.Lock(ctx); err != nil {
		return nil, err
	}
	return func() error { return m.Unlock(context.Background()) }, nil
}

func (e *etcdLocker) Close() error { e.sess.Close(); return e.cli.Close() }

// redis: Debian's redis-server; SET NX PX retried every millisecond, released by a
// compare-and-delete script, the usual single-instance Redis lock.
func startRedis() (*proc, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not installed (apt-get install redis-server)")
	}
	port := freePort()
	cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--maxclients", "20000")
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return &proc{cmd: cmd, addr: addr}, nil
		}
	}
	_ = cmd.Process.Kill()
	return nil, errors.New("redis-server did not start")
}

type redisLocker struct {
	c  net.Conn
	r  *bufio.Reader
	id string
}

func dialRedis(p *proc, id int) (locker, error) {
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &redisLocker{c: c, r: bufio.NewReader(c), id: strconv.Itoa(id)}, nil
}

const redisUnlock = `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`

func (r *redisLocker) Lock(ctx context.Context, token string) (func() error, error) {
	for {
		reply, err := r.do("SET", token, r.id, "NX", "PX", "30000")
		if err != nil {
			return nil, err
		}
		if reply == "OK" {
			return func() error { _, err := r.do("EVAL", redisUnlock, "1", token, r.id); return err }, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// do sends one RESP command and reads a simple, integer, bulk or nil reply.
func (r *redisLocker) do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(r.c, b.String()); err != nil {
		return "", err
	}
	line, err := r.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		_, err := io.ReadFull(r.r, buf)
		return string(buf[:n]), err
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

func (r *redisLocker) Close() error { return r.c.Close() }
