//go:build !linux

package nbd

import (
	"os"
	"syscall"
)

// fdatasync falls back to fsync(2) (os.File.Sync) where there is no
// portable fdatasync.
func fdatasync(f *os.File, _ syscall.RawConn) error { return f.Sync() }

func punchHole(syscall.RawConn, int64, int64) error { return errUnsupported }

func zeroRange(syscall.RawConn, int64, int64) error { return errUnsupported }

func pwriteDSync(syscall.RawConn, []byte, int64) (int, error) { return 0, errUnsupported }
