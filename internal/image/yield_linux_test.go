package image

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// niceOf returns the nice value of thread or process id (the raw
// getpriority value is 20 - nice on Linux).
func niceOf(t *testing.T, id int) int {
	t.Helper()
	p, err := unix.Getpriority(unix.PRIO_PROCESS, id)
	if err != nil {
		t.Fatal(err)
	}
	return 20 - p
}

func TestRunYielding(t *testing.T) {
	before := niceOf(t, 0)
	var inside int
	var child string
	err := runYielding(func() error {
		inside = niceOf(t, unix.Gettid())
		// A process started from there (debugfs, xz) inherits it.
		out, err := exec.Command("sh", "-c", "cut -d' ' -f19 /proc/self/stat").Output()
		child = strings.TrimSpace(string(out))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inside != backgroundNice {
		t.Errorf("nice inside runYielding = %d, want %d", inside, backgroundNice)
	}
	if child != strconv.Itoa(backgroundNice) {
		t.Errorf("nice of a process started inside runYielding = %q, want %d", child, backgroundNice)
	}
	// The niced thread ended with its goroutine: others keep theirs.
	for range 20 {
		done := make(chan int)
		go func() { done <- niceOf(t, unix.Gettid()) }()
		if got := <-done; got == backgroundNice && before != backgroundNice {
			t.Fatalf("a goroutine after runYielding runs at nice %d", got)
		}
	}
}

func TestYieldCPUChild(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	yieldCPU(cmd.Process.Pid)
	if got := niceOf(t, cmd.Process.Pid); got != backgroundNice {
		t.Errorf("child's nice = %d, want %d", got, backgroundNice)
	}
}
