//go:build linux

package qemu

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// openProcess returns the running process pid if it is still the one that
// started at startTime (clock ticks after boot), or errNoProcess. The
// process need not be a child of this one.
func openProcess(pid int, startTime uint64) (process, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil, errNoProcess
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
		// No pidfds (before Linux 5.3, or without PIDFD_NONBLOCK before
		// 5.10): poll /proc instead.
		if err := checkStart(pid, startTime); err != nil {
			return nil, err
		}
		return &polledProc{pid: pid, startTime: startTime}, nil
	case err != nil:
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// The pidfd pins the process it was opened for, so checking the start
	// time after opening it closes the window for PID reuse.
	f := os.NewFile(uintptr(fd), "pidfd "+strconv.Itoa(pid))
	if err := checkStart(pid, startTime); err != nil {
		f.Close()
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	return &pidfdProc{f: f, rc: rc, pid: pid, startTime: startTime}, nil
}

// checkStart returns errNoProcess unless pid is a live process that started
// at startTime.
func checkStart(pid int, startTime uint64) error {
	st, err := readProcStat(pid)
	if errors.Is(err, os.ErrNotExist) {
		return errNoProcess
	}
	if err != nil {
		return err
	}
	if st.startTime != startTime || st.state == 'Z' || st.state == 'X' {
		return errNoProcess
	}
	return nil
}

// pidfdProc is a process found by PID, watched through a pidfd, which
// becomes readable when the process ends.
type pidfdProc struct {
	f         *os.File
	rc        syscall.RawConn
	pid       int
	startTime uint64
}

func (p *pidfdProc) kill() error {
	var serr error
	if err := p.rc.Control(func(fd uintptr) {
		serr = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	}); err != nil {
		// wait closes the pidfd once the process has ended.
		return os.ErrProcessDone
	}
	if errors.Is(serr, unix.ESRCH) {
		return os.ErrProcessDone
	}
	return serr
}

func (p *pidfdProc) wait() exitStatus {
	defer p.f.Close()
	// The pidfd is non-blocking, so the runtime's poller waits for it
	// without holding a thread.
	err := p.rc.Read(func(fd uintptr) bool { return p.ended(int(fd), 0) })
	for err != nil {
		// Not pollable by the runtime: poll here, a second at a time.
		done := false
		if cerr := p.rc.Control(func(fd uintptr) { done = p.ended(int(fd), 1000) }); cerr != nil || done {
			break
		}
	}
	return exitStatus{}
}

// ended reports whether the pidfd fd says the process has ended, waiting up
// to timeoutMS milliseconds.
func (p *pidfdProc) ended(fd, timeoutMS int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, timeoutMS)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return checkStart(p.pid, p.startTime) != nil
		}
		return n > 0
	}
}

// polledProc is a process found by PID on a kernel without pidfds.
type polledProc struct {
	pid       int
	startTime uint64
}

func (p *polledProc) kill() error {
	if checkStart(p.pid, p.startTime) != nil {
		return os.ErrProcessDone
	}
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

func (p *polledProc) wait() exitStatus {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for checkStart(p.pid, p.startTime) == nil {
		<-t.C
	}
	return exitStatus{}
}
