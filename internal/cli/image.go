package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/ferrycluster/ferry/internal/image"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func (a *app) newImageCmd() *cobra.Command {
	cmd := newGroup("image", "Build, import, list and remove the images instances are cloned from", "images", "img")
	cmd.AddCommand(
		a.newImageListCmd(),
		a.newImageImportCmd(),
		a.newImageRemoveCmd(),
		a.newImageBuildDemoCmd(),
	)
	return cmd
}

func (a *app) newImageListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List registered images",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := fetch(a, cmd, "image", "", (*client.Client).ListImages)
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), list)
			}
			items := list.Items
			sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
			now := a.opts.Now()
			t := newTable(a.stdout(), "NAME", "READY", "SIZE", "SHA256", "SOURCE", "AGE")
			for _, im := range items {
				size := "-"
				if im.Size > 0 {
					size = fmtBytes(im.Size)
				}
				t.row(im.Name, yesNo(im.Ready), size, shortHash(im.SHA256), im.Source, ago(now, im.CreatedAt))
			}
			return t.flush()
		},
	}
}

// shortHash is the start of a hex digest, enough to tell images apart.
func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// yesNo formats a boolean for a table.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (a *app) newImageImportCmd() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Upload a disk image file and register it as NAME",
		Long: `Upload a raw disk image to the server and register it as NAME; the data of an
existing image of that name is replaced. The server keeps the image only if it
is an ext4 disk with /boot/vmlinuz and /boot/initrd.img, as
` + "`ferry image build-demo`" + ` makes. A progress bar goes to stderr, unless --quiet
or --json is given.`,
		Example: "  ferry image build-demo --out demo.img\n  ferry image import demo demo.img",
		Args:    importArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runImageImport(cmd, args[0], args[1], quiet || a.g.JSON)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "do not show the progress bar")
	return cmd
}

// importArgs accepts NAME and FILE.
func importArgs(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 2:
		return nil
	case len(args) < 2:
		missing := "NAME and FILE"
		if len(args) == 1 {
			missing = "FILE"
		}
		return withHint(fmt.Errorf("missing the image %s", missing), usageHint(cmd))
	}
	return withHint(fmt.Errorf("expected an image NAME and a FILE, got %d arguments: %s", len(args), strings.Join(args, " ")), usageHint(cmd))
}

// openImageFile opens the file to import, refusing what cannot be an
// image: a missing file, a directory or device, an empty file.
func openImageFile(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("FILE: %s does not exist", path)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("FILE: %w", err)
	}
	st, err := f.Stat()
	switch {
	case err != nil:
		err = fmt.Errorf("FILE: %w", err)
	case st.IsDir():
		err = fmt.Errorf("FILE: %s is a directory, not an image file", path)
	case !st.Mode().IsRegular():
		err = fmt.Errorf("FILE: %s is not a regular file (%s)", path, st.Mode().Type())
	case st.Size() == 0:
		err = fmt.Errorf("FILE: %s is empty", path)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

func (a *app) runImageImport(cmd *cobra.Command, name, path string, quiet bool) error {
	if err := api.ValidateName("NAME", name); err != nil {
		return err
	}
	f, size, err := openImageFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c, conn, err := a.newClient()
	if err != nil {
		return err
	}
	var progress func(int64)
	barDone := true
	if !quiet {
		bar := progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(a.stderr()),
			progressbar.OptionSetDescription("uploading "+name),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetRenderBlankState(true),
		)
		barDone = false
		progress = func(sent int64) {
			_ = bar.Set64(sent)
			if sent == size {
				barDone = true
				fmt.Fprintf(a.stderr(), "\nwaiting for the server to check the image...\n")
			}
		}
	}
	// No request timeout: a large image takes as long as it takes.
	im, err := c.UploadImage(cmd.Context(), name, f, size, progress)
	if !barDone {
		fmt.Fprintln(a.stderr()) // end the bar's line
	}
	if err != nil {
		return explain(err, conn, "image", "")
	}
	if a.g.JSON {
		return printJSON(a.stdout(), im)
	}
	fmt.Fprintf(a.stdout(), "image %q imported (%s, sha256 %s)\n", im.Name, fmtBytes(im.Size), dash(clean(im.SHA256)))
	return nil
}

func (a *app) newImageRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete", "remove"},
		Short:   "Remove an image no instance uses",
		Args:    exactlyOneName("image"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			if err := c.DeleteImage(ctx, args[0]); err != nil {
				return explain(err, conn, "image", args[0])
			}
			fmt.Fprintf(a.stdout(), "image %q removed\n", args[0])
			return nil
		},
	}
}

// demoResult is what `image build-demo --json` prints.
type demoResult struct {
	Path          string    `json:"path"`
	Size          api.Bytes `json:"size"`
	KernelVersion string    `json:"kernelVersion"`
	Modules       []string  `json:"modules,omitempty"`
}

func (a *app) newImageBuildDemoCmd() *cobra.Command {
	var (
		out, size, kernel string
		quiet             bool
	)
	cmd := &cobra.Command{
		Use:   "build-demo",
		Short: "Build the demo image on this machine (no server needed)",
		Long: `Build ferry's demo image into a local file: one ext4 filesystem holding busybox,
this host's kernel and an initramfs. Its guest answers GET / on port 80 with its
name and boot count, and powers off cleanly when asked.

It needs busybox-static (/bin/busybox), a kernel in /boot with its modules in
/lib/modules, and mkfs.ext4 (e2fsprogs). No server is needed; import the
result with ` + "`ferry image import`" + `.`,
		Example: "  ferry image build-demo --out demo.img --size 256M\n  ferry image import demo demo.img",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out: must not be empty")
			}
			sz, err := api.ParseBytes(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			opts := image.DemoOptions{Out: out, Size: sz, KernelVersion: kernel}
			if !quiet {
				fmt.Fprintf(a.stderr(), "Building the demo image %s (%s)\n", out, fmtBytes(sz))
				opts.Progress = func(step string) { fmt.Fprintf(a.stderr(), "  %s\n", clean(step)) }
			}
			info, err := image.BuildDemo(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), demoResult{Path: info.Path, Size: info.Size, KernelVersion: info.KernelVersion, Modules: info.Modules})
			}
			path := info.Path
			if abs, err := filepath.Abs(path); err == nil {
				path = abs
			}
			w := a.stdout()
			fmt.Fprintf(w, "Built %s (%s, kernel %s).\n", path, fmtBytes(info.Size), dash(info.KernelVersion))
			fmt.Fprintf(w, "To import it, run:\n\n    ferry image import demo %s\n", shellQuote(path))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&out, "out", "demo.img", "image file to write (replaced atomically)")
	fl.StringVar(&size, "size", "256M", "size of the image, at least 64M")
	fl.StringVar(&kernel, "kernel", "", "kernel version to copy from /boot (default: the newest with modules)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "do not print the build steps")
	return cmd
}
