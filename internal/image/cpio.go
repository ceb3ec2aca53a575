package image

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
)

// cpioWriter writes a cpio archive in the "newc" format (magic 070701), the
// format the Linux kernel unpacks as an initramfs. Every header field is
// eight hexadecimal digits; names and file data are padded to 4 bytes.
// Parent directories must be written before their entries.
type cpioWriter struct {
	w   *bufio.Writer
	ino uint32
	err error
}

// newCPIOWriter returns a writer of a newc archive to w. Call close to write
// the trailer and flush.
func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), ino: 1}
}

// Mode bits of the cpio header (the st_mode of the entry).
const (
	cpioDir     = 0o040000
	cpioRegular = 0o100000
	cpioSymlink = 0o120000
	cpioCharDev = 0o020000
)

// dir writes a directory.
func (c *cpioWriter) dir(name string, perm fs.FileMode) error {
	return c.entry(name, cpioDir|uint32(perm.Perm()), 2, 0, 0, nil)
}

// file writes a regular file with the given contents.
func (c *cpioWriter) file(name string, perm fs.FileMode, data []byte) error {
	return c.entry(name, cpioRegular|uint32(perm.Perm()), 1, 0, 0, data)
}

// symlink writes a symbolic link to target.
func (c *cpioWriter) symlink(name, target string) error {
	return c.entry(name, cpioSymlink|0o777, 1, 0, 0, []byte(target))
}

// charDev writes a character device node; writing one needs no privilege.
func (c *cpioWriter) charDev(name string, perm fs.FileMode, major, minor uint32) error {
	return c.entry(name, cpioCharDev|uint32(perm.Perm()), 1, major, minor, nil)
}

// close writes the trailer entry and flushes the archive.
func (c *cpioWriter) close() error {
	if err := c.entry("TRAILER!!!", 0, 1, 0, 0, nil); err != nil {
		return err
	}
	return c.w.Flush()
}

func (c *cpioWriter) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	if name == "" || name[0] == '/' || len(name) > 4095 {
		return fmt.Errorf("cpio: bad entry name %q", name)
	}
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio: %s is too large (%d bytes)", name, len(data))
	}
	ino := c.ino
	if name == "TRAILER!!!" {
		ino = 0
	}
	c.ino++
	// Fields: ino mode uid gid nlink mtime filesize devmajor devminor
	// rdevmajor rdevminor namesize check. mtime 0 keeps builds reproducible.
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	if c.err == nil {
		_, c.err = c.w.WriteString(name)
	}
	if c.err == nil {
		// The 110-byte header plus the name and its NUL are padded to 4.
		c.err = c.pad(1 + pad4(110+len(name)+1))
	}
	if c.err == nil {
		_, c.err = c.w.Write(data)
	}
	if c.err == nil {
		c.err = c.pad(pad4(len(data)))
	}
	if c.err != nil {
		c.err = fmt.Errorf("cpio: write %s: %w", name, c.err)
	}
	return c.err
}

// pad writes n NUL bytes.
func (c *cpioWriter) pad(n int) error {
	var zero [4]byte
	_, err := c.w.Write(zero[:n])
	return err
}

// pad4 is the number of bytes that bring n to a multiple of 4.
func pad4(n int) int { return (4 - n%4) % 4 }
