package raft

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data (and the metadata needed to read it) to disk.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// createDirect creates (or truncates) path for writes that bypass the page
// cache (O_DIRECT); a file system that refuses them at open answers EINVAL
// (tmpfs before Linux 6.6, for one).
func createDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o600)
}

// prefetch asks the kernel to read the first size bytes of f into the page
// cache in the background (POSIX_FADV_WILLNEED, in steps the kernel's
// read-ahead takes whole). Only advice: a page left out is read when first
// written.
func prefetch(f *os.File, size uint64) {
	const step = 2 << 20
	for off := uint64(0); off < size; off += step {
		_ = unix.Fadvise(int(f.Fd()), int64(off), int64(min(step, size-off)), unix.FADV_WILLNEED)
	}
}
