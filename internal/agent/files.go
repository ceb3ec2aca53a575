package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/vmm"
)

// writeFileAtomic replaces path with data: it writes a temporary file in the
// same directory, syncs it, renames it over path and syncs the directory, so
// that after a crash path holds either the old or the new content.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// loadSavedNode returns the saved identity, or nil if the node has not
// joined: node.crt, written last by a join, is what marks a joined node.
func loadSavedNode(dir string) (*savedNode, error) {
	if _, err := os.Stat(filepath.Join(dir, certFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading node identity: %w", err)
	}
	path := filepath.Join(dir, nodeFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading node identity: %w (%s exists, so this node has joined; restore %s, or remove %s to join again)",
			err, certFile, nodeFile, certFile)
	}
	var n savedNode
	if err := json.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("reading node identity: %s: %w", path, err)
	}
	if err := api.ValidateName("name", n.Name); err != nil {
		return nil, fmt.Errorf("reading node identity: %s: %w", path, err)
	}
	return &n, nil
}

// handlePath is where the handle of VM name is persisted.
func (a *Agent) handlePath(name string) string {
	return filepath.Join(a.vmsDir, name+handleExt)
}

// vmDir is the per-VM directory handed to the driver as vmm.Spec.StateDir.
func (a *Agent) vmDir(name string) string {
	return filepath.Join(a.vmsDir, name)
}

func (a *Agent) saveHandle(h vmm.Handle) error {
	data, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("save handle of vm %s: %w", h.ID, err)
	}
	return writeFileAtomic(a.handlePath(h.ID), data, 0o600)
}

func (a *Agent) removeHandle(name string) error {
	if err := os.Remove(a.handlePath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove handle of vm %s: %w", name, err)
	}
	return nil
}

func (a *Agent) loadHandle(name string) (vmm.Handle, error) {
	var h vmm.Handle
	data, err := os.ReadFile(a.handlePath(name))
	if err != nil {
		return h, fmt.Errorf("read handle of vm %s: %w", name, err)
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("read handle of vm %s: %w", name, err)
	}
	if h.ID != name {
		return h, fmt.Errorf("read handle of vm %s: it is for vm %q", name, h.ID)
	}
	return h, nil
}
