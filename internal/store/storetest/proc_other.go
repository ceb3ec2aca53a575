//go:build !linux

package storetest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
