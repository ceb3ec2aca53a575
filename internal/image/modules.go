package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// kmod is one kernel module to put into the initramfs.
type kmod struct {
	name     string // normalised: '-' replaced by '_'
	path     string // relative to the modules directory, as in modules.dep
	required bool   // a failure to load it is fatal in the guest
}

// moduleIndex is what the module tree of one kernel version says about its
// modules: the dependency lists of modules.dep, the soft dependencies of
// modules.softdep, the aliases of modules.alias and the built-in modules.
type moduleIndex struct {
	dir     string
	path    map[string]string   // name -> path
	deps    map[string][]string // name -> hard dependencies
	softPre map[string][]string // name -> modules or aliases to load first
	aliases map[string][]string // alias -> names
	builtin map[string]bool
}

// modName turns a module path or name into its canonical name.
func modName(p string) string {
	base := filepath.Base(p)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// loadModuleIndex reads modules.dep, modules.softdep, modules.alias and
// modules.builtin from dir (/lib/modules/<version>). Only modules.dep is
// required.
func loadModuleIndex(dir string) (*moduleIndex, error) {
	ix := &moduleIndex{
		dir:     dir,
		path:    map[string]string{},
		deps:    map[string][]string{},
		softPre: map[string][]string{},
		aliases: map[string][]string{},
		builtin: map[string]bool{},
	}
	err := eachLine(filepath.Join(dir, "modules.dep"), true, func(line string) {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return
		}
		n := modName(mod)
		ix.path[n] = strings.TrimSpace(mod)
		for _, d := range strings.Fields(deps) {
			ix.deps[n] = append(ix.deps[n], modName(d))
		}
	})
	if err != nil {
		return nil, err
	}
	err = eachLine(filepath.Join(dir, "modules.softdep"), false, func(line string) {
		// softdep MODULE pre: A B post: C
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "softdep" {
			return
		}
		n := modName(f[1])
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					ix.softPre[n] = append(ix.softPre[n], w)
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	err = eachLine(filepath.Join(dir, "modules.alias"), false, func(line string) {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "alias" && !strings.ContainsAny(f[1], "*?[") {
			ix.aliases[f[1]] = append(ix.aliases[f[1]], modName(f[2]))
		}
	})
	if err != nil {
		return nil, err
	}
	err = eachLine(filepath.Join(dir, "modules.builtin"), false, func(line string) {
		ix.builtin[modName(line)] = true
	})
	if err != nil {
		return nil, err
	}
	return ix, nil
}

// eachLine calls fn for every non-empty, non-comment line of path. A missing
// file is an error only if required.
func eachLine(path string, required bool, fn func(string)) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read module index: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fn(line)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read module index %s: %w", path, err)
	}
	return nil
}

// resolve returns the modules to load, in an order where every module comes
// after its hard and soft ("pre") dependencies. want and optional are module
// names; a name of want that is neither a module nor built in is an error,
// one of optional is skipped. Built-in modules are left out. Modules pulled
// in only by a soft dependency are optional: several of them may provide
// the same alias (crc32c_intel needs SSE4.2, crc32c_generic does not), and
// the guest loads what it can.
func (ix *moduleIndex) resolve(want, optional []string) ([]kmod, error) {
	var order []kmod
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(n string, required bool, chain []string) error
	visit = func(n string, required bool, chain []string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), n)
		case 2:
			if required {
				// Upgrade a module first seen as optional.
				for i := range order {
					if order[i].name == n && !order[i].required {
						order[i].required = true
						for _, d := range ix.deps[n] {
							if err := visit(d, true, append(chain, n)); err != nil {
								return err
							}
						}
					}
				}
			}
			return nil
		}
		p, ok := ix.path[n]
		if !ok {
			state[n] = 2
			if ix.builtin[n] || !required {
				return nil
			}
			return fmt.Errorf("kernel module %s is neither in %s nor built in", n, filepath.Join(ix.dir, "modules.dep"))
		}
		state[n] = 1
		chain = append(chain, n)
		for _, s := range ix.softPre[n] {
			for _, a := range ix.expand(s) {
				if err := visit(a, false, chain); err != nil {
					return err
				}
			}
		}
		for _, d := range ix.deps[n] {
			if err := visit(d, required, chain); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, kmod{name: n, path: p, required: required})
		return nil
	}
	for _, n := range want {
		if err := visit(modName(n), true, nil); err != nil {
			return nil, err
		}
	}
	for _, n := range optional {
		if err := visit(modName(n), false, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// expand turns a soft dependency (a module name or an alias) into module
// names, sorted by name.
func (ix *moduleIndex) expand(s string) []string {
	if _, ok := ix.path[modName(s)]; ok {
		return []string{modName(s)}
	}
	names := slices.Clone(ix.aliases[s])
	slices.Sort(names)
	return slices.Compact(names)
}

// readModule returns the contents of a module file, decompressed: busybox
// insmod reads only plain ELF modules. Debian 12's kernels ship plain .ko
// files; .ko.gz is decompressed in Go, .ko.xz and .ko.zst with the xz and
// zstd programs when a kernel ships those.
func readModule(ctx context.Context, path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		return b, nil
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", path, err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", path, err)
		}
		return b, nil
	case strings.HasSuffix(path, ".ko.xz"):
		return decompressWith(ctx, "xz", path)
	case strings.HasSuffix(path, ".ko.zst"):
		return decompressWith(ctx, "zstd", path)
	}
	return nil, fmt.Errorf("module %s: unknown file type (want .ko, .ko.gz, .ko.xz or .ko.zst)", path)
}

func decompressWith(ctx context.Context, tool, path string) ([]byte, error) {
	if _, err := exec.LookPath(tool); err != nil {
		return nil, fmt.Errorf("module %s is compressed and %s is not installed: %w", path, tool, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-dc", "--", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("decompress module %s with %s: %w: %s", path, tool, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
