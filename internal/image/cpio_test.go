package image

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one entry of a newc archive, as read back by readCPIO.
type cpioEntry struct {
	name         string
	mode         uint32
	rmaj, rmin   uint32
	data         []byte
	headerOffset int
}

// readCPIO parses a newc archive strictly: magic, hex fields, 4-byte
// alignment, and the trailer at the end.
func readCPIO(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	for {
		if off%4 != 0 {
			return nil, fmt.Errorf("entry at %d is not 4-byte aligned", off)
		}
		if len(b)-off < 110 {
			return nil, fmt.Errorf("short header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			return nil, fmt.Errorf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("field %d at %d: %w", i, off, err)
			}
			f[i] = uint32(v)
		}
		namesize, filesize := int(f[11]), int(f[6])
		nameEnd := off + 110 + namesize
		if namesize == 0 || nameEnd > len(b) || b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("bad name at %d", off)
		}
		name := string(b[off+110 : nameEnd-1])
		dataOff := nameEnd + pad4(nameEnd)
		if dataOff+filesize > len(b) {
			return nil, fmt.Errorf("data of %s past the end", name)
		}
		e := cpioEntry{name: name, mode: f[1], rmaj: f[9], rmin: f[10], data: b[dataOff : dataOff+filesize], headerOffset: off}
		off = dataOff + filesize + pad4(dataOff+filesize)
		if name == "TRAILER!!!" {
			if off != len(b) {
				return nil, fmt.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out, nil
		}
		out = append(out, e)
	}
}

func TestCPIOWriter(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := newCPIOWriter(&buf)
	steps := []error{
		w.dir("bin", 0o755),
		w.file("bin/busybox", 0o755, []byte("ELF...")),
		w.symlink("bin/sh", "busybox"),
		w.dir("dev", 0o755),
		w.charDev("dev/console", 0o600, 5, 1),
		w.file("init", 0o755, []byte("#!/bin/sh\n")),
		w.file("empty", 0o644, nil),
		w.file("a/name-of-odd-length", 0o644, []byte("x")),
		w.close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	got, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatalf("readCPIO: %v", err)
	}
	want := []struct {
		name       string
		mode       uint32
		data       string
		rmaj, rmin uint32
	}{
		{"bin", 0o040755, "", 0, 0},
		{"bin/busybox", 0o100755, "ELF...", 0, 0},
		{"bin/sh", 0o120777, "busybox", 0, 0},
		{"dev", 0o040755, "", 0, 0},
		{"dev/console", 0o020600, "", 5, 1},
		{"init", 0o100755, "#!/bin/sh\n", 0, 0},
		{"empty", 0o100644, "", 0, 0},
		{"a/name-of-odd-length", 0o100644, "x", 0, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.name != w.name || g.mode != w.mode || string(g.data) != w.data || g.rmaj != w.rmaj || g.rmin != w.rmin {
			t.Errorf("entry %d = {%q %o %q %d:%d}, want {%q %o %q %d:%d}",
				i, g.name, g.mode, g.data, g.rmaj, g.rmin, w.name, w.mode, w.data, w.rmaj, w.rmin)
		}
	}

	// Cross-check with GNU cpio when it is installed.
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Log("cpio not installed; skipping the cross-check")
		return
	}
	cmd := exec.Command(cpio, "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v: %s", err, out)
	}
	names := strings.Fields(string(out))
	if len(names) != len(want) || names[2] != "bin/sh" {
		t.Errorf("cpio -it listed %q", names)
	}
}

func TestCPIOWriterRejectsBadNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "/abs"} {
		w := newCPIOWriter(&bytes.Buffer{})
		if err := w.file(name, 0o644, nil); err == nil {
			t.Errorf("file(%q) succeeded, want an error", name)
		}
	}
}

func TestPad4(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]int{0: 0, 1: 3, 2: 2, 3: 1, 4: 0, 111: 1, 112: 0} {
		if got := pad4(n); got != want {
			t.Errorf("pad4(%d) = %d, want %d", n, got, want)
		}
	}
}

// hostHasTool reports whether the program name is installed.
func hostHasTool(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// requireOrSkip skips the test with reason, or fails it when CI=true: on CI
// every dependency is expected to be installed.
func requireOrSkip(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s", reason)
	}
	t.Skip(reason)
}
