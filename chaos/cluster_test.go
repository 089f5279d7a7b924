package main

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// TestWatcherRoleEvents: the watcher records a server's role whenever its raft
// state or the leader it names changes, and at the first answer of a new process
// even when both are unchanged (a view of a process that exited says nothing of
// the next); and a leader event when the leader it works out changes.
func TestWatcherRoleEvents(t *testing.T) {
	h := newHistory(&bytes.Buffer{})
	c := &cluster{h: h, leader: -1, seen: -1}
	for i, name := range []string{"s1", "s2", "s3"} {
		c.servers = append(c.servers, &serverSlot{idx: i, name: name})
	}
	answers := []struct {
		server int
		view   raftView
	}{
		{1, raftView{inst: 1, state: "leader", leader: "s2", term: 2}},
		{2, raftView{inst: 1, state: "follower", leader: "s2", term: 2}},
		{2, raftView{inst: 1, state: "follower", leader: "s2", term: 2}}, // nothing changed
		{2, raftView{inst: 1, state: "follower", term: 2}},               // heartbeat timeout: no leader named
		{2, raftView{inst: 1, state: "candidate", term: 2}},
		{2, raftView{inst: 1, state: "follower", leader: "s2", term: 2}},
		{2, raftView{inst: 2, state: "follower", leader: "s2", term: 2}}, // restarted
	}
	for _, a := range answers {
		a.view.at = time.Now()
		c.observe(a.server, a.view)
	}
	var got []string
	for _, e := range h.snapshot() {
		if e.Kind == event.Lead {
			got = append(got, fmt.Sprintf("leader %s term %d", e.W, e.Term))
			continue
		}
		got = append(got, fmt.Sprintf("%s %s#%d %s %q term %d", e.Kind, e.W, e.Inst, e.Op, e.Leader, e.Term))
	}
	want := []string{
		`role s2#1 leader "s2" term 2`,
		`leader s2 term 2`,
		`role s3#1 follower "s2" term 2`,
		`role s3#1 follower "" term 2`,
		`role s3#1 candidate "" term 2`,
		`role s3#1 follower "s2" term 2`,
		`role s3#2 follower "s2" term 2`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%q\nwant:\n%q", got, want)
	}
}
