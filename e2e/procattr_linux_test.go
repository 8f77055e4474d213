//go:build linux

package e2e

import "syscall"

// sysProcAttr puts a hub in its own process group and has the kernel kill
// it if the test process dies, so that no hub outlives a crashed test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
