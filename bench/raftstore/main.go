// Command raftstore measures, on the disk it runs on, what a hashicorp/raft log store
// costs, so that baton's replicated state (issue 14) picks its store by measurement:
//
//	fsync    append 64 B to a file and fsync (and fdatasync) it: the physical ceiling
//	single   one raft node, bootstrapped alone, with raft-boltdb/v2 or raft-wal as log
//	         and stable store; C concurrent appliers of 64 B commands
//	cluster  three raft nodes in this process over the real TCP transport on
//	         127.0.0.1, each with its own store directory; the same appliers on the leader
//
// Every raft node uses a BatchingFSM and Config.BatchApplyCh, so concurrent applies
// share a log write (one StoreLogs, so one fsync) on the leader.
//
//	cd bench && go run ./raftstore                          # the figures in docs/raft-store.md
//	cd bench && go run ./raftstore -duration 1s -conc 8     # a quick look
//
// The directory defaults to one under the working directory, not os.TempDir: /tmp may
// be a tmpfs, whose fsync costs nothing.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
)

type options struct {
	dir      string
	duration time.Duration
	warmup   time.Duration
	conc     []int
	mae      []int
	inFlight int
}

func main() {
	dir := flag.String("dir", "raftstore-data", "where the files go (removed afterwards); must be on the disk to measure")
	duration := flag.Duration("duration", 3*time.Second, "measured time per run")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "unmeasured time before each run")
	concFlag := flag.String("conc", "1,8,64", "concurrent appliers, per run")
	maeFlag := flag.String("max-append", "64", "Config.MaxAppendEntries values to try in the single-node runs")
	stores := flag.String("stores", "boltdb,boltdb-nofreelistsync,wal", "log stores for the single-node runs")
	clusterStores := flag.String("cluster-stores", "boltdb,wal", "log stores for the three-node runs (empty skips)")
	skipFsync := flag.Bool("skip-fsync", false, "skip the raw fsync runs")
	syncsFlag := flag.String("syncs", "fsync,fdatasync,prealloc+fdatasync,prealloc+fsync,zeroed+fdatasync",
		"raw runs: [prealloc+|zeroed+]fsync|fdatasync (prealloc: fallocate; zeroed: the blocks written with zeros beforehand)")
	inFlight := flag.Int("max-inflight", 2, "NetworkTransportConfig.MaxRPCsInFlight: 1 turns AppendEntries pipelining off (raft's default is 2)")
	failovers := flag.Int("failover", 0, "instead of the runs: this many leader-loss trials on three internal/replica nodes with its DefaultConfig timeouts")
	flag.Parse()
	if *failovers > 0 {
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			fail(err)
		}
		defer os.RemoveAll(*dir)
		if err := runFailover(*dir, *failovers); err != nil {
			fail(err)
		}
		return
	}

	o := options{dir: *dir, duration: *duration, warmup: *warmup, inFlight: *inFlight}
	var err error
	if o.conc, err = ints(*concFlag); err != nil {
		fail(err)
	}
	if o.mae, err = ints(*maeFlag); err != nil {
		fail(err)
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		fail(err)
	}
	defer os.RemoveAll(o.dir)

	fmt.Printf("# raftstore %s, duration %s, dir %s\n", time.Now().UTC().Format(time.RFC3339), o.duration, o.dir)
	fmt.Printf("%-34s %6s %10s %9s %9s %10s\n", "run", "conc", "ops/s", "p50", "p99", "per batch")
	if !*skipFsync {
		for _, sync := range split(*syncsFlag) {
			r, err := runFsync(o, sync)
			if err != nil {
				fail(err)
			}
			r.print()
		}
	}
	for _, store := range split(*stores) {
		for _, mae := range o.mae {
			for _, c := range o.conc {
				r, err := runRaft(o, store, 1, c, mae)
				if err != nil {
					fail(fmt.Errorf("single %s c=%d: %w", store, c, err))
				}
				r.print()
			}
		}
	}
	for _, store := range split(*clusterStores) {
		for _, c := range o.conc {
			r, err := runRaft(o, store, 3, c, o.mae[len(o.mae)-1])
			if err != nil {
				fail(fmt.Errorf("cluster %s c=%d: %w", store, c, err))
			}
			r.print()
		}
	}
}

type result struct {
	name     string
	conc     int
	ops      float64
	p50, p99 time.Duration
	perBatch float64 // entries per FSM batch; 0 when not raft
}

func (r result) print() {
	batch := "-"
	if r.perBatch > 0 {
		batch = strconv.FormatFloat(r.perBatch, 'f', 1, 64)
	}
	fmt.Printf("%-34s %6d %10.0f %9s %9s %10s\n", r.name, r.conc, r.ops, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), batch)
}

// runFsync appends 64 B to a file and syncs it, one at a time: the cost of one durable
// log write on this disk, which no store can beat per batch.
func runFsync(o options, how string) (result, error) {
	path := filepath.Join(o.dir, "fsync.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return result{}, err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, 64)
	sync := f.Sync
	switch {
	case strings.HasSuffix(how, "fdatasync"):
		sync = func() error { return syscall.Fdatasync(int(f.Fd())) }
	case !strings.HasSuffix(how, "fsync"):
		return result{}, fmt.Errorf("-syncs: %q is neither fsync nor fdatasync", how)
	}
	const size = 64 << 20 // raft-wal's segment size
	switch {
	case strings.HasPrefix(how, "prealloc"):
		// As a segmented log does (raft-wal): the file's size is settled beforehand.
		// Its blocks are allocated unwritten, so the first write into each still
		// changes the file's extent map, which the sync must journal.
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
			return result{}, err
		}
	case strings.HasPrefix(how, "zeroed"):
		// Blocks written with zeros beforehand: an fdatasync after a write into them
		// has no metadata to write at all.
		zeros := make([]byte, 1<<20)
		for off := int64(0); off < size; off += int64(len(zeros)) {
			if _, err := f.WriteAt(zeros, off); err != nil {
				return result{}, err
			}
		}
	}
	if err := f.Sync(); err != nil {
		return result{}, err
	}
	var lat []time.Duration
	warmEnd := time.Now().Add(o.warmup)
	end := warmEnd.Add(o.duration)
	for {
		start := time.Now()
		if start.After(end) {
			break
		}
		if _, err := f.Write(buf); err != nil { // sequential: the offset advances
			return result{}, err
		}
		if err := sync(); err != nil {
			return result{}, err
		}
		if start.After(warmEnd) {
			lat = append(lat, time.Since(start))
		}
	}
	p50, p99 := percentiles(lat)
	return result{name: "append+" + how, conc: 1, ops: float64(len(lat)) / o.duration.Seconds(), p50: p50, p99: p99}, nil
}

// fsm is a BatchingFSM that counts: the cheapest state machine, so that the figures
// are the log's.
type fsm struct {
	entries atomic.Uint64
	batches atomic.Uint64
}

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	f.batches.Add(1)
	f.entries.Add(uint64(len(logs)))
	out := make([]any, len(logs))
	for i := range logs {
		out[i] = logs[i].Index
	}
	return out
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) { return snap{}, nil }
func (f *fsm) Restore(r io.ReadCloser) error       { return r.Close() }

type snap struct{}

func (snap) Persist(s raft.SnapshotSink) error { return s.Close() }
func (snap) Release()                          {}

type node struct {
	raft  *raft.Raft
	fsm   *fsm
	trans *raft.NetworkTransport
	close func() error
}

// openNode makes one raft node with its store in dir and a TCP transport on loopback.
func openNode(dir, store, id string, mae, inFlight int, logger hclog.Logger) (*node, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var (
		logs   raft.LogStore
		stable raft.StableStore
		closer func() error
	)
	switch store {
	case "boltdb", "boltdb-nofreelistsync":
		opts := raftboltdb.Options{Path: filepath.Join(dir, "raft.db")}
		if store == "boltdb-nofreelistsync" { // Consul's raft_boltdb.NoFreelistSync
			opts.BoltOptions = &bbolt.Options{Timeout: time.Second, NoFreelistSync: true}
		}
		s, err := raftboltdb.New(opts)
		if err != nil {
			return nil, err
		}
		logs, stable, closer = s, s, s.Close
	case "wal":
		// raft-wal v0.4.0's Close leaves its meta database (and its file lock)
		// open; close it here.
		meta := &metadb.BoltMetaDB{}
		s, err := raftwal.Open(dir, raftwal.WithMetaStore(meta))
		if err != nil {
			return nil, err
		}
		logs, stable = s, s
		closer = func() error { return errors.Join(s.Close(), meta.Close()) }
	default:
		return nil, fmt.Errorf("unknown store %q", store)
	}
	cache, err := raft.NewLogCache(512, logs)
	if err != nil {
		return nil, err
	}
	trans, err := raft.NewTCPTransportWithConfig("127.0.0.1:0", nil, &raft.NetworkTransportConfig{
		MaxPool: 3, Timeout: 5 * time.Second, MaxRPCsInFlight: inFlight, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(id)
	cfg.Logger = logger
	cfg.BatchApplyCh = true
	cfg.MaxAppendEntries = mae
	cfg.HeartbeatTimeout = 500 * time.Millisecond
	cfg.ElectionTimeout = 500 * time.Millisecond
	cfg.LeaderLeaseTimeout = 250 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	f := &fsm{}
	r, err := raft.NewRaft(cfg, f, cache, stable, raft.NewDiscardSnapshotStore(), trans)
	if err != nil {
		trans.Close()
		closer()
		return nil, err
	}
	n := &node{raft: r, fsm: f, trans: trans}
	n.close = func() error {
		err := r.Shutdown().Error()
		return errors.Join(err, trans.Close(), closer())
	}
	return n, nil
}

// runRaft opens size nodes, bootstraps them as one cluster, waits for a leader and
// drives it with conc appliers of 64 B commands.
func runRaft(o options, store string, size, conc, mae int) (result, error) {
	base, err := os.MkdirTemp(o.dir, store+"-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(base)
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error, Output: os.Stderr})
	var nodes []*node
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	var servers []raft.Server
	for i := range size {
		id := "n" + strconv.Itoa(i)
		n, err := openNode(filepath.Join(base, id), store, id, mae, o.inFlight, logger)
		if err != nil {
			return result{}, err
		}
		nodes = append(nodes, n)
		servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: n.trans.LocalAddr()})
	}
	if err := nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		return result{}, err
	}
	var leader *node
	deadline := time.Now().Add(10 * time.Second)
	for leader == nil {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				leader = n
			}
		}
		if time.Now().After(deadline) {
			return result{}, errors.New("no leader within 10s")
		}
		time.Sleep(10 * time.Millisecond) // polling for the election; not synchronisation of the measurement
	}
	if err := leader.raft.Barrier(5 * time.Second).Error(); err != nil {
		return result{}, err
	}

	cmd := make([]byte, 64)
	var (
		mu       sync.Mutex
		lat      []time.Duration
		wg       sync.WaitGroup
		applyMu  sync.Mutex
		applyErr error
	)
	warmEnd := time.Now().Add(o.warmup)
	end := warmEnd.Add(o.duration)
	var e0, b0 uint64
	var once sync.Once
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for {
				start := time.Now()
				if start.After(end) {
					break
				}
				if !start.Before(warmEnd) {
					once.Do(func() { e0, b0 = leader.fsm.entries.Load(), leader.fsm.batches.Load() })
				}
				if err := leader.raft.Apply(cmd, 5*time.Second).Error(); err != nil {
					applyMu.Lock()
					applyErr = err
					applyMu.Unlock()
					return
				}
				if !start.Before(warmEnd) {
					mine = append(mine, time.Since(start))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if applyErr != nil {
		return result{}, applyErr
	}
	e1, b1 := leader.fsm.entries.Load(), leader.fsm.batches.Load()
	p50, p99 := percentiles(lat)
	name := fmt.Sprintf("single %s mae=%d", store, mae)
	if size > 1 {
		name = fmt.Sprintf("cluster3 tcp %s mae=%d inflight=%d", store, mae, o.inFlight)
	}
	r := result{name: name, conc: conc, ops: float64(len(lat)) / o.duration.Seconds(), p50: p50, p99: p99}
	if b1 > b0 {
		r.perBatch = float64(e1-e0) / float64(b1-b0)
	}
	return r, nil
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	return d[len(d)*50/100], d[min(len(d)-1, len(d)*99/100)]
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range split(s) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "raftstore:", err)
	os.Exit(1)
}
