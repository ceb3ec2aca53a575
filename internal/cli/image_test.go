package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestImageCommands(t *testing.T) {
	t.Parallel()
	data := strings.Repeat("ext4 image data ", 20480) // 320K
	sum := sha256.Sum256([]byte(data))
	digest := hex.EncodeToString(sum[:])
	tests := []struct {
		name string
		// args may use FILE, EMPTY, JUNK and DIR for files made per test.
		args       []string
		wantOut    []string
		wantErr    string
		wantReqs   []string // nil: not checked
		wantStderr []string
		noStderr   []string // must not be on stderr
		wantUpload int64    // Content-Length the server must have seen for "new"
	}{
		{
			name:       "import",
			args:       []string{"image", "import", "new", "FILE"},
			wantOut:    []string{`image "new" imported (320K, sha256 ` + digest + ")\n"},
			wantReqs:   []string{"PUT /v1/images/new"},
			wantStderr: []string{"uploading new", "100%", "(320/320 KiB", "waiting for the server to check the image..."},
			wantUpload: int64(len(data)),
		},
		{
			name:       "import --quiet",
			args:       []string{"image", "import", "new", "FILE", "-q"},
			wantOut:    []string{`image "new" imported`},
			noStderr:   []string{"uploading", "%"},
			wantUpload: int64(len(data)),
		},
		{
			name:       "import --json",
			args:       []string{"--json", "image", "import", "new", "FILE"},
			wantOut:    []string{`"name": "new"`, `"ready": true`, `"sha256": "` + digest + `"`, `"size": 327680`},
			noStderr:   []string{"uploading", "%"},
			wantUpload: int64(len(data)),
		},
		{
			name:       "import replaces an image's data",
			args:       []string{"img", "import", "demo", "FILE", "-q"},
			wantOut:    []string{`image "demo" imported (320K, sha256 ` + digest + ")\n"},
			wantReqs:   []string{"PUT /v1/images/demo"},
			wantUpload: -1,
		},
		{
			name:     "import refused by the server",
			args:     []string{"image", "import", "new", "JUNK"},
			wantErr:  "new is not an ext4 disk image (no ext4 superblock) (invalid)",
			wantReqs: []string{"PUT /v1/images/new"},
		},
		{
			name:     "import missing file",
			args:     []string{"image", "import", "new", "/nonexistent/disk.img"},
			wantErr:  "FILE: /nonexistent/disk.img does not exist",
			wantReqs: []string{},
		},
		{
			name:     "import empty file",
			args:     []string{"image", "import", "new", "EMPTY"},
			wantErr:  "is empty",
			wantReqs: []string{},
		},
		{
			name:     "import directory",
			args:     []string{"image", "import", "new", "DIR"},
			wantErr:  "is a directory, not an image file",
			wantReqs: []string{},
		},
		{
			name:     "import device",
			args:     []string{"image", "import", "new", "/dev/null"},
			wantErr:  "FILE: /dev/null is not a regular file",
			wantReqs: []string{},
		},
		{
			name:     "import bad name",
			args:     []string{"image", "import", "New_1", "FILE"},
			wantErr:  `NAME: "New_1" is not a valid name`,
			wantReqs: []string{},
		},
		{
			name:    "import without FILE",
			args:    []string{"image", "import", "new"},
			wantErr: "missing the image FILE",
		},
		{
			name:    "import three arguments",
			args:    []string{"image", "import", "new", "a", "b"},
			wantErr: "expected an image NAME and a FILE, got 3 arguments",
		},
		{
			name:     "rm",
			args:     []string{"image", "rm", "broken"},
			wantOut:  []string{`image "broken" removed`},
			wantReqs: []string{"DELETE /v1/images/broken"},
		},
		{
			name:    "rm in use",
			args:    []string{"image", "rm", "demo"},
			wantErr: `image "demo" is used by instance "db" (conflict)`,
		},
		{
			name:    "rm missing",
			args:    []string{"image", "delete", "x"},
			wantErr: `image "x" not found`,
		},
		{
			name:     "build-demo bad --size",
			args:     []string{"image", "build-demo", "--size", "lots"},
			wantErr:  `--size: size "lots" is not a number with a unit`,
			wantReqs: []string{},
		},
		{
			name:     "build-demo too small",
			args:     []string{"image", "build-demo", "--size", "32M", "--out", "DIR/demo.img", "-q"},
			wantErr:  "size 32M is below the minimum 64M",
			wantReqs: []string{},
		},
		{
			name:    "build-demo empty --out",
			args:    []string{"image", "build-demo", "--out", ""},
			wantErr: "--out: must not be empty",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			files := map[string]string{"FILE": data, "EMPTY": "", "JUNK": "junk" + data}
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = a
				if content, ok := files[a]; ok {
					args[i] = filepath.Join(e.dir, strings.ToLower(a)+".img")
					if err := os.WriteFile(args[i], []byte(content), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				if dir, ok := strings.CutPrefix(a, "DIR"); ok {
					args[i] = e.dir + dir
				}
			}
			r := e.run(t, runOpts{}, args...)
			r.check(t, tc.wantOut, tc.wantErr)
			if tc.wantReqs != nil {
				if got := e.api.requestLog(); !reflect.DeepEqual(got, tc.wantReqs) && !(len(got) == 0 && len(tc.wantReqs) == 0) {
					t.Errorf("requests = %q, want %q", got, tc.wantReqs)
				}
			}
			for _, s := range tc.wantStderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr lacks %q; stderr:\n%q", s, r.stderr)
				}
			}
			for _, s := range tc.noStderr {
				if strings.Contains(r.stderr, s) {
					t.Errorf("stderr has %q; stderr:\n%q", s, r.stderr)
				}
			}
			if tc.wantUpload > 0 {
				e.api.mu.Lock()
				got := e.api.uploads["new"]
				e.api.mu.Unlock()
				if got != tc.wantUpload {
					t.Errorf("upload Content-Length = %d, want %d", got, tc.wantUpload)
				}
			}
		})
	}
}

// TestImageBuildDemo builds the real demo image when this host has what it
// takes (busybox-static, a kernel with modules, mkfs.ext4).
func TestImageBuildDemo(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds an image")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox")
	}
	if k, _ := filepath.Glob("/boot/vmlinuz-*"); len(k) == 0 {
		t.Skip("no kernel in /boot")
	}
	e := newTestEnv(t)
	out := filepath.Join(e.dir, "demo.img")
	r := e.run(t, runOpts{}, "image", "build-demo", "--out", out, "--size", "64M")
	if r.err != nil && strings.Contains(r.err.Error(), "permission denied") {
		t.Skipf("cannot read the host's kernel: %v", r.err)
	}
	r.check(t, []string{"Built " + out + " (64M, kernel ", "To import it, run:\n\n    ferry image import demo " + out + "\n"}, "")
	for _, s := range []string{"Building the demo image " + out + " (64M)\n", "  kernel ", "  mkfs.ext4 "} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q; stderr:\n%s", s, r.stderr)
		}
	}
	if st, err := os.Stat(out); err != nil || st.Size() != 64<<20 {
		t.Errorf("image file: %v, %v; want 64M", st, err)
	}
	if got := e.api.requestLog(); len(got) != 0 {
		t.Errorf("build-demo made requests %q, want none", got)
	}
}
