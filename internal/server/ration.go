package server

import (
	"sync"
	"time"
)

// everyMinute rations a log line that a peer can cause at will: the first of each
// kind is written, then at most one a minute, saying how many were held back.
type everyMinute struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// admit says whether a line of kind is written at now, and how many were held back
// since the last one written, and how long ago that was.
func (e *everyMinute) admit(kind string, now time.Time) (held int, since time.Duration, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.last == nil {
		e.last, e.held = map[string]time.Time{}, map[string]int{}
	}
	last, seen := e.last[kind]
	if seen && now.Sub(last) < time.Minute {
		e.held[kind]++
		return 0, 0, false
	}
	held, e.held[kind], e.last[kind] = e.held[kind], 0, now
	if seen {
		since = now.Sub(last)
	}
	return held, since, true
}
