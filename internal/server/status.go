package server

import "time"

// Status is the server's GET /status document.
type Status struct {
	Node    string         `json:"node"`
	Epoch   uint64         `json:"epoch"`
	Started time.Time      `json:"started"`
	TTL     string         `json:"session_ttl"`
	Tokens  []TokenStatus  `json:"tokens"`
	Members []MemberStatus `json:"members"`
	// MembersForgotten counts members that left or died more than ForgetAfter ago:
	// left out of Members (BATON_FORGET_AFTER).
	MembersForgotten int             `json:"members_forgotten"`
	ForgetAfter      string          `json:"forget_after"`
	Sessions         []SessionStatus `json:"sessions"`
	Events           []Event         `json:"events"` // joins, leaves, sessions, reclaims, restarts; oldest first
	Grants           []Event         `json:"grants"` // the latest grants, oldest first
	// Raft is this server's view of the replicated log; absent on a server alone.
	Raft *RaftStatus `json:"raft,omitempty"`
	// Problem says what is wrong with the deployment as this server sees it, and
	// its fix (a server beside this one that does not share its log); absent when
	// nothing is. The log says it too, once.
	Problem string `json:"problem,omitempty"`
}

// RaftStatus is a replicated server's view of the cluster.
type RaftStatus struct {
	ID           string `json:"id"`
	State        string `json:"state"`  // leader, follower, candidate
	Leader       string `json:"leader"` // the leader's id (node name); empty while none is known
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// LogVersion is the log this server writes when it leads: 2 (each batch
	// carries the term it was decided in) once every server of the configuration
	// reads it, 1 while one runs an older version.
	LogVersion int          `json:"log_version"`
	Servers    []RaftServer `json:"servers"`
}

// RaftServer is one server of the raft configuration.
type RaftServer struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Voter  bool   `json:"voter"`
	Leader bool   `json:"leader"`
}

// TokenStatus is one token in Status.
type TokenStatus struct {
	Name    string   `json:"name"`
	Fence   uint64   `json:"fence"`
	Holder  string   `json:"holder"` // node name of the holder; empty when free
	HeldFor string   `json:"held_for,omitempty"`
	Queue   []string `json:"queue"` // node names, first in line first
	Counter uint64   `json:"counter"`
	Waits   uint64   `json:"waits"`
	Grants  uint64   `json:"grants"`
	// Releases counts releases the server accepted; at rest Counter equals it when
	// every holder added one, and a difference means a lost update.
	Releases uint64 `json:"releases"`
}

// MemberStatus is one memberlist node in Status.
type MemberStatus struct {
	Name  string    `json:"name"`
	Addr  string    `json:"addr"`
	State string    `json:"state"`
	Role  string    `json:"role"`
	Since time.Time `json:"since"`
}

// SessionStatus is one client session in Status.
type SessionStatus struct {
	ID        string `json:"id"`
	Node      string `json:"node"`
	Connected bool   `json:"connected"`
	ExpiresIn string `json:"expires_in"`
	Holds     int    `json:"holds"`
	Waits     int    `json:"waits"`
	Grants    uint64 `json:"grants"` // tokens this session was granted
	Waited    uint64 `json:"waited"` // acquires that found the token taken and queued
}

// Event is something that happened, for the status page's feed.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // grant, restart, reclaim, session_open, session_end, member_joined, member_dead, member_left
	Token  string    `json:"token,omitempty"`
	Node   string    `json:"node,omitempty"`
	Fence  uint64    `json:"fence,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// forget leaves out of st.Members those that left or died more than after before
// now, and counts them; after 0 keeps every member.
func forget(st *Status, after time.Duration, now time.Time) {
	st.ForgetAfter = after.String()
	if after <= 0 {
		return
	}
	kept := st.Members[:0]
	for _, m := range st.Members {
		if m.State != "alive" && !m.Since.IsZero() && now.Sub(m.Since) > after {
			st.MembersForgotten++
			continue
		}
		kept = append(kept, m)
	}
	st.Members = kept
}
