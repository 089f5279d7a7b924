package baton_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
)

// A Dial whose context ends before a session says why the connects failed, not only
// that time ran out: a newcomer's wrong key or wrong address is named.
func TestDialSaysWhyItHasNoSession(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	srv := testutil.StartServer(t, func(c *server.Config) { c.ClusterKey = key })
	dial := func(addr string, key []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := baton.Dial(ctx, baton.Config{Addr: addr, Node: "newcomer", ClusterKey: key})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(srv.TokenAddr(), []byte("fedcba9876543210")); !errors.Is(err, baton.ErrRefused) || !strings.Contains(err.Error(), "cluster key") {
		t.Errorf("a wrong key: %v, want a refusal that names the cluster key", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := ln.Addr().String()
	ln.Close()
	if err := dial(nobody, nil); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("an address where nothing listens: %v, want the deadline and the refused connection", err)
	}
}
