package baton

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/baton-dev/baton/internal/rawio"
	"github.com/baton-dev/baton/internal/wire"
)

type dialResult struct {
	conn    *clientConn
	r       *wire.Reader
	welcome wire.Frame
	sentAt  time.Time // when the hello left: the session is alive from then on
	err     error
}

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
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
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
		return fail(fmt.Errorf("%w: %s: %s", ErrRefused, ch.Code, ch.Text))
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
		return fail(fmt.Errorf("%w: %s: %s", ErrRefused, wel.Code, wel.Text))
	}
	if wel.Op != wire.OpWelcome || wel.TTLms == 0 {
		return fail(fmt.Errorf("expected welcome from %s, got %s", addr, wel.Op))
	}
	_ = nc.SetDeadline(time.Time{})
	cc := &clientConn{nc: nc, w: w, server: addr, bgWake: make(chan struct{}, 1), done: make(chan struct{})}
	return dialResult{conn: cc, r: r, welcome: wel, sentAt: sentAt}
}
