package main

import (
	"bufio"
	"encoding/json"
	"io"
	"sort"
	"sync"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// history collects every event of the run: the workers' (read from their stdout),
// the store's and the nemesis's. It also keeps who holds the token now, as far as
// the events say, so that the nemesis can aim at the holder.
type history struct {
	mu     sync.Mutex // guards events, holder, file
	events []event.Event
	holder string // worker whose latest grant has not been given back; "" if none
	file   io.Writer
}

func newHistory(file io.Writer) *history { return &history{file: file} }

// add stamps e if needed and appends it.
func (h *history) add(e event.Event) {
	if e.T == 0 {
		e.T = event.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
	switch e.Kind {
	case event.Grant:
		h.holder = e.W
	case event.Release, event.Stop:
		if h.holder == e.W {
			h.holder = ""
		}
	}
	if h.file != nil {
		b, _ := json.Marshal(e)
		_, _ = h.file.Write(append(b, '\n'))
	}
}

// currentHolder is the worker that holds the token by the events, or "".
func (h *history) currentHolder() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.holder
}

// snapshot returns the events so far, ordered by time.
func (h *history) snapshot() []event.Event {
	h.mu.Lock()
	ev := append([]event.Event(nil), h.events...)
	h.mu.Unlock()
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].T < ev[j].T })
	return ev
}

// readEvents adds the JSON lines of r (a worker's stdout) until it ends. A line
// that does not parse is kept as a protocol error of the worker. onLine sees each.
func (h *history) readEvents(r io.Reader, name string, inst int, onLine func(event.Event)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			e = event.Event{Kind: "garbage", Err: sc.Text()}
		}
		e.W, e.Inst = name, inst
		h.add(e)
		if onLine != nil {
			onLine(e)
		}
	}
}
