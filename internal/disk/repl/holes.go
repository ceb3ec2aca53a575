package repl

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// isHole reports whether [off, off+length) of f holds no data, using
// lseek(2) SEEK_DATA. It answers false whenever it cannot tell, which only
// costs a read: the caller then checks the data for zeroes.
func isHole(f *os.File, off, length int64) bool {
	if f == nil {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	hole := false
	_ = rc.Control(func(fd uintptr) {
		d, err := unix.Seek(int(fd), off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO): // no data at or after off
			hole = true
		case err == nil:
			hole = d >= off+length
		}
	})
	return hole
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
