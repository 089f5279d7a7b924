package server

import (
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed page.html
var statusPage []byte

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg, Timeout: 10e9}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if d := s.core.d; d != nil && d.clustered {
			if id, _ := d.node.Leader(); id == "" {
				http.Error(w, "not ready: no raft leader known: a new cluster waits for BATON_BOOTSTRAP_EXPECT servers to find each other, an existing one for a quorum of its servers", http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Status()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		forget(&st, s.cfg.ForgetAfter, time.Now())
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(statusPage)
	})
	mux.HandleFunc("POST /admin/restart", s.admin(func(w http.ResponseWriter, r *http.Request) {
		epoch, err := s.Restart("POST /admin/restart")
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"restarted": true, "epoch": epoch})
	}))
	mux.HandleFunc("POST /admin/remove-server", s.admin(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		if id == "" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "give the server's raft id: ?id=NAME"})
			return
		}
		if err := s.RemoveServer(id); err != nil {
			writeJSON(w, http.StatusConflict, map[string]any{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"removed": id})
	}))
	mux.HandleFunc("POST /admin/close-connections", s.admin(func(w http.ResponseWriter, r *http.Request) {
		if err := s.CloseConnections(); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"closed": true})
	}))
	return mux
}

// admin guards an admin handler: it needs Authorization: Bearer $BATON_ADMIN_TOKEN,
// and with no token configured every call is refused.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		want := *s.adminToken.Load()
		if want == "" {
			s.metrics.protocolErrors.WithLabelValues("admin_disabled").Inc()
			writeJSON(w, http.StatusForbidden, map[string]any{"error": "admin API disabled: set BATON_ADMIN_TOKEN"})
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			s.metrics.protocolErrors.WithLabelValues("admin_auth").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "missing or wrong bearer token"})
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func sortMembers(ms []MemberStatus) {
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].Role != ms[j].Role {
			return ms[i].Role > ms[j].Role // server first
		}
		return ms[i].Name < ms[j].Name
	})
}
