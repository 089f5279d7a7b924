// Package ration rations log lines that a peer can cause at will (memberlist's
// retries, refused connections): the first line of each kind is written, then at
// most one a period, saying how many were held back. It does no I/O; the caller
// writes what it admits.
package ration

import (
	"sync"
	"time"
)

// Lines remembers, for each kind of line, when one was last written. Every is the
// period; set it before use. Safe for concurrent use.
type Lines struct {
	Every time.Duration

	mu   sync.Mutex // guards seen
	seen map[string]*repeat
}

type repeat struct {
	last time.Time // when it was last written
	held int       // how often it came since
}

// maxKinds bounds the kinds of line remembered; past it the oldest is forgotten.
const maxKinds = 64

// Admit says whether a line of kind is written at now, and how many were held back
// since the last one written, and how long ago that was.
func (l *Lines) Admit(kind string, now time.Time) (held int, since time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.seen[kind]
	if r == nil {
		if l.seen == nil {
			l.seen = map[string]*repeat{}
		}
		if len(l.seen) >= maxKinds {
			var oldest string
			for k, v := range l.seen {
				if oldest == "" || v.last.Before(l.seen[oldest].last) {
					oldest = k
				}
			}
			delete(l.seen, oldest)
		}
		l.seen[kind] = &repeat{last: now}
		return 0, 0, true
	}
	since = now.Sub(r.last)
	if since < l.Every {
		r.held++
		return 0, 0, false
	}
	held = r.held
	r.last, r.held = now, 0
	return held, since, true
}
