package baton_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
)

// startExampleServer runs a server on loopback for the examples.
func startExampleServer() *server.Server {
	cfg := server.DefaultConfig()
	cfg.TokenAddr, cfg.HTTPAddr, cfg.GossipBind, cfg.GossipPort, cfg.NodeName = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1", 0, "example"
	srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	if err := srv.Open(); err != nil {
		panic(err)
	}
	return srv
}

// Acquire a token, do the critical section while the lease is trusted, release it
// with the updated record.
func Example() {
	srv := startExampleServer()
	defer srv.Close()
	ctx := context.Background()

	c, err := baton.Dial(ctx, baton.Config{Addr: srv.TokenAddr(), Node: "example-worker"})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	for range 3 {
		lease, err := c.Acquire(ctx, "counter")
		if err != nil {
			panic(err)
		}
		select {
		case <-lease.Done(): // the lease can no longer be trusted: do not write
			fmt.Println("lost:", lease.Err())
			continue
		default:
		}
		rec := lease.Record
		rec.Counter++
		if err := lease.Release(ctx, rec); err != nil {
			panic(err)
		}
		fmt.Printf("fence %d: counter %d -> %d\n", lease.Fence, lease.Record.Counter, rec.Counter)
	}
	// Output:
	// fence 1: counter 0 -> 1
	// fence 2: counter 1 -> 2
	// fence 3: counter 2 -> 3
}

// A deadline on the context turns Acquire into a try-lock: if the token is not
// granted in time, the request leaves the queue.
func ExampleClient_Acquire_tryLock() {
	srv := startExampleServer()
	defer srv.Close()
	ctx := context.Background()
	holder, _ := baton.Dial(ctx, baton.Config{Addr: srv.TokenAddr(), Node: "holder"})
	defer holder.Close()
	other, _ := baton.Dial(ctx, baton.Config{Addr: srv.TokenAddr(), Node: "other"})
	defer other.Close()

	lease, _ := holder.Acquire(ctx, "printer")
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := other.Acquire(tctx, "printer")
	fmt.Println("while held:", err)

	_ = lease.Release(ctx, lease.Record)
	l2, err := other.Acquire(ctx, "printer")
	fmt.Println("after release:", err, "newer fence:", l2.Fence > lease.Fence)
	// Output:
	// while held: context deadline exceeded
	// after release: <nil> newer fence: true
}

// A worker that takes the token in a loop gives it back and queues again in one
// step: one request per turn, answered with the next grant.
func ExampleLease_Requeue() {
	srv := startExampleServer()
	defer srv.Close()
	ctx := context.Background()
	c, err := baton.Dial(ctx, baton.Config{Addr: srv.TokenAddr(), Node: "looper"})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	lease, err := c.Acquire(ctx, "counter")
	for turn := 0; err == nil && turn < 3; turn++ {
		fmt.Printf("fence %d: counter %d\n", lease.Fence, lease.Record.Counter)
		lease, err = lease.Requeue(ctx, baton.Record{Counter: lease.Record.Counter + 1})
	}
	if err != nil {
		panic(err)
	}
	err = lease.Release(ctx, baton.Record{Counter: lease.Record.Counter + 1})
	fmt.Println("last release:", err)
	// Output:
	// fence 1: counter 0
	// fence 2: counter 1
	// fence 3: counter 2
	// last release: <nil>
}
