package repl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// KeepAside moves the image at diskPath, with its replication metadata and
// bitmap, to "<diskPath>.diverged-<UTC time>" and leaves an empty sparse
// image of the same size and mode at diskPath. It is what happens to the
// losing side of a divergence (property 8): its data is never merged nor
// deleted, an operator can inspect or restore it, and the fresh image gets
// a full sync from the winner. It returns the new path of the old image.
// Nothing may have the image open for writing.
func KeepAside(diskPath string) (string, error) {
	fi, err := os.Stat(diskPath)
	if err != nil {
		return "", fmt.Errorf("repl: keep aside: %w", err)
	}
	aside := fmt.Sprintf("%s.diverged-%s", diskPath, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if _, err := os.Lstat(aside); err == nil {
		return "", fmt.Errorf("repl: keep aside: %s already exists", aside)
	}
	if err := os.Rename(diskPath, aside); err != nil {
		return "", fmt.Errorf("repl: keep aside: %w", err)
	}
	for _, side := range []struct{ from, to string }{
		{MetaPath(diskPath), MetaPath(aside)},
		{BitmapPath(diskPath), BitmapPath(aside)},
	} {
		if err := os.Rename(side.from, side.to); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return aside, fmt.Errorf("repl: keep aside: %w", err)
		}
	}
	f, err := os.OpenFile(diskPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return aside, fmt.Errorf("repl: keep aside: new image: %w", err)
	}
	if err := f.Truncate(fi.Size()); err != nil {
		f.Close()
		return aside, fmt.Errorf("repl: keep aside: new image: %w", err)
	}
	if err := f.Close(); err != nil {
		return aside, fmt.Errorf("repl: keep aside: new image: %w", err)
	}
	return aside, syncDir(filepath.Dir(diskPath))
}
