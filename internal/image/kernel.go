package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrCannotUnpack means UnpackKernel cannot turn a kernel into one QEMU boots
// directly: it is not a bzImage, its payload uses a compression ferry does
// not handle (or whose tool is not installed), or the kernel has no PVH
// entry point. The kernel still boots as it is, only more slowly.
var ErrCannotUnpack = errors.New("image: cannot unpack kernel")

// Fields of the x86 boot protocol's setup header (Documentation/arch/x86/
// boot.rst in the kernel tree), offsets from the start of the bzImage.
const (
	bzSetupSects    = 0x1f1
	bzHeaderMagic   = 0x202 // "HdrS"
	bzVersion       = 0x206
	bzPayloadOffset = 0x248
	bzPayloadLength = 0x24c
	bzMinVersion    = 0x208 // payload_offset exists since protocol 2.08
)

// xenNotePhys32Entry is the ELF note (owner "Xen") holding the 32-bit PVH
// entry point. QEMU boots an ELF kernel only through it.
const xenNotePhys32Entry = 18

// UnpackKernel writes to out the uncompressed kernel (the ELF vmlinux) inside
// the x86 bzImage at bzImage, if the kernel has a PVH entry point.
//
// QEMU boots such a kernel directly (-kernel with the ELF, through PVH),
// which skips the kernel decompressing itself in the guest: under TCG that
// takes about 5 of the 9 seconds a Debian 12 kernel needs to reach /init,
// while the host unpacks it in well under a second. Gzip payloads are
// unpacked in Go, xz and zstd ones with the xz and zstd programs (Debian's
// kernels are xz). The output is about 8 times the bzImage (66 MB for Debian
// 12's). It is written under a temporary name and renamed.
//
// Errors match ErrCannotUnpack when the kernel cannot be unpacked or would
// not boot unpacked; callers then boot the bzImage itself. Cancelling ctx
// stops the decompressor.
func UnpackKernel(ctx context.Context, bzImage, out string) error {
	f, err := os.Open(bzImage)
	if err != nil {
		return fmt.Errorf("unpack kernel: %w", err)
	}
	defer f.Close()
	payload, err := bzPayload(f)
	if err != nil {
		return fmt.Errorf("unpack kernel %s: %w", bzImage, err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return fmt.Errorf("unpack kernel %s: %w", bzImage, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // a no-op after the rename
	err = decompressPayload(ctx, payload, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("unpack kernel %s: %w", bzImage, err)
	}
	if err := checkPVH(tmpName); err != nil {
		return fmt.Errorf("unpack kernel %s: %w", bzImage, err)
	}
	if err := os.Chmod(tmpName, 0o644); err != nil {
		return fmt.Errorf("unpack kernel %s: %w", bzImage, err)
	}
	if err := os.Rename(tmpName, out); err != nil {
		return fmt.Errorf("unpack kernel %s: %w", bzImage, err)
	}
	return nil
}

// bzPayload returns the compressed kernel inside a bzImage, from the
// payload_offset and payload_length fields of its setup header.
func bzPayload(f *os.File) (*io.SectionReader, error) {
	hdr := make([]byte, 0x250)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("%w: too short for a bzImage: %w", ErrCannotUnpack, err)
	}
	le := binary.LittleEndian
	if string(hdr[bzHeaderMagic:bzHeaderMagic+4]) != "HdrS" {
		return nil, fmt.Errorf("%w: not an x86 bzImage (no HdrS)", ErrCannotUnpack)
	}
	if v := le.Uint16(hdr[bzVersion:]); v < bzMinVersion {
		return nil, fmt.Errorf("%w: boot protocol %#x is older than 2.08", ErrCannotUnpack, v)
	}
	setup := int64(hdr[bzSetupSects])
	if setup == 0 {
		setup = 4
	}
	off := (setup+1)*512 + int64(le.Uint32(hdr[bzPayloadOffset:]))
	n := int64(le.Uint32(hdr[bzPayloadLength:]))
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if n < 16 || off+n > fi.Size() {
		return nil, fmt.Errorf("%w: payload [%d, %d) outside the %d-byte file", ErrCannotUnpack, off, off+n, fi.Size())
	}
	return io.NewSectionReader(f, off, n), nil
}

// decompressPayload writes the decompressed payload to w. The kernel build
// appends the uncompressed size (4 bytes) to the compressed stream.
func decompressPayload(ctx context.Context, payload *io.SectionReader, w io.Writer) error {
	magic := make([]byte, 6)
	if _, err := payload.ReadAt(magic, 0); err != nil {
		return err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(payload)
		if err != nil {
			return fmt.Errorf("%w: gzip: %w", ErrCannotUnpack, err)
		}
		zr.Multistream(false)
		return runYielding(func() error {
			if _, err := io.Copy(w, zr); err != nil {
				return fmt.Errorf("gunzip: %w", err)
			}
			return nil
		})
	case bytes.Equal(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return decompressTool(ctx, "xz", []string{"-dc", "--single-stream"}, payload, w)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		trimmed := io.NewSectionReader(payload, 0, payload.Size()-4)
		return decompressTool(ctx, "zstd", []string{"-dcq"}, trimmed, w)
	}
	return fmt.Errorf("%w: unknown payload compression (magic % x)", ErrCannotUnpack, magic)
}

func decompressTool(ctx context.Context, tool string, args []string, r io.Reader, w io.Writer) error {
	bin, err := exec.LookPath(tool)
	if err != nil {
		return fmt.Errorf("%w: %s is not installed: %w", ErrCannotUnpack, tool, err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, w, &stderr
	err = cmd.Start()
	if err == nil {
		yieldCPU(cmd.Process.Pid) // background work beside running guests
		err = cmd.Wait()
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%s: %w: %s", tool, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// checkPVH returns nil if path is a 64-bit x86 ELF kernel with a Xen
// PHYS32_ENTRY note, the PVH entry point QEMU needs to boot it.
func checkPVH(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%w: payload is not an ELF kernel: %w", ErrCannotUnpack, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%w: payload is not an x86-64 ELF kernel", ErrCannotUnpack)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return fmt.Errorf("read ELF notes: %w", err)
		}
		if hasNote(data, f.ByteOrder, "Xen", xenNotePhys32Entry) {
			return nil
		}
	}
	return fmt.Errorf("%w: kernel has no PVH entry point (CONFIG_PVH)", ErrCannotUnpack)
}

// hasNote reports whether the ELF note section data holds a note of the
// given owner and type.
func hasNote(data []byte, bo binary.ByteOrder, owner string, typ uint32) bool {
	align4 := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(data) >= 12 {
		namesz, descsz, t := uint64(bo.Uint32(data)), uint64(bo.Uint32(data[4:])), bo.Uint32(data[8:])
		rest := uint64(len(data) - 12)
		if align4(namesz) > rest || align4(descsz) > rest-align4(namesz) {
			return false
		}
		name := strings.TrimRight(string(data[12:12+namesz]), "\x00")
		if name == owner && t == typ {
			return true
		}
		data = data[12+align4(namesz)+align4(descsz):]
	}
	return false
}
