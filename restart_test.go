package baton_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton"
	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
	"github.com/baton-dev/baton/internal/worker"
)

func tokenStatus(t *testing.T, srv *testutil.Server, name string) server.TokenStatus {
	t.Helper()
	st, err := srv.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range st.Tokens {
		if tk.Name == name {
			return tk
		}
	}
	return server.TokenStatus{Name: name}
}

// csGuard counts workers inside their critical section; more than one is a violation.
type csGuard struct{ in, violations atomic.Int32 }

func (g *csGuard) hooks() worker.Hooks {
	return worker.Hooks{
		Enter: func(string, uint64) {
			if g.in.Add(1) != 1 {
				g.violations.Add(1)
			}
		},
		Exit: func(string, uint64, error) { g.in.Add(-1) },
	}
}

// Invariant 5: three in-place restarts (what SIGHUP and POST /admin/restart do)
// while eight workers found through memberlist contend. The epoch goes up by three,
// fence and counter carry on, the workers reconnect by themselves and resume their
// sessions, and there are never two holders.
func TestRestartInPlaceUnderLoad(t *testing.T) {
	srv := testutil.StartServer(t, func(c *server.Config) { c.SessionTTL = 2 * time.Second })
	var guard csGuard
	ws := testutil.StartWorkers(t, srv, 8, func(c *worker.Config) { c.Hooks = guard.hooks() })
	testutil.Eventually(t, 30*time.Second, "every worker to complete a critical section", func() bool {
		for _, w := range ws {
			if w.Status().Done == 0 {
				return false
			}
		}
		return true
	})
	st0, _ := srv.Status()
	last := tokenStatus(t, srv, "counter")
	for i := 1; i <= 3; i++ {
		epoch, err := srv.Restart("test")
		if err != nil {
			t.Fatal(err)
		}
		if epoch != st0.Epoch+uint64(i) {
			t.Fatalf("restart %d: epoch %d, want %d", i, epoch, st0.Epoch+uint64(i))
		}
		at := time.Now()
		testutil.Eventually(t, 20*time.Second, "the workers to resume after the restart", func() bool {
			return tokenStatus(t, srv, "counter").Counter >= last.Counter+16
		})
		now := tokenStatus(t, srv, "counter")
		t.Logf("restart %d: 16 more critical sections %s after it", i, time.Since(at).Round(time.Millisecond))
		if now.Fence < last.Fence || now.Counter < last.Counter {
			t.Fatalf("restart %d went back: fence %d→%d counter %d→%d", i, last.Fence, now.Fence, last.Counter, now.Counter)
		}
		last = now
	}
	if v := guard.violations.Load(); v != 0 {
		t.Fatalf("%d times two workers were in the critical section at once", v)
	}
	if n := testutil.Metric(t, srv.Reg, "baton_restarts_total", nil); n != 3 {
		t.Errorf("baton_restarts_total = %v, want 3", n)
	}
	for _, reason := range []string{"expired", "disconnect"} {
		if n := testutil.Metric(t, srv.Reg, "baton_reclaims_total", map[string]string{"reason": reason}); n != 0 {
			t.Errorf("baton_reclaims_total{reason=%s} = %v: sessions should resume across a restart", reason, n)
		}
	}
	for _, w := range ws {
		w.Stop(t)
	}
	end := tokenStatus(t, srv, "counter")
	if end.Counter != end.Releases {
		t.Errorf("counter %d != accepted releases %d", end.Counter, end.Releases)
	}
	if end.Holder != "" {
		t.Errorf("token still held by %q after every worker stopped", end.Holder)
	}
}

// Invariant 1 across a crash: with a state directory, the restarted server's fences
// continue past every fence the old one issued, including a lease still out when it
// died, and it grants nothing until that lease may no longer be trusted (one TTL).
func TestFenceNeverGoesBackAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	const ttl = 400 * time.Millisecond
	withState := func(c *server.Config) { c.StateDir = dir; c.SessionTTL = ttl }
	s1 := testutil.StartServer(t, withState)
	ctx := context.Background()
	a := testutil.Dial(t, s1, "a")
	for range 5 {
		l, err := a.Acquire(ctx, "counter")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx, baton.Record{Counter: l.Record.Counter + 1}); err != nil {
			t.Fatal(err)
		}
	}
	raw := testutil.DialRaw(t, s1.TokenAddr(), "holder")
	raw.Acquire("counter")
	outstanding := raw.AwaitGrant("counter")
	st1, _ := s1.Status()
	s1.Close() // the lease at fence 6 is still out: its holder may trust it for a TTL

	boot := time.Now()
	s2 := testutil.StartServer(t, withState)
	st2, _ := s2.Status()
	if st2.Epoch != st1.Epoch+1 {
		t.Errorf("epoch %d after restart, want %d", st2.Epoch, st1.Epoch+1)
	}
	b := testutil.Dial(t, s2, "b")
	l, err := b.Acquire(ctx, "counter")
	if err != nil {
		t.Fatal(err)
	}
	waited := time.Since(boot)
	t.Logf("first grant after restart: fence %d after %s (TTL %s)", l.Fence, waited.Round(time.Millisecond), ttl)
	if l.Fence <= outstanding.Fence {
		t.Fatalf("fence %d after restart, but fence %d was issued before: a fence was reused", l.Fence, outstanding.Fence)
	}
	if l.Record.Counter != 5 {
		t.Errorf("record counter %d after restart, want 5", l.Record.Counter)
	}
	if waited < ttl {
		t.Errorf("granted %s after boot, while a lease of the old process could be trusted for %s", waited, ttl)
	}
	// The lease from before the crash cannot write.
	if err := l.Release(ctx, baton.Record{Counter: l.Record.Counter + 1}); err != nil {
		t.Fatal(err)
	}
	if got := tokenStatus(t, s2, "counter"); got.Counter != 6 || got.Releases != 6 {
		t.Errorf("counter %d releases %d, want 6 and 6", got.Counter, got.Releases)
	}
}

// A state directory kept by the version before the raft log (baton-state.json) is
// migrated on first start: fences continue above it, the epoch goes on, a token that
// was held is granted again only after a TTL, and the file's tokens live in the log
// from then on (a second start finds them without the file).
func TestStateFileOfTheVersionBeforeIsMigrated(t *testing.T) {
	dir := t.TempDir()
	const ttl = 300 * time.Millisecond
	old := `{"epoch":7,"ttl_ns":300000000,"tokens":[{"name":"counter","fence":41,"counter":40,"waits":3,"grants":41,"releases":40,"held":true}]}`
	if err := os.WriteFile(filepath.Join(dir, "baton-state.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	withState := func(c *server.Config) { c.StateDir = dir; c.SessionTTL = ttl }
	boot := time.Now()
	s1 := testutil.StartServer(t, withState)
	if st, _ := s1.Status(); st.Epoch != 8 {
		t.Errorf("epoch %d after migrating epoch 7, want 8", st.Epoch)
	}
	l, err := testutil.Dial(t, s1, "a").Acquire(context.Background(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(boot); waited < ttl {
		t.Errorf("granted %s after boot; the file said the token was held, so not before a TTL (%s)", waited, ttl)
	}
	if l.Fence != 42 || l.Record.Counter != 40 {
		t.Fatalf("first grant after migrating: fence %d counter %d, want 42 and 40", l.Fence, l.Record.Counter)
	}
	if err := l.Release(context.Background(), baton.Record{Counter: 41}); err != nil {
		t.Fatal(err)
	}
	s1.Close()
	if err := os.Remove(filepath.Join(dir, "baton-state.json")); err != nil {
		t.Fatal(err)
	}
	s2 := testutil.StartServer(t, withState)
	if tok := tokenStatus(t, s2, "counter"); tok.Fence != 42 || tok.Counter != 41 {
		t.Fatalf("after a second start without the file: fence %d counter %d, want 42 and 41 (from the log)", tok.Fence, tok.Counter)
	}
	if st, _ := s2.Status(); st.Epoch != 9 {
		t.Errorf("epoch %d at the second start, want 9", st.Epoch)
	}
}

// The same file in a directory that three replicated servers share (compose's
// volume, upgraded from the one server of that version): the first leader
// migrates it, and fences continue above it.
func TestStateFileOfTheVersionBeforeIsMigratedIntoACluster(t *testing.T) {
	dir := t.TempDir()
	old := `{"epoch":7,"ttl_ns":300000000,"tokens":[{"name":"counter","fence":41,"counter":40,"waits":3,"grants":41,"releases":40}]}`
	if err := os.WriteFile(filepath.Join(dir, "baton-state.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	cl := testutil.StartCluster(t, 3, func(c *server.Config) { c.StateDir = dir })
	leader := cl.AwaitLeader(t, 30*time.Second)
	if tok := tokenStatus(t, cl.Server(leader), "counter"); tok.Fence != 41 || tok.Counter != 40 {
		t.Fatalf("the leader's counter token: fence %d counter %d, want 41 and 40 from the file", tok.Fence, tok.Counter)
	}
	if st, _ := cl.Server(leader).Status(); st.Epoch != 8 {
		t.Errorf("epoch %d after migrating epoch 7, want 8", st.Epoch)
	}
}
