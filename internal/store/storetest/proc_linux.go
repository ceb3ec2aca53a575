package storetest

import "syscall"

// sysProcAttr makes the kernel kill etcd if the test process dies without
// running its cleanups (a panic or a test timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
