package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// makeBzImage returns a minimal bzImage: a setup header whose payload
// fields point at payload, followed by the 4-byte uncompressed size the
// kernel build appends.
func makeBzImage(payload []byte, uncompressed int) []byte {
	const setupSects = 1
	hdr := make([]byte, (setupSects+1)*512)
	hdr[bzSetupSects] = setupSects
	copy(hdr[bzHeaderMagic:], "HdrS")
	le := binary.LittleEndian
	le.PutUint16(hdr[bzVersion:], 0x20f)
	le.PutUint32(hdr[bzPayloadOffset:], 0)
	tail := le.AppendUint32(nil, uint32(uncompressed))
	le.PutUint32(hdr[bzPayloadLength:], uint32(len(payload)+len(tail)))
	return append(append(hdr, payload...), tail...)
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestUnpackKernelRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		data []byte
	}{
		{"not a bzImage", []byte("KERNEL")},
		{"zero header", make([]byte, 4096)},
		{"gzip payload, not ELF", makeBzImage(gzipBytes([]byte("not an ELF file at all")), 22)},
		{"unknown compression", makeBzImage([]byte("BZh91AY&SY-whatever-bzip2"), 100)},
		{"payload past the end", func() []byte {
			b := makeBzImage(gzipBytes([]byte("x")), 1)
			binary.LittleEndian.PutUint32(b[bzPayloadLength:], 1<<30)
			return b
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := filepath.Join(dir, filepath.Base(tc.name)+".bz")
			if err := os.WriteFile(in, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, filepath.Base(tc.name)+".elf")
			if err := UnpackKernel(context.Background(), in, out); !errors.Is(err, ErrCannotUnpack) {
				t.Fatalf("UnpackKernel() error = %v, want ErrCannotUnpack", err)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("output left behind: %v", err)
			}
		})
	}
}

func TestHasNote(t *testing.T) {
	t.Parallel()
	le := binary.LittleEndian
	note := func(name string, typ uint32, desc []byte) []byte {
		b := le.AppendUint32(nil, uint32(len(name)+1))
		b = le.AppendUint32(b, uint32(len(desc)))
		b = le.AppendUint32(b, typ)
		b = append(b, name...)
		b = append(b, 0)
		b = append(b, make([]byte, pad4(len(name)+1))...)
		b = append(b, desc...)
		return append(b, make([]byte, pad4(len(desc)))...)
	}
	pvh := note("Xen", xenNotePhys32Entry, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	tests := []struct {
		name string
		data []byte
		want bool
	}{
		{"pvh alone", pvh, true},
		{"pvh after others", append(append(note("GNU", 3, []byte("build-id-20-bytes...")), note("Xen", 6, []byte("linux"))...), pvh...), true},
		{"other Xen notes", note("Xen", 6, []byte("linux")), false},
		{"other owner", note("Linux", xenNotePhys32Entry, []byte{1}), false},
		{"truncated", pvh[:len(pvh)-4], false},
		{"huge sizes", append(le.AppendUint32(le.AppendUint32(nil, 0xffffffff), 0xffffffff), 0, 0, 0, 0), false},
		{"empty", nil, false},
	}
	for _, tc := range tests {
		if got := hasNote(tc.data, le, "Xen", xenNotePhys32Entry); got != tc.want {
			t.Errorf("hasNote(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestUnpackHostKernel unpacks the host's Debian kernel, the case that
// matters: BuildDemo copies it into the demo image.
func TestUnpackHostKernel(t *testing.T) {
	t.Parallel()
	ver, err := newestKernel(hostBootDir, hostModulesDir)
	if err != nil {
		requireOrSkip(t, "no kernel installed: "+err.Error())
	}
	if !hostHasTool("xz") {
		requireOrSkip(t, "xz is not installed (install xz-utils)")
	}
	out := filepath.Join(t.TempDir(), "vmlinux")
	if err := UnpackKernel(context.Background(), filepath.Join(hostBootDir, "vmlinuz-"+ver), out); err != nil {
		t.Fatalf("UnpackKernel: %v", err)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		t.Errorf("unpacked kernel is for %v", f.Machine)
	}
	if err := checkPVH(out); err != nil {
		t.Errorf("checkPVH: %v", err)
	}
}
