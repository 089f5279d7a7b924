package main

import (
	"strings"
	"testing"
)

// Two handoffs, server 100 and client 200, timestamps in seconds as perf prints them.
// The server wakes at 10.000010, reads a frame, answers 2 µs later with a 5 µs
// write, and sleeps 4 µs after; the client, on the same CPU, wakes 12 µs after the
// server's write began, answers after 3 µs, and so on. Lines of other processes,
// EAGAIN reads and the non-blocking epoll_pwait are ignored.
const chainTrace = `
  100 [000] 10.000010: syscalls:sys_exit_epoll_pwait: 0x1
  100 [000] 10.000011: syscalls:sys_enter_read: fd: 0x00000008, buf: 0x1, count: 0x00000200
  100 [000] 10.000012: syscalls:sys_exit_read: 0x16
  300 [001] 10.000013: syscalls:sys_enter_write: fd: 0x00000003, buf: 0x1, count: 0x00000001
  100 [000] 10.000014: syscalls:sys_enter_write: fd: 0x00000009, buf: 0x1, count: 0x0000002a
  100 [000] 10.000019: syscalls:sys_exit_write: 0x2a
  100 [000] 10.000020: syscalls:sys_enter_read: fd: 0x00000008, buf: 0x1, count: 0x00000200
  100 [000] 10.000021: syscalls:sys_exit_read: 0xfffffffffffffff5
  100 [000] 10.000022: syscalls:sys_enter_epoll_pwait: epfd: 0x00000006, events: 0x1, maxevents: 0x00000080, timeout: 0x00000000, sigmask: 0x00000000
  100 [000] 10.000023: syscalls:sys_enter_epoll_pwait: epfd: 0x00000006, events: 0x1, maxevents: 0x00000080, timeout: 0x00000010, sigmask: 0x00000000
  200 [000] 10.000026: syscalls:sys_exit_epoll_pwait: 0x1
  200 [000] 10.000027: syscalls:sys_enter_read: fd: 0x00000009, buf: 0x1, count: 0x00000200
  200 [000] 10.000028: syscalls:sys_exit_read: 0x2a
  200 [000] 10.000031: syscalls:sys_enter_write: fd: 0x00000009, buf: 0x1, count: 0x00000016
  200 [000] 10.000036: syscalls:sys_exit_write: 0x16
  200 [000] 10.000042: syscalls:sys_enter_epoll_pwait: epfd: 0x00000006, events: 0x1, maxevents: 0x00000080, timeout: 0xffffffff, sigmask: 0x00000000
  100 [001] 10.000045: syscalls:sys_exit_epoll_pwait: 0x1
  100 [001] 10.000046: syscalls:sys_enter_read: fd: 0x00000008, buf: 0x1, count: 0x00000200
  100 [001] 10.000048: syscalls:sys_exit_read: 0x16
  100 [001] 10.000050: syscalls:sys_enter_write: fd: 0x0000000a, buf: 0x1, count: 0x0000002a
`

func TestChainReportSaysWhereAHandoffGoes(t *testing.T) {
	got, err := chainReport(strings.NewReader(chainTrace), 100, 200)
	if err != nil {
		t.Fatal(err)
	}
	// server: turns 2 and 2 µs; one write of 5 µs; 4 µs to sleep; woken once, 14 µs
	// after the client's write began (10.000031 → .000045), 1 µs to the read, a 2 µs
	// read, on another CPU than the client wrote from. client: one turn of 3 µs, a
	// 5 µs write, 6 µs to sleep, woken 12 µs after the server's write, same CPU.
	for _, want := range []string{
		"| server | 1 | 2.0 | 5.0 | 4.0 | 14.0 | 1.0 | 2.0 | 0.0 % |",
		"| client | 1 | 3.0 | 5.0 | 6.0 | 12.0 | 1.0 | 1.0 | 100.0 % |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
}

func TestChainNeedsBothProcessIDs(t *testing.T) {
	if err := runChain("/dev/null", "123"); err == nil || !strings.Contains(err.Error(), "SERVER,CLIENT") {
		t.Errorf("runChain with one pid: %v, want an error naming SERVER,CLIENT", err)
	}
}
