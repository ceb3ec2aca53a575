package image

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needBusybox returns the host's busybox or skips the test.
func needBusybox(t *testing.T) string {
	t.Helper()
	if regularFile(hostBusybox) != nil {
		requireOrSkip(t, hostBusybox+" is missing (install busybox-static)")
	}
	return hostBusybox
}

// TestGuestScriptsParse checks the syntax of every guest shell script with
// the same busybox sh the guest runs.
func TestGuestScriptsParse(t *testing.T) {
	t.Parallel()
	bb := needBusybox(t)
	err := fs.WalkDir(guestFiles, "guest", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body := guestFile(strings.TrimPrefix(p, "guest/"))
		if !strings.HasPrefix(string(body), "#!/bin/sh\n") {
			return nil // inittab
		}
		cmd := exec.Command(bb, "sh", "-n")
		cmd.Stdin = strings.NewReader(string(body))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("busybox sh -n %s: %v: %s", p, err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCounterRecover runs the guest's counter script in its "recover" mode
// with the host's busybox: it must drop a partial last line and resume
// after the last complete one.
func TestCounterRecover(t *testing.T) {
	t.Parallel()
	bb := needBusybox(t)
	tests := []struct {
		name     string
		file     *string // nil: no counter file
		wantLast string
		wantFile string
	}{
		{name: "first boot", file: nil, wantLast: "0", wantFile: ""},
		{name: "empty", file: ptr(""), wantLast: "0", wantFile: ""},
		{name: "complete lines", file: ptr("1 100\n2 101\n3 102\n"), wantLast: "3", wantFile: "1 100\n2 101\n3 102\n"},
		{name: "partial last line", file: ptr("1 100\n2 101\n3 10"), wantLast: "2", wantFile: "1 100\n2 101\n"},
		{name: "partial number", file: ptr("1 100\n2 101\n3"), wantLast: "2", wantFile: "1 100\n2 101\n"},
		{name: "zeros after the data", file: ptr("1 100\n2 101\n\x00\x00\x00"), wantLast: "2", wantFile: "1 100\n2 101\n"},
		{name: "garbage last line", file: ptr("1 100\n2 101\nxx\n"), wantLast: "2", wantFile: "1 100\n2 101\nxx\n"},
		{name: "only a partial line", file: ptr("1 10"), wantLast: "0", wantFile: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			counter := filepath.Join(dir, "lib", "counter")
			if tc.file != nil {
				if err := os.MkdirAll(filepath.Dir(counter), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(counter, []byte(*tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := runGuestScript(t, bb, "demo-counter", []string{
				"DEMO_DIR=" + filepath.Dir(counter), "DEMO_RUN=" + filepath.Join(dir, "run"),
			}, "recover")
			if err != nil {
				t.Fatalf("demo-counter recover: %v: %s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if last := lines[len(lines)-1]; last != tc.wantLast {
				t.Errorf("demo-counter recover printed %q, want last value %s", out, tc.wantLast)
			}
			b, err := os.ReadFile(counter)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.wantFile {
				t.Errorf("counter file = %q, want %q", b, tc.wantFile)
			}
		})
	}
}

// runGuestScript runs the embedded guest script name with the host's busybox
// sh, its PATH pointing at a directory of busybox applet links so that its
// commands (stat, tail, truncate...) are busybox's, as in the guest.
func runGuestScript(t *testing.T, bb, name string, env []string, args ...string) (string, error) {
	t.Helper()
	bin := t.TempDir()
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(list)) {
		if err := os.Symlink(bb, filepath.Join(bin, a)); err != nil {
			t.Fatal(err)
		}
	}
	const guestPath = "PATH=/sbin:/bin:/usr/sbin:/usr/bin"
	body := string(guestFile(name))
	if !strings.Contains(body, guestPath) {
		t.Fatalf("guest script %s does not set %s", name, guestPath)
	}
	script := filepath.Join(bin, name)
	if err := os.WriteFile(script, []byte(strings.Replace(body, guestPath, "PATH="+bin, 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bb, append([]string{"sh", script}, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func ptr[T any](v T) *T { return &v }
