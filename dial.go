package baton

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/baton-dev/baton/internal/rawio"
	"github.com/baton-dev/baton/internal/wire"
)

// dialResult is what one connect brings back: a connection and the server's
// welcome, or why there is none.
type dialResult struct {
	conn    *clientConn
	r       *wire.Reader
	welcome wire.Frame
	sentAt  time.Time // when the hello left: the session is alive from then on
	err     error
	server  string // the address dialled last: the one that welcomed, or where it failed
}

// maxFollow bounds the not_leader answers one connect follows, so that two servers
// that each name the other (a change of leader that each sees differently) cannot
// keep the client from its back-off and from asking Addr or Resolve again.
const maxFollow = 2

// dial is one connect, all within DialTimeout: it asks Addr or Resolve for a server
// and says hello there. A server that is not the raft leader answers not_leader,
// naming the leader; dial goes there at once if Config.Follow approves, at most
// maxFollow times. Every hello offers the same session to resume: the session lives
// in the replicated state, not on the server asked first, so a not_leader answer
// costs it nothing. A connect that ends at a follower fails like any other (with
// ErrNotLeader), and the machine tries again after its back-off.
func dial(cfg Config, resume uint64) dialResult {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
	defer cancel()
	addr := cfg.Addr
	if cfg.Resolve != nil {
		a, err := cfg.Resolve(ctx)
		if err != nil {
			return dialResult{err: fmt.Errorf("resolve server: %w", err)}
		}
		addr = a
	}
	var via []string // the servers that answered not_leader, in order
	for {
		r := handshake(ctx, cfg, addr, resume)
		r.server = addr
		if r.err != nil && len(via) > 0 {
			r.err = fmt.Errorf("%w (sent here by %s)", r.err, strings.Join(via, ", "))
		}
		var nl *notLeaderError
		if !errors.As(r.err, &nl) || nl.leader == "" {
			return r
		}
		if why := unfollowed(cfg, addr, nl.leader, len(via)); why != "" {
			r.err = fmt.Errorf("%w; not followed: %s", r.err, why)
			return r
		}
		cfg.Logger.Debug("server is not the leader; following", "server", addr, "leader", nl.leader)
		via = append(via, addr)
		addr = nl.leader
	}
}

// unfollowed says why the leader that server named is not dialled, after hops
// followed already in this connect; "" when it is.
func unfollowed(cfg Config, server, leader string, hops int) string {
	switch {
	case cfg.Follow == nil:
		return "Config.Follow is nil"
	case leader == server:
		// A server raft has elected but that does not serve yet (it catches up with
		// the log first), or one handing its leadership over, names itself: asking
		// it again at once would only hear the same.
		return "it names itself"
	case hops >= maxFollow:
		return fmt.Sprintf("%d followed already in this connect", hops)
	case !cfg.Follow(leader):
		return "Config.Follow does not approve it"
	}
	return ""
}

// notLeaderError is a follower's not_leader answer to the hello.
type notLeaderError struct {
	server string // who answered
	leader string // the leader's token address it named; "" if it knows none
}

func (e *notLeaderError) Error() string {
	if e.leader == "" {
		return fmt.Sprintf("%v: %s knows no leader", ErrNotLeader, e.server)
	}
	return fmt.Sprintf("%v: %s names %s", ErrNotLeader, e.server, e.leader)
}

func (e *notLeaderError) Unwrap() error { return ErrNotLeader }

// refusal is the error of an Error frame sent instead of the challenge or the
// welcome.
func refusal(f *wire.Frame, server string) error {
	if f.Code == wire.CodeNotLeader {
		return &notLeaderError{server: server, leader: f.Text}
	}
	return fmt.Errorf("%w: %s: %s", ErrRefused, f.Code, f.Text)
}

// handshake connects to addr and says hello, asking to resume session resume (0:
// none).
func handshake(ctx context.Context, cfg Config, addr string, resume uint64) dialResult {
	// The TCP connect gets a quarter of the dial's time: a server that died with its
	// host (a killed container) answers nothing, and the whole DialTimeout spent on
	// it is that much longer without a session, while the rest of the cluster
	// answers at once.
	var nc net.Conn
	var err error
	if cfg.Dial != nil {
		dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout/4)
		nc, err = cfg.Dial(dctx, addr)
		cancel()
	} else {
		d := net.Dialer{Timeout: cfg.DialTimeout / 4}
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return dialResult{err: err}
	}
	fail := func(err error) dialResult { nc.Close(); return dialResult{err: err} }
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	rw := rawio.Wrap(nc) // see package rawio
	r, w := wire.NewReader(rw), wire.NewWriter(rw)
	var ch wire.Frame
	if err := r.Read(&ch); err != nil {
		return fail(fmt.Errorf("read challenge from %s: %w", addr, err))
	}
	if ch.Op == wire.OpError {
		return fail(refusal(&ch, addr))
	}
	if ch.Op != wire.OpChallenge {
		return fail(fmt.Errorf("expected challenge from %s, got %s", addr, ch.Op))
	}
	hello := wire.Frame{Op: wire.OpHello, Version: wire.Version, Text: cfg.Node, BootID: cfg.BootID,
		Session: resume, TTLms: uint64(cfg.TTL / time.Millisecond)}
	if cfg.ClusterKey != nil {
		hello.MAC = wire.MAC(cfg.ClusterKey, ch.Nonce, cfg.Node, cfg.BootID)
	}
	sentAt := time.Now()
	if err := w.Write(&hello); err != nil {
		return fail(err)
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	var wel wire.Frame
	if err := r.Read(&wel); err != nil {
		return fail(fmt.Errorf("read welcome from %s: %w", addr, err))
	}
	if wel.Op == wire.OpError {
		return fail(refusal(&wel, addr))
	}
	if wel.Op != wire.OpWelcome || wel.TTLms == 0 {
		return fail(fmt.Errorf("expected welcome from %s, got %s", addr, wel.Op))
	}
	_ = nc.SetDeadline(time.Time{})
	cc := &clientConn{nc: nc, w: w, server: addr, bgWake: make(chan struct{}, 1), done: make(chan struct{})}
	return dialResult{conn: cc, r: r, welcome: wel, sentAt: sentAt}
}
