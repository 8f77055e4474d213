//go:build !linux

package raft

import (
	"os"
	"syscall"
)

// fdatasync flushes f to disk: fsync where there is no fdatasync (on
// darwin, os.File.Sync asks the drive to flush too: F_FULLFSYNC).
func fdatasync(f *os.File) error { return f.Sync() }

// createDirect refuses (EINVAL): segments are written through the page
// cache.
func createDirect(string) (*os.File, error) { return nil, syscall.EINVAL }

// prefetch does nothing where segments are not written directly.
func prefetch(*os.File, uint64) {}
