//go:build !linux

package nbd

import "syscall"

// fdatasync falls back to fsync(2) where there is no portable fdatasync.
func fdatasync(rc syscall.RawConn) error {
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = syscall.Fsync(int(fd)) }); err != nil {
		return err
	}
	return opErr
}

func punchHole(syscall.RawConn, int64, int64) error { return errUnsupported }

func zeroRange(syscall.RawConn, int64, int64) error { return errUnsupported }

func pwriteDSync(syscall.RawConn, []byte, int64) (int, error) { return 0, errUnsupported }
