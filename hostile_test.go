package baton_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/wire"
)

// Everything hostile on the token port at once, while an honest client keeps
// acquiring and releasing: each attack gets a clear error (or is cut off), is
// counted under its reason, and neither stalls the honest client nor changes the
// record.
func TestHostileInputIsRefusedCountedAndHarmless(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) {
		c.HandshakeTimeout = 300 * time.Millisecond
		c.MaxConns = 64
		c.MaxFrameRate = 5000 // the honest client below paces itself to ~2000 frames/s
	})
	honest := testutil.Dial(t, srv, "honest")
	var cycles atomic.Int64
	stop := make(chan struct{})
	honestDone := make(chan struct{})
	go func() {
		defer close(honestDone)
		pace := time.NewTicker(time.Millisecond) // a busy client, not a flood
		defer pace.Stop()
		for {
			select {
			case <-stop:
				return
			case <-pace.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			l, err := honest.Acquire(ctx, "counter")
			if err == nil {
				err = l.Release(ctx, baton.Record{Counter: l.Record.Counter + 1})
			}
			cancel()
			if err != nil {
				t.Errorf("honest client failed during the attack: %v", err)
				return
			}
			cycles.Add(1)
		}
	}()

	expectReason := func(reason string, atLeast float64) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, "baton_protocol_errors_total{reason="+reason+"}", func() bool {
			return testutil.Metric(t, srv.Reg, "baton_protocol_errors_total", map[string]string{"reason": reason}) >= atLeast
		})
	}
	// expectClosed reads until the server closes the connection, failing on a stall.
	expectClosed := func(r *testutil.Raw, what string) {
		t.Helper()
		for {
			if _, err := r.TryNext(3 * time.Second); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("%s: connection still open after 3s", what)
				}
				return
			}
		}
	}

	t.Run("random bytes", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 20 {
			r := testutil.DialUnhandshaken(t, srv.TokenAddr())
			junk := make([]byte, 64+rng.IntN(4096))
			for j := range junk {
				junk[j] = byte(rng.Uint32())
			}
			if i%2 == 0 { // some keep a plausible length prefix
				binary.BigEndian.PutUint32(junk, uint32(len(junk)-4))
			}
			_, _ = r.Conn.Write(junk)
			expectClosed(r, "random bytes")
		}
	})
	t.Run("oversized frame", func(t *testing.T) {
		r := testutil.DialRaw(t, srv.TokenAddr(), "big")
		_, _ = r.Conn.Write(binary.BigEndian.AppendUint32(nil, 1<<30))
		f := r.Next()
		if f.Op != wire.OpError || f.Code != wire.CodeBadFrame {
			t.Fatalf("oversized frame answered %s, want error %s", testutil.Describe(f), wire.CodeBadFrame)
		}
		expectClosed(r, "oversized frame")
		expectReason("frame_too_large", 1)
	})
	t.Run("wrong version", func(t *testing.T) {
		// A good hello with its version byte patched.
		r := dialHandshakeOnly(t, srv.TokenAddr())
		b := wire.Append(nil, &wire.Frame{Op: wire.OpHello, Version: wire.Version, Text: "old"})
		b[4+1+len(wire.Magic)] = wire.Version + 1
		_, _ = r.Conn.Write(b)
		f := r.Next()
		if f.Op != wire.OpError || f.Code != wire.CodeVersion {
			t.Fatalf("wrong version answered %s, want error %s", testutil.Describe(f), wire.CodeVersion)
		}
		expectReason("version", 1)
	})
	t.Run("slow handshake", func(t *testing.T) {
		r := dialHandshakeOnly(t, srv.TokenAddr())
		start := time.Now()
		expectClosed(r, "silent peer")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("a silent peer held its slot for %s (handshake timeout 300ms)", d)
		}
		expectReason("handshake_timeout", 1)
	})
	t.Run("release of a token not held", func(t *testing.T) {
		r := testutil.DialRaw(t, srv.TokenAddr(), "liar")
		f := r.Release("never-acquired", 99, wire.Record{Counter: 1 << 40})
		if f.Op != wire.OpError || f.Code != wire.CodeNotHeld {
			t.Fatalf("release of a token not held answered %s, want error %s", testutil.Describe(f), wire.CodeNotHeld)
		}
		f = r.Release("counter", 1, wire.Record{Counter: 1 << 40}) // the honest client's token
		if f.Op != wire.OpError {
			t.Fatalf("release of another's token answered %s", testutil.Describe(f))
		}
		expectReason("not_held", 1)
	})
	t.Run("frame flood", func(t *testing.T) {
		r := testutil.DialRaw(t, srv.TokenAddr(), "flooder")
		var buf []byte
		for i := range 20000 {
			buf = wire.Append(buf, &wire.Frame{Op: wire.OpKeepalive, Seq: uint64(i + 1)})
		}
		go func() { _, _ = r.Conn.Write(buf) }()
		expectClosed(r, "flooder") // reads its answers, so only the rate limit can stop it
		expectReason("rate", 1)
	})
	t.Run("connection flood", func(t *testing.T) {
		var conns []net.Conn
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if c, err := net.Dial("tcp", srv.TokenAddr()); err == nil {
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		expectReason("too_many_conns", 1)
		for _, c := range conns {
			c.Close()
		}
		// Once the flood is gone, new clients get in again.
		testutil.Dial(t, srv, "after-flood")
	})

	close(stop)
	<-honestDone
	if cycles.Load() == 0 {
		t.Fatal("the honest client completed no critical section during the attacks")
	}
	tk := tokenStatus(t, srv, "counter")
	if tk.Counter != tk.Releases || tk.Counter != uint64(cycles.Load()) {
		t.Errorf("record changed by the attacks: counter %d, releases %d, honest cycles %d", tk.Counter, tk.Releases, cycles.Load())
	}
	t.Logf("honest client completed %d critical sections during the attacks", cycles.Load())
}
