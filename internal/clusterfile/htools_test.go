package clusterfile

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// drbdCluster is 4 nodes in two racks and 8 replicated instances, two of
// them in an anti-affinity group.
func drbdCluster() scheduler.Snapshot {
	s := scheduler.Snapshot{Policy: scheduler.Policy{CPURatio: 2.5, SpreadLabel: "rack"}}
	for i := range 4 {
		s.Nodes = append(s.Nodes, scheduler.Node{
			Name:     fmt.Sprintf("node%d", i+1),
			Capacity: scheduler.Resources{CPUs: 16, MemMiB: 65536, DiskMiB: 1 << 20},
			Labels:   map[string]string{"rack": fmt.Sprintf("r%d", i/2+1)},
		})
	}
	for i := range 8 {
		in := scheduler.Instance{
			Name:      fmt.Sprintf("inst%d", i+1),
			Size:      scheduler.Resources{CPUs: 2, MemMiB: 4096, DiskMiB: 40960},
			Primary:   s.Nodes[i%4].Name,
			Secondary: s.Nodes[(i+1)%4].Name,
		}
		if i < 2 {
			in.Group = "service:web"
		}
		s.Instances = append(s.Instances, in)
	}
	return s
}

// TestGanetiWithHtools has Ganeti's own tools read the files WriteGaneti
// writes (and the test files) and checks they see the same cluster.
func TestGanetiWithHtools(t *testing.T) {
	for _, tool := range []string{"hinfo", "hcheck", "hbal", "hspace"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not on PATH, so the files are not checked with Ganeti's htools: install the Debian package ganeti-htools (scripts/setup does)", tool)
		}
	}
	dir := t.TempDir()
	type file struct {
		name string
		s    scheduler.Snapshot
	}
	files := []file{{"drbd", drbdCluster()}, {"sample", sample()}}
	for _, path := range goodFiles(t, "ganeti/*.txt") {
		s, err := ReadGaneti(bytes.NewReader(readFile(t, path)))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file{"rewritten-" + filepath.Base(path), s})
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteGaneti(&b, f.s); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, f.name+".txt")
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			// Expect what ReadGaneti reads back (with the group names).
			s, err := ReadGaneti(&b)
			if err != nil {
				t.Fatal(err)
			}
			checkWithHtools(t, path, s, true)
		})
	}
	// The test files themselves are what htools reads, too.
	for _, path := range goodFiles(t, "ganeti/*.txt") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s, err := ReadGaneti(bytes.NewReader(readFile(t, path)))
			if err != nil {
				t.Fatal(err)
			}
			checkWithHtools(t, path, s, false)
		})
	}
}

// checkWithHtools runs hinfo, hcheck, hspace and hbal on path and checks
// they load s's nodes, instances and groups. With written, path is what
// WriteGaneti wrote, whose cores are the nodes' capacity and whose groups
// all have the vcpu ratio, so hspace's counts of cores and vcpus must be
// those of s too.
func checkWithHtools(t *testing.T, path string, s scheduler.Snapshot, written bool) {
	t.Helper()
	groups := make(map[string]bool)
	var cpus int64
	size := scheduler.Resources{CPUs: 1, MemMiB: 512, DiskMiB: 1024}
	for _, n := range s.Nodes {
		groups[n.Labels[groupLabel]] = true
		cpus += n.Capacity.CPUs // hspace counts offline nodes' too
	}
	for _, in := range s.Instances {
		size.CPUs = max(size.CPUs, in.Size.CPUs)
		size.MemMiB = max(size.MemMiB, in.Size.MemMiB)
		size.DiskMiB = max(size.DiskMiB, in.Size.DiskMiB)
	}
	loaded := fmt.Sprintf("Loaded %d nodes, %d instances, %d node group", len(s.Nodes), len(s.Instances), len(groups))
	out := runTool(t, "hinfo", "-t", path)
	if !strings.Contains(out, loaded) {
		t.Errorf("hinfo did not print %q:\n%s", loaded, out)
	}
	t.Logf("hinfo -t %s:\n%s", path, out)

	out = runTool(t, "hcheck", "-t", path, "--machine-readable")
	if !strings.Contains(out, "HCHECK_OK=1") {
		t.Errorf("hcheck did not end with HCHECK_OK=1:\n%s", out)
	}

	// hspace, with the largest instance as the standard one. Its tiered
	// pass starts from the same spec: from the policy's maximum (as large
	// as a node) it shrinks the disk 256 MiB at a time, for minutes.
	spec := fmt.Sprintf("%d,%d,%d", size.DiskMiB, size.MemMiB, size.CPUs)
	alloc := "--standard-alloc=" + spec
	out = runTool(t, "hspace", "-t", path, "--machine-readable", alloc, "--tiered-alloc="+spec)
	want := map[string]int64{
		"HTS_CLUSTER_NODES": int64(len(s.Nodes)),
		"HTS_INI_INST_CNT":  int64(len(s.Instances)),
	}
	if written {
		want["HTS_CLUSTER_CPU"] = cpus
		// htools takes the vcpu ratio from the groups' policy lines.
		want["HTS_CLUSTER_VCPU"] = int64(float64(cpus) * s.Policy.CPURatio)
	}
	for key, w := range want {
		if got := machineValue(t, out, key); got != strconv.FormatInt(w, 10) {
			t.Errorf("hspace %s: %s=%s, want %d", alloc, key, got, w)
		}
	}
	t.Logf("hspace %s: %s allocated", alloc, machineValue(t, out, "HTS_ALLOC_INSTANCES"))

	// hbal balances one group at a time; -G picks it.
	for g := range groups {
		out = runTool(t, "hbal", "-t", path, "-C", "-G", g)
		if want := fmt.Sprintf("Loaded %d nodes, %d instances\n", len(s.Nodes), len(s.Instances)); !strings.Contains(out, want) {
			t.Errorf("hbal did not print %q:\n%s", want, out)
		}
		t.Logf("hbal -t %s -C -G %s:\n%s", path, g, out)
	}
}

// runTool runs an htools program and returns what it printed; a parse
// error ("Error: ...", exit status 1 with nothing on stdout) fails t.
func runTool(t *testing.T, tool string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if strings.Contains(stderr.String(), "Error") || (err != nil && stdout.Len() == 0) {
		t.Fatalf("%s %s: %v\n%s%s", tool, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// machineValue returns KEY's value in --machine-readable output.
func machineValue(t *testing.T, out, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + key + `=(.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %s in:\n%s", key, out)
	}
	return strings.Trim(m[1], "'")
}
