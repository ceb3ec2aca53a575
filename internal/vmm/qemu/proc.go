package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// procStat is what the driver reads from /proc/PID/stat.
type procStat struct {
	// state is the process state letter: R, S, D, Z, ...
	state byte
	// startTime is when the process started, in clock ticks after boot:
	// with the PID, it names one process for the machine's uptime.
	startTime uint64
}

// readProcStat reads /proc/PID/stat. It returns an error wrapping
// os.ErrNotExist if there is no such process.
func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(data)
}

// parseProcStat parses the contents of /proc/PID/stat. The command name
// (field 2) is in parentheses and may itself contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseProcStat(data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc stat %q: no command name", data)
	}
	// After ")": state is field 3, starttime field 22.
	fields := strings.Fields(string(data[i+1:]))
	const stateField, startField = 0, 22 - 3
	if len(fields) <= startField {
		return procStat{}, fmt.Errorf("parse /proc stat %q: %d fields after the name, want more than %d", data, len(fields), startField)
	}
	if len(fields[stateField]) != 1 {
		return procStat{}, fmt.Errorf("parse /proc stat %q: bad state %q", data, fields[stateField])
	}
	start, err := strconv.ParseUint(fields[startField], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc stat %q: start time: %w", data, err)
	}
	return procStat{state: fields[stateField][0], startTime: start}, nil
}

// readCmdline returns the arguments of process pid.
func readCmdline(pid int) ([]string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	data = bytes.TrimSuffix(data, []byte{0})
	if len(data) == 0 {
		return nil, nil
	}
	return strings.Split(string(data), "\x00"), nil
}

// exitStatus is what the driver learns when a QEMU process ends.
type exitStatus struct {
	// state is the wait status; nil for a process that is not the
	// driver's child, whose status nobody tells us.
	state *os.ProcessState
}

// process is one running QEMU process.
type process interface {
	// kill sends SIGKILL. It returns nil, or os.ErrProcessDone, if the
	// process has already ended; it never signals another process that
	// reuses the PID.
	kill() error
	// wait blocks until the process has ended.
	wait() exitStatus
}

// childProc is a QEMU process this driver started.
type childProc struct {
	cmd *exec.Cmd
}

func (p childProc) kill() error { return p.cmd.Process.Kill() }

func (p childProc) wait() exitStatus {
	// The error repeats what ProcessState says; stdout and stderr are
	// files, so there is no copying to fail.
	_ = p.cmd.Wait()
	return exitStatus{state: p.cmd.ProcessState}
}

// errNoProcess means a PID does not name the expected process any more.
var errNoProcess = errors.New("process is gone")

// pollInterval is how often a recovered process is checked for in /proc
// when the kernel offers no pidfd.
const pollInterval = 250 * time.Millisecond
