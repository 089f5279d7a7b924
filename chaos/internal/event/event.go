// Package event is the history of a chaos run: one record per thing a worker, the
// store or the nemesis saw or did, stamped with CLOCK_MONOTONIC so that the stamps of
// every process on the machine compare. (Go's time.Now carries a monotonic reading,
// but its origin is per process.) Workers write events as JSON lines on stdout.
package event

import (
	"encoding/json"
	"io"
	"sync"

	"golang.org/x/sys/unix"
)

// Kinds of events. Append only: histories written by older runs stay readable.
const (
	// Worker events.
	Start      = "start"       // the worker has its first session
	Acquire    = "acquire"     // Acquire called
	Grant      = "grant"       // Acquire or Requeue returned a lease: Fence, Counter (the record), Call
	AcquireErr = "acquire_err" // Acquire failed: Err
	Check      = "check"       // lease.Err() read before a store write: Trusted, Past, Late, Acted
	Write      = "write"       // the store's answer to a write, as the worker saw it: Accepted
	Release    = "release"     // Release or Requeue called: Op, Fence, Counter (the value stored)
	ReleaseRet = "release_ret" // it returned: Class (ok, refused, unknown), Err
	Stop       = "stop"        // the worker was told to stop and is leaving

	// Harness events.
	Spawn = "spawn"  // a process started: W (name), Inst, Pid
	Exit  = "exit"   // a process ended: W, Inst, Err (how), Expected
	Fault = "fault"  // a fault began: Op (kind), Target, Dur (planned), ID
	Heal  = "heal"   // that fault ended: Op, Target, ID
	Store = "store"  // the store decided a write: W, Inst, Fence (lease's), Sent (fence sent), Accepted
	Stuck = "stuck"  // a process told to stop did not exit in time and was killed
	Lead  = "leader" // the harness saw a server lead (by the servers' /status): W (its name), Term
	Role  = "role"   // a server's own raft state, by its /status, whenever it or the leader it names changed, or a new process answered: W, Inst, Op (leader, follower, candidate), Leader, Term
)

// Release outcomes as the caller saw them.
const (
	OK      = "ok"      // Release or Requeue returned nil
	Refused = "refused" // ErrStaleFence or ErrLeaseLost: the client says nothing changed
	Unknown = "unknown" // any other error: the outcome is not known
)

// Event is one line of the history. Fields not used by a kind are left zero.
type Event struct {
	T    int64  `json:"t"` // CLOCK_MONOTONIC, ns
	Kind string `json:"k"`
	W    string `json:"w,omitempty"`    // worker (or "server") name
	Inst int    `json:"inst,omitempty"` // which process of that name, set by the harness
	Pid  int    `json:"pid,omitempty"`

	Token   string `json:"token,omitempty"`
	Fence   uint64 `json:"fence,omitempty"`
	Counter uint64 `json:"counter,omitempty"`
	Call    int64  `json:"call,omitempty"` // grant: when its Acquire (or Requeue) was called

	Trusted  bool   `json:"trusted,omitempty"`  // check: lease.Err() == nil
	Past     bool   `json:"past,omitempty"`     // check: the client's trust deadline had passed by its own clock
	Late     int64  `json:"late,omitempty"`     // check: by how much, ns
	Acted    bool   `json:"acted,omitempty"`    // check: the worker went on to write
	Accepted bool   `json:"accepted,omitempty"` // write, store
	Sent     uint64 `json:"sent,omitempty"`     // store: the fence the writer sent (0: none)

	Op       string `json:"op,omitempty"` // release: release or requeue; fault, heal: the kind
	Class    string `json:"class,omitempty"`
	Err      string `json:"err,omitempty"`
	Target   string `json:"target,omitempty"`
	Dur      int64  `json:"dur,omitempty"`
	ID       int    `json:"id,omitempty"`
	Expected bool   `json:"expected,omitempty"`
	Term     uint64 `json:"term,omitempty"`   // leader: the raft term
	Leader   string `json:"leader,omitempty"` // role: the leader the server names ("": it knows none)
}

// Now reads CLOCK_MONOTONIC, the clock every process of the run shares.
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err) // cannot fail on Linux
	}
	return ts.Nano()
}

// Writer writes events as JSON lines, one write(2) each: a line that reached the
// pipe survives a SIGKILL of its writer, and lines of concurrent writers do not mix.
type Writer struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

// NewWriter writes to w, which should be unbuffered (os.Stdout).
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Emit stamps e if it has no time yet and writes it.
func (w *Writer) Emit(e Event) {
	if e.T == 0 {
		e.T = Now()
	}
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	b = append(b, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.w.Write(b)
}
