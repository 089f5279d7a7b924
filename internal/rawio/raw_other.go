//go:build unix && !linux

package rawio

import "syscall"

// Elsewhere Wrap leaves connections as they are, and Read and Write are the
// ordinary system calls.
const supported = false

// Read is read(2).
func Read(fd uintptr, p []byte) (int, error) { return syscall.Read(int(fd), p) }

// Write is write(2).
func Write(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
