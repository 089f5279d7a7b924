package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// fencedStore is the external resource the workers guard with the token: a register
// that refuses a write whose fence is lower than one it has accepted, the way a
// storage service that checks fencing tokens would. Every decision goes into the
// history. With check false (sabotage) it accepts everything.
type fencedStore struct {
	hist  *history
	check bool
	srv   *http.Server
	ln    net.Listener

	mu  sync.Mutex // guards max: decisions are taken, stamped and logged in order
	max uint64
}

type storeWrite struct {
	W     string `json:"w"`
	Inst  int    `json:"inst"`
	Lease uint64 `json:"lease"`
	Fence uint64 `json:"fence"`
	Value uint64 `json:"value"`
}

func startStore(h *history, check bool) (*fencedStore, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &fencedStore{hist: h, check: check, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /write", s.handleWrite)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is what workers are given.
func (s *fencedStore) URL() string { return "http://" + s.ln.Addr().String() }

func (s *fencedStore) handleWrite(w http.ResponseWriter, r *http.Request) {
	var wr storeWrite
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&wr); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ok := s.decide(wr)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]bool{"accepted": ok})
}

func (s *fencedStore) decide(wr storeWrite) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := !s.check || wr.Fence >= s.max
	if ok && wr.Fence > s.max {
		s.max = wr.Fence
	}
	s.hist.add(event.Event{Kind: event.Store, W: wr.W, Inst: wr.Inst, Fence: wr.Lease, Sent: wr.Fence,
		Counter: wr.Value, Accepted: ok})
	return ok
}

func (s *fencedStore) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}
