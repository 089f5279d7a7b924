package rawio

import (
	"syscall"
	"unsafe"
)

const supported = true

// Read is read(2) on a non-blocking descriptor, as a raw system call.
func Read(fd uintptr, p []byte) (int, error) { return rawCall(syscall.SYS_READ, fd, p) }

// Write is write(2) on a non-blocking descriptor, as a raw system call.
func Write(fd uintptr, p []byte) (int, error) { return rawCall(syscall.SYS_WRITE, fd, p) }

func rawCall(trap, fd uintptr, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
