package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-dev/baton/chaos/internal/event"
)

// proc is one child process: the server or a worker. Each runs in its own process
// group, so that a signal reaches it whole, and dies with the harness (Pdeathsig);
// procs.killAll kills every group still alive, whatever way the harness ends.
type proc struct {
	name string
	inst int
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for
	// why says why the harness expects the process to end: "" (it must not),
	// "killed" (any end is expected) or "told" (SIGTERM: it must exit 0).
	why  atomic.Value
	exit string    // how it ended; set before done closes
	born time.Time // when it started
}

// procs starts and tracks child processes, writing spawn and exit events.
type procs struct {
	h      *history
	logDir string
	onExit func(p *proc, expected bool) // called after each exit event

	mu     sync.Mutex // guards all, logged, closed
	all    []*proc
	logged map[string]bool // names whose log this run has opened
	closed bool            // killAll has run: nothing more starts
}

// start runs path with args and env. Its stderr (and stdout, unless events is set)
// goes to logDir/name.log; events, if set, reads its stdout to the end.
func (ps *procs) start(name string, inst int, path string, args, env []string, events func(io.Reader)) (*proc, error) {
	logf, err := ps.openLog(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var out io.ReadCloser
	if events != nil {
		if out, err = cmd.StdoutPipe(); err != nil {
			logf.Close()
			return nil, err
		}
	} else {
		cmd.Stdout = logf
	}
	p := &proc{name: name, inst: inst, cmd: cmd, done: make(chan struct{}), born: time.Now()}
	p.why.Store("")
	ps.mu.Lock() // held across Start: killAll must not miss a process being born
	if ps.closed {
		ps.mu.Unlock()
		logf.Close()
		return nil, fmt.Errorf("%s: the run is over", name)
	}
	if err := cmd.Start(); err != nil {
		ps.mu.Unlock()
		logf.Close()
		return nil, err
	}
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	ps.h.add(event.Event{Kind: event.Spawn, W: name, Inst: inst, Pid: cmd.Process.Pid})
	go func() {
		if events != nil {
			events(out) // to EOF: Wait must come after the last read
		}
		err := cmd.Wait()
		_ = logf.Close() // its name stays readable
		p.exit = "exit 0"
		if err != nil {
			p.exit = err.Error()
		}
		why := p.why.Load().(string)
		expected := why == "killed" || (why == "told" && err == nil)
		e := event.Event{Kind: event.Exit, W: name, Inst: inst, Pid: cmd.Process.Pid, Err: p.exit, Expected: expected}
		if !expected {
			if last := lastWords(logf.Name()); last != "" {
				e.Err += ": " + last
			}
		}
		ps.h.add(e)
		close(p.done)
		if ps.onExit != nil {
			ps.onExit(p, expected)
		}
	}()
	return p, nil
}

// openLog opens logDir/name.log for a process to write to. The first process of a
// name in a run starts the log afresh: a run in a directory a previous run left
// (-dir) must not read, nor show, that run's lines as its own (lastWords reads
// the tail). Its restarts append, so that the log holds every instance of the run.
func (ps *procs) openLog(name string) (*os.File, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	flags := os.O_CREATE | os.O_APPEND | os.O_WRONLY
	if !ps.logged[name] {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(fmt.Sprintf("%s/%s.log", ps.logDir, name), flags, 0o644)
	if err != nil {
		return nil, err
	}
	if ps.logged == nil {
		ps.logged = map[string]bool{}
	}
	ps.logged[name] = true
	return f, nil
}

// signal sends sig to p's process group.
func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() { // its pid may belong to someone else by now
		return fmt.Errorf("%s (inst %d) has exited", p.name, p.inst)
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// kill SIGKILLs p and waits until it has been reaped, at most d.
func (p *proc) kill(d time.Duration) error {
	p.sigkill()
	return p.wait(d)
}

// sigkill SIGKILLs p and returns at once.
func (p *proc) sigkill() {
	p.why.Store("killed")
	_ = p.signal(syscall.SIGKILL)
}

// stop asks p to exit (SIGTERM) and waits at most d; it must exit 0.
func (p *proc) stop(d time.Duration) error {
	p.why.Store("told")
	_ = p.signal(syscall.SIGCONT) // a frozen process cannot hear SIGTERM
	_ = p.signal(syscall.SIGTERM)
	return p.wait(d)
}

func (p *proc) wait(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s (inst %d) did not exit within %s", p.name, p.inst, d)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// killAll SIGKILLs every process group still alive, and no process starts after it.
// Safe to call more than once and from a deferred function after a panic.
func (ps *procs) killAll() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.closed = true
	for _, p := range ps.all {
		if !p.exited() {
			p.why.Store("killed")
			_ = p.signal(syscall.SIGKILL)
		}
	}
}

// lastWords is what a process that ended by itself said last in its log (the log
// is shared by every process of a name): its panic, or its last line.
func lastWords(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 64 << 10
	var off int64
	if fi, err := f.Stat(); err == nil && fi.Size() > tail {
		off = fi.Size() - tail
	}
	b := make([]byte, tail)
	n, _ := f.ReadAt(b, off)
	lines := strings.Split(strings.TrimSpace(string(b[:n])), "\n")
	last := lines[len(lines)-1]
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "panic: ") || strings.HasPrefix(lines[i], "fatal error: ") {
			last = lines[i]
			break
		}
	}
	if len(last) > 200 {
		last = last[:200] + "..."
	}
	return last
}
