package nbd

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// control runs fn on the file descriptor behind rc, which stays open
// meanwhile.
func control(rc syscall.RawConn, fn func(fd int) error) error {
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = fn(int(fd)) }); err != nil {
		return err
	}
	return opErr
}

// unsupported turns the errors with which the kernel refuses an operation
// it or the file system does not implement into errUnsupported.
func unsupported(err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return errUnsupported
	}
	return err
}

func fdatasync(_ *os.File, rc syscall.RawConn) error {
	return control(rc, func(fd int) error {
		for {
			err := unix.Fdatasync(fd)
			if err != unix.EINTR {
				return err
			}
		}
	})
}

func fallocate(rc syscall.RawConn, mode uint32, off, length int64) error {
	return control(rc, func(fd int) error {
		for {
			err := unix.Fallocate(fd, mode, off, length)
			if err != unix.EINTR {
				return unsupported(err)
			}
		}
	})
}

func punchHole(rc syscall.RawConn, off, length int64) error {
	return fallocate(rc, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func zeroRange(rc syscall.RawConn, off, length int64) error {
	return fallocate(rc, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// pwriteDSync writes all of p at off with pwritev2(RWF_DSYNC), which
// returns once p is durable.
func pwriteDSync(rc syscall.RawConn, p []byte, off int64) (int, error) {
	written := 0
	err := control(rc, func(fd int) error {
		for written < len(p) {
			n, err := unix.Pwritev2(fd, [][]byte{p[written:]}, off+int64(written), unix.RWF_DSYNC)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				return unsupported(err)
			case n == 0:
				return unix.EIO
			}
			written += n
		}
		return nil
	})
	return written, err
}
