package baton_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/baton-dev/baton/internal/server"
	"github.com/baton-dev/baton/internal/testutil"
)

func post(t *testing.T, url, bearer string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Admin actions need the bearer token; with none configured they are refused.
func TestAdminEndpointsRequireTheBearerToken(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	base := "http://" + srv.HTTPAddr()
	for _, path := range []string{"/admin/restart", "/admin/close-connections"} {
		if code, _ := post(t, base+path, ""); code != http.StatusUnauthorized {
			t.Errorf("POST %s without a token: %d, want 401", path, code)
		}
		if code, _ := post(t, base+path, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("POST %s with a wrong token: %d, want 401", path, code)
		}
	}
	c := testutil.Dial(t, srv, "bystander")
	epoch := c.Info().Epoch
	code, body := post(t, base+"/admin/restart", srv.Cfg.AdminToken)
	if code != http.StatusOK || !strings.Contains(body, `"restarted": true`) {
		t.Fatalf("POST /admin/restart with the token: %d %s", code, body)
	}
	testutil.Eventually(t, 5e9, "the client to resume under the new epoch", func() bool {
		i := c.Info()
		return i.Connected && i.Epoch == epoch+1
	})
	if code, body := post(t, base+"/admin/close-connections", srv.Cfg.AdminToken); code != http.StatusOK {
		t.Fatalf("POST /admin/close-connections: %d %s", code, body)
	}
	testutil.Eventually(t, 5e9, "the client to reconnect", func() bool { return c.Info().Connected })
	if code, _ := get(t, base+"/admin/restart"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /admin/restart: %d, want 405", code)
	}

	noAdmin := testutil.StartServer(t, func(c *server.Config) { c.AdminToken = "" })
	if code, _ := post(t, "http://"+noAdmin.HTTPAddr()+"/admin/restart", "anything"); code != http.StatusForbidden {
		t.Errorf("admin with no token configured: %d, want 403", code)
	}
}

// /status carries the names DESIGN.md promises, /healthz and /readyz answer, the
// status page is served, and /metrics is lint-clean with every promised metric.
func TestStatusHealthAndMetrics(t *testing.T) {
	srv := testutil.StartServer(t, nil)
	c := testutil.Dial(t, srv, "reporter")
	l, err := c.Acquire(t.Context(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.HTTPAddr()
	for _, p := range []string{"/healthz", "/readyz", "/"} {
		if code, _ := get(t, base+p); code != http.StatusOK {
			t.Errorf("GET %s: %d", p, code)
		}
	}
	code, body := get(t, base+"/status")
	if code != http.StatusOK {
		t.Fatalf("GET /status: %d", code)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"epoch", "tokens", "members"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("/status lacks %q", k)
		}
	}
	tok := doc["tokens"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "fence", "holder", "queue", "counter", "waits", "grants"} {
		if _, ok := tok[k]; !ok {
			t.Errorf("/status tokens[] lacks %q", k)
		}
	}
	if tok["holder"] != "reporter" {
		t.Errorf("holder %v, want reporter", tok["holder"])
	}
	mem := doc["members"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "addr", "state", "role"} {
		if _, ok := mem[k]; !ok {
			t.Errorf("/status members[] lacks %q", k)
		}
	}
	_ = l.Release(t.Context(), l.Record)

	problems, err := promtest.GatherAndLint(srv.Reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric lint: %s: %s", p.Metric, p.Text)
	}
	_, metrics := get(t, base+"/metrics")
	for _, name := range []string{"baton_grants_total", "baton_queue_length", "baton_wait_seconds_bucket",
		"baton_hold_seconds_bucket", "baton_fence", "baton_counter", "baton_members", "baton_restarts_total",
		"baton_epoch", "go_goroutines", "process_cpu_seconds_total", "go_build_info"} {
		if !strings.Contains(string(metrics), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}
