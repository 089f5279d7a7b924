package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// storeWrite is a write to the harness's fenced store (chaos/store.go). Fence is
// what the store checks (0: none); Lease is the writer's lease, for the log.
type storeWrite struct {
	W     string `json:"w"`
	Inst  int    `json:"inst"`
	Lease uint64 `json:"lease"`
	Fence uint64 `json:"fence"`
	Value uint64 `json:"value"`
}

type storeClient struct {
	url string
	hc  *http.Client
}

func newStoreClient(url string) *storeClient {
	return &storeClient{url: url, hc: &http.Client{Timeout: 5 * time.Second}}
}

// write returns whether the store accepted the write.
func (s *storeClient) write(wr storeWrite) (bool, error) {
	b, _ := json.Marshal(wr)
	resp, err := s.hc.Post(s.url+"/write", "application/json", bytes.NewReader(b))
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var ans struct {
		Accepted bool `json:"accepted"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		return false, fmt.Errorf("store answer: %w", err)
	}
	return ans.Accepted, nil
}
