// Package baton is the Go client of the baton token service: a session with a TTL
// kept alive in the background, and named tokens acquired in FIFO order as leases.
//
//	c, err := baton.Dial(ctx, baton.Config{Addr: "127.0.0.1:7000", Node: "worker-1"})
//	lease, err := c.Acquire(ctx, "counter")
//	// use the resource until lease.Done() closes
//	err = lease.Release(ctx, baton.Record{Counter: lease.Record.Counter + 1})
//
// A lease is trusted only while the session is alive by this process's own clock:
// each keepalive the server acknowledges extends the session to the moment the
// keepalive was sent plus the TTL, less a margin for clock-rate drift. The server
// expires the session no earlier than the moment it received that keepalive plus the
// TTL, so the client always stops trusting a lease before the server gives the token
// to anyone else. Done closes the moment that trust ends: by that clock, on a lost
// connection the server did not announce, on revocation, on Close. Every grant
// carries a fence that grows by one; a release with an old fence changes nothing and
// returns ErrStaleFence, which is what protects the record when a holder was paused.
//
// The session logic is a state machine without I/O (machine.go), driven by the
// connection, the timers and the dialer (session.go, turn.go); how a connection is
// read without a hand-off is in docs/design.md.
package baton

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-dev/baton/internal/wire"
)

// Errors returned by the client; compare with errors.Is, they come wrapped with
// detail. Release and Requeue say what the server did with the release:
//
//   - nil: applied. The record holds the counter given.
//   - ErrStaleFence, ErrLeaseLost: refused; nothing changed. Do not retry it.
//   - ErrOutcomeUnknown: it may or may not have been applied. Do not retry it blindly.
//
// Lease.Err says why a lease ended: ErrSessionExpired, ErrConnLost, ErrRevoked,
// ErrLeaseLost, ErrReleased, ErrClosed, or the context's error for a withdrawn
// request.
var (
	// ErrStaleFence: the release was refused because the token has been granted to
	// someone else since this lease (its fence is no longer the current one). This
	// lease was lost before the release: anything done under it after that must be
	// treated as not done, and the fence is what keeps it out of the resource.
	// Nothing changed; do not retry. Acquire again to go on.
	ErrStaleFence = errors.New("baton: stale fence")
	// ErrLeaseLost: the release was refused because the lease had already ended at
	// the server (its session expired or ended, or it was taken back) although nobody
	// has been granted since. Nothing changed; do not retry. Also Lease.Err of a lease
	// that a resumed session no longer holds.
	ErrLeaseLost = errors.New("baton: lease lost")
	// ErrOutcomeUnknown: the release was sent, but its answer was lost with the
	// session (the connection broke and the session could not be resumed: it expired,
	// or the server restarted without it), or the server no longer remembers it. It
	// may or may not have been applied, and it will not be applied later. Do not send
	// the same update again blindly: the next lease's Record shows the counter of the
	// last release applied, from which the caller can tell.
	ErrOutcomeUnknown = errors.New("baton: outcome of the release unknown")
	// ErrSessionExpired: the session is no longer alive by this process's clock (it
	// was frozen or cut off past its TTL), or the server ended it. Leases end with it;
	// the client opens a new session by itself.
	ErrSessionExpired = errors.New("baton: session expired")
	// ErrConnLost: the connection ended without the server's notice, so the server
	// may take it for this process's death and pass the token on: the lease is no
	// longer trusted. The client reconnects by itself; Release still tells the truth.
	ErrConnLost = errors.New("baton: connection lost")
	// ErrRevoked: the server took the lease back (its session ended there).
	ErrRevoked = errors.New("baton: lease revoked by the server")
	// ErrReleased: the lease was given back by Release or Requeue; a second Release
	// or Requeue of it returns this, wrapped, and sends nothing.
	ErrReleased = errors.New("baton: lease released")
	// ErrClosed: the Client was closed. Outstanding calls return it; a release that
	// was in flight has an unknown outcome.
	ErrClosed = errors.New("baton: client closed")
	// ErrRefused: the server refused the request (handshake, or an acquire: bad
	// name, too many tokens, a duplicate); the wrapped text says why. Fix the request.
	ErrRefused = errors.New("baton: refused by the server")
	// ErrNotLeader: a connect ended at a server that is not the raft leader: it knew
	// no leader (an election is under way, or too few servers are up), or the one it
	// named was not followed (see Config.Follow). Not a mistake in the request, and
	// nothing is lost: the session and its leases stand, and the client tries Addr
	// or Resolve again after its back-off. The wrapped text names both servers. It
	// reaches the Logger with each failed connect; no call returns it.
	ErrNotLeader = errors.New("baton: server is not the leader")
)

// Record is the shared resource a token guards: the original program's counter and
// waiting counter.
type Record struct {
	// Counter is written by holders on release: the worker adds one per critical
	// section, so at rest it equals the releases the server accepted.
	Counter uint64
	// Waits counts the acquires that found the token taken and had to queue. The
	// server keeps it; the value passed to Release is ignored.
	Waits uint64
}

// Config configures a Client.
type Config struct {
	// Addr is the server's token address. Resolve, if set, is asked instead at every
	// (re)connect: the client worker finds the server through memberlist.
	Addr    string
	Resolve func(ctx context.Context) (string, error)
	// Follow is asked when a server refuses the hello because it is not the raft
	// leader and names the leader's token address: true dials that address at once,
	// in the same connect, resuming the same session. It should say yes only to
	// servers it knows (the worker: alive server members), so that a hostile or
	// confused server cannot send the client anywhere. One connect follows at most
	// two such answers. Nil never follows: the client tries Addr or Resolve again
	// after its back-off. Called from the dialer's goroutine, one call at a time.
	Follow func(addr string) bool
	// Node names this client to the server; required. BootID tells this process from
	// an earlier one with the same node name; random by default.
	Node   string
	BootID string
	// TTL asks for a session TTL; zero takes the server's.
	TTL time.Duration
	// ClusterKey proves membership when the cluster has a key (BATON_CLUSTER_KEY).
	ClusterKey []byte
	// DriftBound is the fraction by which this clock may run slower than the
	// server's; the session is trusted that much less than its TTL. Default 0.01.
	DriftBound  float64
	DialTimeout time.Duration // default 2s, a quarter of it for the TCP connect
	// Dial, if set, opens the connection to a server's token address (Addr, what
	// Resolve returned, or a leader Follow approved) in place of a TCP dial: where
	// this client reaches a server by another way than the address the cluster
	// publishes (a port mapping, a tunnel or proxy of its own), as gRPC's
	// WithContextDialer and pgx's DialFunc do. ctx ends after a quarter of
	// DialTimeout. Info, Follow and OnConnect still name the address asked for.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// OnConnect, if set, is told how each connect ended: the server that welcomed
	// the client (err nil), or the server at which the connect failed (the last one
	// dialled, after any followed; "" if none was: Resolve failed, or named only the
	// server a hedged connect must avoid) and why. Resolve and Follow can then avoid
	// a server that does not answer: a dead leader may go on being named by the
	// membership and by followers for a while. Called from the dialer's goroutine,
	// one call at a time, before the client acts on the result.
	OnConnect func(server string, err error)
	Logger    *slog.Logger
}

// Client is a session with a baton server. It reconnects by itself and resumes its
// session when the server allows. Safe for concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	// The session is trusted until base + trustUntil by the monotonic clock. Leases
	// read it without the lock, so that the clock, not a timer's goroutine, decides
	// (see Lease.Err); written with mu held, whenever the deadline moves.
	base       time.Time
	trustUntil atomic.Int64

	mu    sync.Mutex // guards st
	st    *runState
	wg    sync.WaitGroup // the reader and the dialer
	doneC chan struct{}  // closed when Close has finished
	once  sync.Once

	slotsMu sync.Mutex // guards slots
	slots   map[string]chan struct{}

	firstSession chan struct{}
	turnFreed    chan struct{} // a caller waiting for the turn to read may take it
}

// Dial starts a client and waits for its first session, or for ctx.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Node == "" {
		return nil, errors.New("baton: Config.Node is required")
	}
	if cfg.Addr == "" && cfg.Resolve == nil {
		return nil, errors.New("baton: Config.Addr or Config.Resolve is required")
	}
	if cfg.BootID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.BootID = hex.EncodeToString(b[:])
	}
	if cfg.DriftBound <= 0 {
		cfg.DriftBound = 0.01
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Client{cfg: cfg, log: cfg.Logger, base: time.Now(), doneC: make(chan struct{}), slots: map[string]chan struct{}{},
		firstSession: make(chan struct{}), turnFreed: make(chan struct{}, 1)}
	c.st = newRunState(c)
	c.event(func(st *runState) { st.m.startDial() })
	select {
	case <-c.firstSession:
		return c, nil
	case <-ctx.Done():
		c.mu.Lock()
		last := c.st.m.lastDialErr
		c.mu.Unlock()
		c.Close()
		if last != nil { // what went wrong, not only that time ran out
			return nil, fmt.Errorf("baton: dial: %w; the last connect: %w", ctx.Err(), last)
		}
		return nil, fmt.Errorf("baton: dial: %w", ctx.Err())
	}
}

// Close ends the session: the server is told goodbye, so whatever this client still
// holds passes on at once; every lease's Done closes. Idempotent.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.st.shutdown()
		c.mu.Unlock()
		c.wg.Wait() // a dial in progress ends within DialTimeout
		close(c.doneC)
	})
	<-c.doneC
	return nil
}

// Info describes the client's session.
type Info struct {
	Connected bool
	Session   uint64
	Epoch     uint64
	TTL       time.Duration
	Deadline  time.Time // the session is trusted until then by this clock
	Server    string
}

// Info returns the session's current state.
func (c *Client) Info() Info {
	op := infoOp{res: make(chan Info, 1)}
	if !c.submit(op) {
		return Info{}
	}
	return <-op.res
}

// Lease is a token held by this client.
type Lease struct {
	Token  string
	Fence  uint64 // strictly greater than every earlier grant's fence for this token
	Record Record // the record as the previous holder left it

	c       *Client
	seq     uint64
	session uint64 // the session it was granted on: only there can its release apply
	// cancelledOn is the connection on which a cancel of its hold went out (its
	// trust ended by the clock), if any: a release behind it there cannot apply.
	cancelledOn uint64
	errMu       sync.Mutex // guards err, done
	err         error
	done        chan struct{} // made when first asked for: most leases end unwatched
}

// closedDone is the Done of a lease that ended before anyone asked.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// trusted reports whether the session is still trusted now by this process's
// monotonic clock.
func (c *Client) trusted() bool {
	return time.Since(c.base) < time.Duration(c.trustUntil.Load())
}

// Done closes when the lease can no longer be trusted: check Err for why. Once the
// session's trust deadline has passed by the clock, Done returns a closed channel,
// even if the timer that closes it has not run yet (after a freeze it runs a moment
// after the caller wakes). A channel taken earlier closes when that timer runs.
func (l *Lease) Done() <-chan struct{} {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	l.expireByClock()
	if l.done == nil {
		if l.err != nil {
			return closedDone
		}
		l.done = make(chan struct{})
	}
	return l.done
}

// Err is nil while the lease is trusted, then says why it ended. The clock decides:
// once the session's trust deadline has passed, Err is non-nil at once, whatever a
// timer has or has not done yet.
//
// A nil Err is true when Err reads the clock, not after: a process can be frozen
// between the check and the write it guards (check-then-act). The lease never
// protects the resource by itself; the fence does. Pass Fence to the resource with
// every write, and have it refuse a fence lower than one it has seen.
func (l *Lease) Err() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	l.expireByClock()
	return l.err
}

// expireByClock ends a lease whose session is no longer trusted by the clock; with
// errMu held.
func (l *Lease) expireByClock() {
	if l.err == nil && !l.c.trusted() {
		l.endLocked(ErrSessionExpired)
	}
}

// ended is why the lease ended, without a look at the clock.
func (l *Lease) ended() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

// end closes Done, if anyone asked for it, with err; false if it had ended already.
func (l *Lease) end(err error) bool {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.endLocked(err)
}

func (l *Lease) endLocked(err error) bool {
	if l.err != nil {
		return false
	}
	l.err = err
	if l.done != nil {
		close(l.done)
	}
	return true
}

// Release hands the token back, storing rec.Counter in the record, and returns once
// the server has answered: nil when it applied the release, ErrStaleFence or
// ErrLeaseLost when it refused it (nothing changed), ErrOutcomeUnknown when the
// answer was lost with the session. A lease that was lost is still sent: the server
// decides. A release sent again after a reconnect that resumed the session is
// answered as the server first answered it, and never applied twice.
func (l *Lease) Release(ctx context.Context, rec Record) error {
	op := releaseOp{lease: l, rec: rec, res: make(chan error, 1)}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !l.c.submit(op) {
		return ErrClosed
	}
	err, waitErr := answer(l.c, ctx, op.res)
	if waitErr != nil {
		return waitErr
	}
	return err
}

// Acquire waits in the token's FIFO queue until this client holds it, then returns
// the lease. When ctx ends first, the request is withdrawn; if the grant crossed the
// withdrawal on the wire, the token passes on unused. Acquires of one token by
// several goroutines of a Client queue here first, then at the server.
func (c *Client) Acquire(ctx context.Context, token string) (*Lease, error) {
	if token == "" || len(token) > wire.MaxName {
		return nil, fmt.Errorf("baton: token name must be 1 to %d bytes", wire.MaxName)
	}
	slot := c.slot(token)
	select {
	case slot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.doneC:
		return nil, ErrClosed
	}
	op := &acquireOp{token: token, res: make(chan acquireResult, 1), slot: slot}
	if !c.submit(op) {
		<-slot
		return nil, ErrClosed
	}
	return c.await(ctx, op)
}

// Requeue is Release followed by Acquire of the same token, in one message: it
// hands the token back storing rec.Counter, joins the back of the token's queue and
// returns the next lease. A client that takes a token in a loop pays one request per
// turn instead of two, and the server answers the release together with the next
// grant, so a handoff costs it one write. The lease ends when Requeue is called. If
// the release is refused (ErrStaleFence, ErrLeaseLost), nothing is queued and that
// error is returned; if its outcome is unknown (ErrOutcomeUnknown), nothing is
// queued either. If ctx ends first, the new request is withdrawn; the release stands
// or falls as it would with Release.
func (l *Lease) Requeue(ctx context.Context, rec Record) (*Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// One allocation per turn: the new request carries its release and, once
	// granted, its lease; its answer channel is the old request's (see release).
	c := l.c
	op := &acquireOp{token: l.Token}
	op.requeued = releaseReq{releaseOp: releaseOp{lease: l, rec: rec}}
	if !c.submit(requeueOp{next: op}) {
		return nil, ErrClosed
	}
	next, err := c.await(ctx, op)
	if !errors.Is(err, errNotRequeued) {
		return next, err
	}
	select { // the release went out alone: its answer, then an ordinary acquire
	case err = <-op.requeued.res:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return c.Acquire(ctx, l.Token)
}

// errNotRequeued tells Requeue that its lease had already ended locally, so the
// release went out alone.
var errNotRequeued = errors.New("baton: lease ended before requeue")

// await waits for op's answer; when ctx ends first, it withdraws the request.
func (c *Client) await(ctx context.Context, op *acquireOp) (*Lease, error) {
	r, err := answer(c, ctx, op.res)
	switch {
	case err == nil:
		return r.lease, r.err
	case errors.Is(err, ErrClosed):
		return nil, ErrClosed
	}
	// Withdraw. Once submit returns the server has been told, and nothing more will
	// arrive on op.res but what may already be there.
	c.submit(cancelOp{op: op})
	return nil, ctx.Err()
}

func (c *Client) slot(token string) chan struct{} {
	c.slotsMu.Lock()
	defer c.slotsMu.Unlock()
	s := c.slots[token]
	if s == nil {
		s = make(chan struct{}, 1)
		c.slots[token] = s
	}
	return s
}

type acquireOp struct {
	token   string
	seq     uint64
	phase   reqPhase
	res     chan acquireResult // one answer: the lease or why not
	slot    chan struct{}
	lease   *Lease // &granted once granted, until it ends
	granted Lease
	// requeued is the release that goes out in the same frame, for a requeue.
	requeued releaseReq
}

type acquireResult struct {
	lease *Lease
	err   error
}

type cancelOp struct{ op *acquireOp }

type releaseOp struct {
	lease *Lease
	rec   Record
	res   chan error
}

// requeueOp is a release, next.requeued, with the request to hold the token again,
// next, that goes with it. One pointer: boxing it in submit's argument is free.
type requeueOp struct{ next *acquireOp }

type infoOp struct{ res chan Info }
