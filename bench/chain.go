package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// A handoff is a chain: one side's write wakes the other, which reads the frame,
// answers with a write of its own, and goes back to sleep. chainReport reads a trace
// of both processes' read, write and epoll_pwait calls (perf script output, see
// the README's Performance section) and says where a handoff's time goes on each
// side. Its figures are means in microseconds:
//
//	turn      from the read that brings a frame to the write that answers it
//	write     the write call itself (on loopback it delivers and wakes the other side)
//	to sleep  from the end of that write to the blocking epoll_pwait that follows,
//	          when no frame came in between
//	woken     from the other side's write to this side's epoll_pwait returning
//	to read   from that return to the read of the frame
//	read      that read itself
//	same CPU  handoffs where the reader ran on the CPU the writer had written from
type chainSide struct {
	dataAt   float64 // the last read that brought data, until the write that answers it
	sentAt   float64 // the other side's write to this side, until this side reads it
	sentCPU  int
	writeAt  float64 // a write in progress
	wroteAt  float64 // the last answer written, until this side sleeps
	epollOut float64 // the last epoll_pwait return
	readIn   float64 // the read in progress

	turn, write, toSleep, woken, toRead, read stat
	sameCPU, handoffs                         int
}

type stat struct {
	sum float64
	n   int
}

func (s *stat) add(seconds float64) { s.sum += seconds * 1e6; s.n++ }

func (s stat) mean() float64 {
	if s.n == 0 {
		return 0
	}
	return s.sum / float64(s.n)
}

// traceEvent is one line of `perf script -F pid,cpu,time,event,trace`, e.g.
// "  9564 [000]  2474.852322:  syscalls:sys_exit_read: 0x2a".
type traceEvent struct {
	pid, cpu int
	at       float64
	name     string // sys_enter_read, sys_exit_write, ...
	args     string
}

func parseTraceLine(line string) (traceEvent, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[1], "[") {
		return traceEvent{}, false
	}
	var e traceEvent
	var err1, err2, err3 error
	e.pid, err1 = strconv.Atoi(f[0])
	e.cpu, err2 = strconv.Atoi(strings.Trim(f[1], "[]"))
	e.at, err3 = strconv.ParseFloat(strings.TrimSuffix(f[2], ":"), 64)
	_, e.name, _ = strings.Cut(strings.TrimSuffix(f[3], ":"), ":")
	if err1 != nil || err2 != nil || err3 != nil {
		return traceEvent{}, false
	}
	e.args = strings.Join(f[4:], " ")
	return e, true
}

// chainReport reads the trace from r; server and client are the two process ids.
func chainReport(r io.Reader, server, client int) (string, error) {
	sides := map[int]*chainSide{server: {}, client: {}}
	other := map[int]*chainSide{server: sides[client], client: sides[server]}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		e, ok := parseTraceLine(sc.Text())
		if !ok || sides[e.pid] == nil {
			continue
		}
		s := sides[e.pid]
		switch e.name {
		case "sys_exit_epoll_pwait":
			s.epollOut = e.at
		case "sys_enter_epoll_pwait":
			// The runtime polls once without waiting (timeout 0), then waits.
			if s.wroteAt != 0 && !strings.Contains(e.args, "timeout: 0x00000000,") {
				s.toSleep.add(e.at - s.wroteAt)
				s.wroteAt = 0
			}
		case "sys_enter_read":
			s.readIn = e.at
		case "sys_exit_read":
			n, err := strconv.ParseInt(strings.TrimPrefix(e.args, "0x"), 16, 64)
			if err != nil || n <= 0 || s.readIn == 0 {
				continue // an error (EAGAIN) or end of stream, or a read begun before the trace
			}
			if s.sentAt != 0 {
				s.handoffs++
				if s.epollOut >= s.sentAt {
					s.woken.add(s.epollOut - s.sentAt)
					s.toRead.add(s.readIn - s.epollOut)
				}
				s.read.add(e.at - s.readIn)
				if e.cpu == s.sentCPU {
					s.sameCPU++
				}
				s.sentAt = 0
			}
			s.dataAt = e.at
			s.wroteAt = 0 // more work came before sleep: that is not time to sleep
		case "sys_enter_write":
			if s.dataAt != 0 {
				s.turn.add(e.at - s.dataAt)
				s.dataAt = 0
				s.writeAt = e.at
				o := other[e.pid]
				o.sentAt, o.sentCPU = e.at, e.cpu
			}
		case "sys_exit_write":
			if s.writeAt != 0 {
				s.write.add(e.at - s.writeAt)
				s.writeAt, s.wroteAt = 0, e.at
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintln(&b, "| side | handoffs | turn | write | to sleep | woken | to read | read | same CPU |")
	fmt.Fprintln(&b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, side := range []struct {
		name string
		s    *chainSide
	}{{"server", sides[server]}, {"client", sides[client]}} {
		name, s := side.name, side.s
		same := 0.0
		if s.handoffs > 0 {
			same = 100 * float64(s.sameCPU) / float64(s.handoffs)
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f %% |\n", name, s.handoffs,
			s.turn.mean(), s.write.mean(), s.toSleep.mean(), s.woken.mean(), s.toRead.mean(), s.read.mean(), same)
	}
	fmt.Fprintln(&b, "Means in µs. turn: from the read that brings a frame to the write that answers it;")
	fmt.Fprintln(&b, "to sleep: from the end of that write to the blocking epoll_pwait; woken: from the other")
	fmt.Fprintln(&b, "side's write to this side's epoll_pwait return; to read: from there to the read.")
	return b.String(), nil
}

// runChain prints chainReport for the trace at path; pids is "SERVER,CLIENT".
func runChain(path, pids string) error {
	a, b, ok := strings.Cut(pids, ",")
	server, err1 := strconv.Atoi(a)
	client, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("-pids: want SERVER,CLIENT process ids, got %q", pids)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	out, err := chainReport(f, server, client)
	if err != nil {
		return err
	}
	fmt.Print(out)
	return nil
}
