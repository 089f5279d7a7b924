package session

import "time"

// Saved is a session's state, for a snapshot of a replicated state machine: its
// identity, TTL, requests and applied releases. Its deadline is not saved: a server
// that restores sessions gives each a full TTL from then (Grace).
type Saved struct {
	ID       ID                `json:"id"`
	Node     string            `json:"node"`
	BootID   string            `json:"boot_id"`
	TTL      time.Duration     `json:"ttl_ns"`
	Requests map[string]uint64 `json:"requests,omitempty"`
	Grants   uint64            `json:"grants"`
	Waited   uint64            `json:"waited"`
	Answers  SavedAnswers      `json:"answers"`
}

// SavedAnswers is an Answers' state.
type SavedAnswers struct {
	Ring   [][2]uint64 `json:"ring,omitempty"` // seq, fence; in slot order
	Next   int         `json:"next"`
	Top    uint64      `json:"top"`
	Forgot uint64      `json:"forgot"`
}

// Save returns s's state.
func (s *Session[C]) Save() Saved {
	a := SavedAnswers{Next: s.Answers.next, Top: s.Answers.top, Forgot: s.Answers.forgot}
	for _, r := range s.Answers.ring {
		a.Ring = append(a.Ring, [2]uint64{r.seq, r.fence})
	}
	req := make(map[string]uint64, len(s.Requests))
	for k, v := range s.Requests {
		req[k] = v
	}
	return Saved{ID: s.ID, Node: s.Node, BootID: s.BootID, TTL: s.TTL, Requests: req, Grants: s.Grants,
		Waited: s.Waited, Answers: a}
}

// Load puts a saved session back, alive until now + its TTL.
func (t *Table[C]) Load(sv Saved, now time.Time) *Session[C] {
	s := t.Open(sv.ID, sv.Node, sv.BootID, sv.TTL, now)
	for k, v := range sv.Requests {
		s.Requests[k] = v
	}
	s.Grants, s.Waited = sv.Grants, sv.Waited
	for i, r := range sv.Answers.Ring {
		if i < Memory {
			s.Answers.ring[i] = appliedRelease{seq: r[0], fence: r[1]}
		}
	}
	s.Answers.next, s.Answers.top, s.Answers.forgot = sv.Answers.Next%Memory, sv.Answers.Top, sv.Answers.Forgot
	return s
}
