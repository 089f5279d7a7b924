// Package rawio reads and writes a connected socket with raw system calls.
//
// Go's net.Conn makes every read and write a runtime "syscall" (entersyscall and
// exitsyscall around it), and entering one wakes the runtime's monitor thread,
// sysmon, whenever it has gone into deep sleep because every P was idle. Two
// processes trading small messages wait on each other, so every P is idle between
// messages: almost every write woke sysmon with a futex call, and sysmon then polled
// every 20 µs until the process went idle again, taking a CPU from the threads that
// carry the token. A read or a write on a non-blocking socket never blocks (it
// answers EAGAIN), which is the condition for a raw system call; the runtime's
// poller still does the waiting, and read and write deadlines work as before. A raw
// call keeps its P while it runs, so it is meant for what baton writes at once:
// frames of at most 16 KiB, a socket buffer's worth. docs/design.md places this among
// the rules of the hot path; docs/performance.md has the measurements.
package rawio

import (
	"io"
	"net"
	"syscall"
)

// Conn is a net.Conn whose Read and Write use raw system calls. Unlike a net.Conn,
// it takes one Read at a time and one Write at a time (a Read and a Write may run
// together): each keeps its progress in the Conn. baton never does otherwise: a
// connection has one reader at a time, and its writes are made under a lock.
type Conn struct {
	net.Conn
	rc syscall.RawConn
	rd call // the Read in progress
	wr call // the Write in progress
}

// call is one Read or Write: its buffer, its progress and its system call, made once
// per Conn (a closure per call would allocate per call).
type call struct {
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// Wrap returns nc with raw reads and writes, or nc itself where the descriptor is
// not available or raw calls are not built for this system.
func Wrap(nc net.Conn) net.Conn {
	sc, ok := nc.(syscall.Conn)
	if !ok || !supported {
		return nc
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nc
	}
	c := &Conn{Conn: nc, rc: rc}
	c.rd.fn = c.readSome
	c.wr.fn = c.writeSome
	return c
}

// Read reads what the socket holds, waiting in the poller while it holds nothing.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return c.do(&c.rd, p, false)
}

// Write writes all of p, waiting in the poller while the send buffer is full.
func (c *Conn) Write(p []byte) (int, error) { return c.do(&c.wr, p, true) }

// do runs one Read or Write: the RawConn calls k.fn until it reports done, waiting in
// the poller (and minding the deadlines) each time it is not.
func (c *Conn) do(k *call, p []byte, write bool) (int, error) {
	k.p, k.n, k.err = p, 0, nil
	var err error
	if write {
		err = c.rc.Write(k.fn)
	} else {
		err = c.rc.Read(k.fn)
	}
	n := k.n
	if err == nil {
		err = k.err
	}
	k.p, k.err = nil, nil
	switch {
	case err == nil, err == io.EOF && !write:
		return n, err
	case write:
		return n, c.opError("write", err)
	default:
		return n, c.opError("read", err)
	}
}

func (c *Conn) readSome(fd uintptr) bool {
	r := &c.rd
	for {
		n, err := Read(fd, r.p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false // wait in the poller, then call again
		case err != nil:
			r.err = err
		case n == 0:
			r.err = io.EOF
		default:
			r.n = n
		}
		return true
	}
}

func (c *Conn) writeSome(fd uintptr) bool {
	w := &c.wr
	n, err := WriteNow(fd, w.p[w.n:])
	w.n += n
	if err != nil {
		w.err = err
		return true
	}
	return w.n == len(w.p) // if not, wait until the socket takes more, then call again
}

// WriteNow writes as much of p as the non-blocking socket fd takes without waiting:
// n < len(p) with a nil error means its send buffer is full.
func WriteNow(fd uintptr, p []byte) (n int, err error) {
	for n < len(p) {
		m, err := Write(fd, p[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return n, nil
		case err != nil:
			return n, err
		}
		n += m
	}
	return n, nil
}

// opError says where, as the net package's errors do.
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
