package clusterfile

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// Sections of a Ganeti text file, in file order.
const (
	secGroups    = "groups"
	secNodes     = "nodes"
	secInstances = "instances"
	secTags      = "cluster tags"
	secPolicy    = "ipolicy"
)

// Tags and labels with a meaning here.
const (
	// exclusionTagPrefix + P makes instance tags starting with P
	// exclusion tags (anti-affinity groups).
	exclusionTagPrefix = "htools:iextags:"
	// locationTagPrefix + P makes node tags "P:..." failure domains.
	locationTagPrefix = "htools:nlocation:"
	// unschedulableTag on a node marks it unschedulable: ferry's own tag,
	// which htools ignores.
	unschedulableTag = "ferry:unschedulable"
	// groupLabel is the node label that holds the node's Ganeti group.
	groupLabel = "group"
)

// What WriteGaneti puts where the snapshot has nothing to say.
const (
	// ganetiNodeMemMiB is the memory written as used by each node's own
	// OS: total memory is the capacity plus this, so that no node has a
	// total of zero (htools divides by it).
	ganetiNodeMemMiB = 512
	// ganetiDefaultCPURatio is Ganeti's default vcpu ratio, written (and
	// read) when the policy leaves CPURatio at 0.
	ganetiDefaultCPURatio = 4
	// ganetiSpindleRatio is written as the spindle ratio, with one spindle
	// per node and a spindle use of 1 per instance: htools then never
	// refuses a placement for want of spindles, which ferry does not model.
	ganetiSpindleRatio = 1000000000
	// ganetiDefaultGroup names the group of nodes without a group label.
	ganetiDefaultGroup = "default"
)

// ReadGaneti reads the text format of Ganeti's htools (hscan's output,
// and what hbal, hspace and hcheck take with -t): sections for node
// groups, nodes, instances, cluster tags and instance policies, separated
// by single empty lines, with '|' between the columns of a line. See
// docs/cluster-files.md for the mapping onto a snapshot. Errors are
// *Error values naming the line, section and field, such as
//
//	line 17 (nodes section), field 4 "free memory": "12x" is not a number
func ReadGaneti(r io.Reader) (scheduler.Snapshot, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return scheduler.Snapshot{}, fmt.Errorf("reading Ganeti file: %w", err)
	}
	return parseGaneti(string(data))
}

// gline is one line of a Ganeti file, split into fields.
type gline struct {
	num     int
	section string
	text    string
	fields  []string
}

func (l *gline) errorf(format string, args ...any) *Error {
	return &Error{Line: l.num, Section: l.section, Err: fmt.Errorf(format, args...)}
}

func (l *gline) fieldErrorf(field int, name, format string, args ...any) *Error {
	return &Error{Line: l.num, Section: l.section, Field: field, Name: name, Err: fmt.Errorf(format, args...)}
}

// has reports whether the line has field (1-based).
func (l *gline) has(field int) bool { return len(l.fields) >= field }

func (l *gline) get(field int) string { return l.fields[field-1] }

// atLeast checks the line has at least n fields.
func (l *gline) atLeast(n int, names string) error {
	if len(l.fields) < n {
		return l.errorf("%d fields, want at least %d (%s)", len(l.fields), n, names)
	}
	return nil
}

// int parses an integer field of any sign.
func (l *gline) int(field int, name string) (int64, error) {
	s := l.get(field)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if _, ferr := strconv.ParseFloat(s, 64); ferr == nil {
			return 0, l.fieldErrorf(field, name, "%q is not a whole number", s)
		}
		return 0, l.fieldErrorf(field, name, "%q is not a number", s)
	}
	return v, nil
}

// count parses a non-negative integer field. With whole, a number with a
// fraction of zero ("1024.0") is taken too: htools keeps some totals as
// floating point.
func (l *gline) count(field int, name string, whole bool) (int64, error) {
	s := l.get(field)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		switch {
		case ferr != nil:
			return 0, l.fieldErrorf(field, name, "%q is not a number", s)
		case !whole || f != math.Trunc(f):
			return 0, l.fieldErrorf(field, name, "%q is not a whole number", s)
		case math.Abs(f) >= 1<<62:
			return 0, l.fieldErrorf(field, name, "%s is too large", s)
		}
		v = int64(f)
	}
	if v < 0 {
		return 0, l.fieldErrorf(field, name, "%d is negative", v)
	}
	return v, nil
}

// size parses a count that must also be at most MaxSize.
func (l *gline) size(field int, name string) (int64, error) {
	v, err := l.count(field, name, false)
	if err != nil {
		return 0, err
	}
	if err := checkSize(v); err != nil {
		return 0, &Error{Line: l.num, Section: l.section, Field: field, Name: name, Err: err}
	}
	return v, nil
}

// ratio parses a finite, non-negative floating-point field.
func (l *gline) ratio(field int, name string) (float64, error) {
	s := l.get(field)
	v, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !isRangeError(err):
		return 0, l.fieldErrorf(field, name, "%q is not a number", s)
	case err != nil || math.IsInf(v, 0) || math.IsNaN(v):
		return 0, l.fieldErrorf(field, name, "%q is not a finite number", s)
	case v < 0:
		return 0, l.fieldErrorf(field, name, "%s is negative", s)
	}
	return v, nil
}

func isRangeError(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// oneOf checks that a field is one of the allowed values.
func (l *gline) oneOf(field int, name string, allowed ...string) (string, error) {
	s := l.get(field)
	if slices.Contains(allowed, s) {
		return s, nil
	}
	return "", l.fieldErrorf(field, name, "%q is not one of %s", s, strings.Join(allowed, ", "))
}

// splitList splits a comma-separated list as htools does, dropping empty
// elements.
func splitList(s string) []string {
	var out []string
	for t := range strings.SplitSeq(s, ",") {
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

func instanceStatuses() []string {
	return []string{"running", "ADMIN_down", "ADMIN_offline", "ERROR_down", "ERROR_up",
		"ERROR_nodedown", "ERROR_nodeoffline", "ERROR_wrongnode", "USER_down"}
}

func diskTemplates() []string {
	return []string{"drbd", "plain", "sharedfile", "diskless", "file", "blockdev", "rbd", "ext", "gluster"}
}

// sharedTemplate reports whether a disk template keeps the disk off the
// nodes' local storage, so that any node can run the instance.
func sharedTemplate(t string) bool {
	switch t {
	case "sharedfile", "rbd", "ext", "blockdev", "gluster":
		return true
	}
	return false
}

// ganetiReader holds what has been read so far.
type ganetiReader struct {
	groupByUUID map[string]string // uuid -> name
	groupNames  map[string]int    // name -> line
	groupUUIDs  map[string]int    // uuid -> line
	nodeLine    map[string]int
	instLine    map[string]int
	s           scheduler.Snapshot
}

func parseGaneti(text string) (scheduler.Snapshot, error) {
	sections, err := splitSections(text)
	if err != nil {
		return scheduler.Snapshot{}, err
	}
	if len(sections) < 4 {
		return scheduler.Snapshot{}, &Error{Err: fmt.Errorf(
			"%d sections, want 4 or 5 (groups, nodes, instances, cluster tags, ipolicy) separated by single empty lines",
			len(sections))}
	}
	// htools ignores sections after the fifth: so does this.
	names := []string{secGroups, secNodes, secInstances, secTags, secPolicy}
	for i := range min(len(sections), len(names)) {
		for j := range sections[i] {
			sections[i][j].section = names[i]
		}
	}
	g := ganetiReader{
		groupByUUID: make(map[string]string),
		groupNames:  make(map[string]int),
		groupUUIDs:  make(map[string]int),
		nodeLine:    make(map[string]int),
		instLine:    make(map[string]int),
	}
	for i := range sections[0] {
		if err := g.group(&sections[0][i]); err != nil {
			return scheduler.Snapshot{}, err
		}
	}
	for i := range sections[1] {
		if err := g.node(&sections[1][i]); err != nil {
			return scheduler.Snapshot{}, err
		}
	}
	for i := range sections[2] {
		if err := g.instance(&sections[2][i]); err != nil {
			return scheduler.Snapshot{}, err
		}
	}
	g.clusterTags(sections[3])
	ratios := make(map[string]float64) // by owner
	if len(sections) > 4 {
		owners := make(map[string]int)
		for i := range sections[4] {
			owner, ratio, err := g.ipolicy(&sections[4][i], owners)
			if err != nil {
				return scheduler.Snapshot{}, err
			}
			ratios[owner] = ratio
		}
	}
	g.s.Policy.CPURatio = g.cpuRatio(ratios)
	normalize(&g.s)
	if err := Validate(g.s); err != nil {
		// Every check above should have caught it first.
		return scheduler.Snapshot{}, fmt.Errorf("clusterfile: internal error: Ganeti file read into an invalid snapshot: %w", err)
	}
	return g.s, nil
}

// splitSections splits text into lines and the lines into sections at
// every empty line, as htools does: two empty lines in a row make an empty
// section. A final "\r" on a line is dropped.
func splitSections(text string) ([][]gline, error) {
	if text == "" {
		return nil, nil
	}
	text = strings.TrimSuffix(text, "\n")
	var sections [][]gline
	var cur []gline
	num := 0
	for line := range strings.SplitSeq(text, "\n") {
		num++
		line = strings.TrimSuffix(line, "\r")
		if !utf8.ValidString(line) {
			return nil, &Error{Line: num, Err: fmt.Errorf("not valid UTF-8")}
		}
		if strings.ContainsRune(line, '\r') {
			return nil, &Error{Line: num, Err: fmt.Errorf("carriage return inside the line")}
		}
		if line == "" {
			sections = append(sections, cur)
			cur = nil
			continue
		}
		cur = append(cur, gline{num: num, text: line, fields: strings.Split(line, "|")})
	}
	return append(sections, cur), nil
}

// name checks a name field: non-empty and not seen before.
func (l *gline) name(field int, what string, seen map[string]int) (string, error) {
	s := l.get(field)
	if s == "" {
		return "", l.fieldErrorf(field, what, "empty")
	}
	if prev, dup := seen[s]; dup {
		return "", l.fieldErrorf(field, what, "%q is used twice (first on line %d)", s, prev)
	}
	seen[s] = l.num
	return s, nil
}

func (g *ganetiReader) group(l *gline) error {
	if err := l.atLeast(4, "name|uuid|allocation policy|tags"); err != nil {
		return err
	}
	name, err := l.name(1, "group name", g.groupNames)
	if err != nil {
		return err
	}
	uuid, err := l.name(2, "group uuid", g.groupUUIDs)
	if err != nil {
		return err
	}
	if _, err := l.oneOf(3, "allocation policy", "preferred", "last_resort", "unallocable"); err != nil {
		return err
	}
	g.groupByUUID[uuid] = name
	return nil
}

func (g *ganetiReader) node(l *gline) error {
	if err := l.atLeast(9, "name|total memory|node memory|free memory|total disk|free disk|cores|offline|group uuid"); err != nil {
		return err
	}
	name, err := l.name(1, "node name", g.nodeLine)
	if err != nil {
		return err
	}
	role, err := l.oneOf(8, "offline/role", "N", "M", "Y")
	if err != nil {
		return err
	}
	group, ok := g.groupByUUID[l.get(9)]
	if !ok {
		return l.fieldErrorf(9, "group uuid", "unknown group %q", l.get(9))
	}
	n := scheduler.Node{Name: name, Offline: role == "Y", Labels: map[string]string{groupLabel: group}}
	// htools takes a node with an unknown ("?") size as offline and empty.
	if slices.Contains(l.fields[1:7], "?") {
		n.Offline = true
	} else if n.Capacity, err = nodeCapacity(l); err != nil {
		return err
	}
	if l.has(11) {
		for _, tag := range splitList(l.get(11)) {
			if tag == unschedulableTag {
				n.Unschedulable = true
				continue
			}
			k, v, colon := strings.Cut(tag, ":")
			if colon && k == "" {
				continue // not a key:value tag, nor a bare key
			}
			if _, dup := n.Labels[k]; !dup {
				n.Labels[k] = v
			}
		}
	}
	g.s.Nodes = append(g.s.Nodes, n)
	return nil
}

// nodeCapacity reads the sizes of a node line and checks its other
// numeric fields as htools would.
func nodeCapacity(l *gline) (scheduler.Resources, error) {
	var r scheduler.Resources
	tMem, err := l.count(2, "total memory", true)
	if err != nil {
		return r, err
	}
	nMem, err := l.count(3, "node memory", false)
	if err != nil {
		return r, err
	}
	if nMem > tMem {
		return r, l.fieldErrorf(3, "node memory", "%d is more than the total memory %d", nMem, tMem)
	}
	if _, err := l.int(4, "free memory"); err != nil {
		return r, err
	}
	tDsk, err := l.count(5, "total disk", true)
	if err != nil {
		return r, err
	}
	if _, err := l.int(6, "free disk"); err != nil {
		return r, err
	}
	tCPU, err := l.count(7, "physical cores", true)
	if err != nil {
		return r, err
	}
	var osCPU int64
	if l.has(10) {
		if _, err := l.int(10, "spindle count"); err != nil {
			return r, err
		}
	}
	if l.has(12) {
		if _, err := l.oneOf(12, "exclusive storage", "Y", "N"); err != nil {
			return r, err
		}
	}
	if l.has(13) {
		if _, err := l.int(13, "free spindles"); err != nil {
			return r, err
		}
	}
	if l.has(14) {
		if osCPU, err = l.count(14, "node OS cpus", false); err != nil {
			return r, err
		}
		if osCPU > tCPU {
			return r, l.fieldErrorf(14, "node OS cpus", "%d is more than the %d physical cores", osCPU, tCPU)
		}
	}
	if l.has(15) {
		if _, err := l.ratio(15, "cpu speed"); err != nil {
			return r, err
		}
	}
	r = scheduler.Resources{CPUs: tCPU - osCPU, MemMiB: tMem - nMem, DiskMiB: tDsk}
	for _, c := range []struct {
		field int
		name  string
		v     int64
	}{{7, "physical cores", r.CPUs}, {2, "total memory", r.MemMiB}, {5, "total disk", r.DiskMiB}} {
		if c.v > MaxSize {
			return r, l.fieldErrorf(c.field, c.name, "leaves a capacity of %d, more than %d", c.v, MaxSize)
		}
	}
	return r, nil
}

func (g *ganetiReader) instance(l *gline) error {
	if err := l.atLeast(10, "name|memory|disk|vcpus|status|auto_balance|primary|secondary|disk template|tags"); err != nil {
		return err
	}
	name, err := l.name(1, "instance name", g.instLine)
	if err != nil {
		return err
	}
	in := scheduler.Instance{Name: name}
	if in.Size.MemMiB, err = l.size(2, "memory"); err != nil {
		return err
	}
	if in.Size.DiskMiB, err = l.size(3, "disk size"); err != nil {
		return err
	}
	if in.Size.CPUs, err = l.size(4, "vcpus"); err != nil {
		return err
	}
	if _, err := l.oneOf(5, "status", instanceStatuses()...); err != nil {
		return err
	}
	if _, err := l.oneOf(6, "auto_balance", "Y", "N"); err != nil {
		return err
	}
	primary, secondary := l.get(7), l.get(8)
	if primary == "" {
		return l.fieldErrorf(7, "primary node", "empty")
	}
	if _, ok := g.nodeLine[primary]; !ok {
		return l.fieldErrorf(7, "primary node", "unknown node %q", primary)
	}
	if _, ok := g.nodeLine[secondary]; secondary != "" && !ok {
		return l.fieldErrorf(8, "secondary node", "unknown node %q", secondary)
	}
	template, err := l.oneOf(9, "disk template", diskTemplates()...)
	if err != nil {
		return err
	}
	in.Primary = primary
	switch {
	case template == "drbd":
		if secondary == primary {
			return l.fieldErrorf(8, "secondary node", "%q is also the primary node", secondary)
		}
		in.Secondary = secondary
	case sharedTemplate(template):
		in.SharedDisk = true
	}
	in.Tags = splitList(l.get(10))
	if l.has(11) {
		if _, err := l.int(11, "spindle use"); err != nil {
			return err
		}
	}
	if l.has(12) && l.get(12) != "-" {
		if _, err := l.int(12, "disk spindles"); err != nil {
			return err
		}
	}
	if l.has(13) {
		if _, err := l.oneOf(13, "forthcoming", "Y", "N"); err != nil {
			return err
		}
	}
	g.s.Instances = append(g.s.Instances, in)
	return nil
}

// clusterTags reads the exclusion and location tags: an instance's Group
// is its first tag that starts with an exclusion prefix (htools compares
// prefixes as plain strings), and the first location prefix is the
// policy's SpreadLabel.
func (g *ganetiReader) clusterTags(lines []gline) {
	var prefixes []string
	for _, l := range lines {
		if p, ok := strings.CutPrefix(l.text, exclusionTagPrefix); ok && p != "" {
			prefixes = append(prefixes, p)
		}
		if p, ok := strings.CutPrefix(l.text, locationTagPrefix); ok && p != "" && g.s.Policy.SpreadLabel == "" {
			g.s.Policy.SpreadLabel = p
		}
	}
	for i := range g.s.Instances {
		g.s.Instances[i].Group = exclusionTag(g.s.Instances[i].Tags, prefixes)
	}
}

// exclusionTag returns the first tag starting with one of the prefixes.
func exclusionTag(tags, prefixes []string) string {
	for _, t := range tags {
		for _, p := range prefixes {
			if strings.HasPrefix(t, p) {
				return t
			}
		}
	}
	return ""
}

// ipolicy checks a policy line and returns its owner ("" for the
// cluster) and vcpu ratio.
func (g *ganetiReader) ipolicy(l *gline, owners map[string]int) (string, float64, error) {
	if err := l.atLeast(6, "owner|std spec|min/max specs|disk templates|vcpu ratio|spindle ratio"); err != nil {
		return "", 0, err
	}
	owner := l.get(1)
	if _, ok := g.groupNames[owner]; owner != "" && !ok {
		return "", 0, l.fieldErrorf(1, "owner", "unknown group %q", owner)
	}
	if prev, dup := owners[owner]; dup {
		what := "the cluster"
		if owner != "" {
			what = fmt.Sprintf("group %q", owner)
		}
		return "", 0, l.fieldErrorf(1, "owner", "second policy for %s (first on line %d)", what, prev)
	}
	owners[owner] = l.num
	if err := l.spec(2, "std spec", l.get(2)); err != nil {
		return "", 0, err
	}
	if minmax := l.get(3); minmax != "" {
		specs := strings.Split(minmax, ";")
		if len(specs)%2 != 0 {
			return "", 0, l.fieldErrorf(3, "min/max specs", "%d specs, want min;max pairs", len(specs))
		}
		for _, spec := range specs {
			if err := l.spec(3, "min/max specs", spec); err != nil {
				return "", 0, err
			}
		}
	}
	for _, t := range splitList(l.get(4)) {
		if !slices.Contains(diskTemplates(), t) {
			return "", 0, l.fieldErrorf(4, "disk templates", "%q is not one of %s", t, strings.Join(diskTemplates(), ", "))
		}
	}
	ratio, err := l.ratio(5, "vcpu ratio")
	if err != nil {
		return "", 0, err
	}
	if ratio == 0 {
		return "", 0, l.fieldErrorf(5, "vcpu ratio", "0 allows no vcpus at all")
	}
	if _, err := l.ratio(6, "spindle ratio"); err != nil {
		return "", 0, err
	}
	return owner, ratio, nil
}

// cpuRatio picks the one vcpu ratio of the snapshot from the policies'
// (by owner, "" for the cluster). htools places a group's instances under
// the group's own policy line, or Ganeti's default (4) when the group has
// none; the cluster line is only a default for new groups. So the ratio is
// the one all groups with nodes share; when they differ, the cluster's.
func (g *ganetiReader) cpuRatio(ratios map[string]float64) float64 {
	cluster, ok := ratios[""]
	if !ok {
		cluster = ganetiDefaultCPURatio
	}
	shared := 0.0
	for _, n := range g.s.Nodes {
		r, ok := ratios[n.Labels[groupLabel]]
		if !ok {
			r = ganetiDefaultCPURatio
		}
		switch shared {
		case 0:
			shared = r
		case r:
		default:
			return cluster
		}
	}
	if shared == 0 {
		return cluster
	}
	return shared
}

// spec checks an instance spec: memory, cpus, disk, disks, nics, spindles.
func (l *gline) spec(field int, name, spec string) error {
	values := strings.Split(spec, ",")
	if len(values) < 6 {
		return l.fieldErrorf(field, name, "%q has %d values, want 6 (memory,cpus,disk,disks,nics,spindles)", spec, len(values))
	}
	for i, v := range values[:6] {
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return l.fieldErrorf(field, name, "value %d of %q: %q is not a number", i+1, spec, v)
		}
	}
	return nil
}

// WriteGaneti writes s in htools' text format, for hbal, hspace and hcheck
// (-t FILE), such that ReadGaneti reads it back as s, save what the format
// cannot hold (see docs/cluster-files.md): nodes gain a "group" label, a
// CPURatio of 0 reads back as 4, MemRatio and Weights are dropped, and an
// instance's Group is added to its Tags. Every instance must be placed.
//
// Each distinct "group" label becomes a node group (nodes without one go
// to the group "default"); free memory is the capacity less the memory of
// the node's primaries, free disk the capacity less the disks of its
// primaries and secondaries; instances are running and auto-balanced, with
// the disk template drbd when they have a secondary, sharedfile when the
// disk is shared and plain otherwise. The instance policy, written for the
// cluster and for each group (htools applies the group's), has the vcpu
// ratio CPURatio, specs that every instance and anything a node could hold
// meet, and the most common instance size as its standard spec, for
// hspace. Unschedulable nodes get the tag "ferry:unschedulable", which
// htools does not honour.
func WriteGaneti(w io.Writer, s scheduler.Snapshot) error {
	if err := Validate(s); err != nil {
		return err
	}
	if err := checkGaneti(s); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	if err := writeGaneti(bw, s); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing Ganeti file: %w", err)
	}
	return nil
}

// checkGaneti refuses what the Ganeti format cannot hold or would read
// back differently.
func checkGaneti(s scheduler.Snapshot) error {
	for i, n := range s.Nodes {
		p := fmt.Sprintf("nodes[%d]", i)
		if err := checkText(p+".name", n.Name, "|"); err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
			v := n.Labels[k]
			lp := fmt.Sprintf("%s.labels[%q]", p, k)
			if k == groupLabel {
				if v == "" {
					return pathError(lp, "empty group name")
				}
				if err := checkText(lp, v, "|"); err != nil {
					return err
				}
				continue
			}
			if k == "" {
				return pathError(p+".labels", "empty label key (a Ganeti node tag needs one)")
			}
			if err := checkText(lp, k, ":,|"); err != nil {
				return err
			}
			if err := checkText(lp, v, ",|"); err != nil {
				return err
			}
			if k+":"+v == unschedulableTag {
				return pathError(lp, "the node tag %q is reserved for unschedulable nodes", unschedulableTag)
			}
		}
	}
	for i, in := range s.Instances {
		p := fmt.Sprintf("instances[%d]", i)
		if err := checkText(p+".name", in.Name, "|"); err != nil {
			return err
		}
		if in.Primary == "" {
			return pathError(p+".primary", "empty: the Ganeti format has no unplaced instances")
		}
		for j, t := range in.Tags {
			if err := checkTag(fmt.Sprintf("%s.tags[%d]", p, j), t); err != nil {
				return err
			}
		}
		if in.Group != "" {
			if err := checkTag(p+".group", in.Group); err != nil {
				return err
			}
		}
	}
	return checkText("policy.spreadLabel", s.Policy.SpreadLabel, "")
}

// checkText refuses line breaks and the given separators in s.
func checkText(path, s, separators string) error {
	if i := strings.IndexAny(s, "\n\r"+separators); i >= 0 {
		return pathError(path, "%q holds %q, which the Ganeti format cannot", s, s[i:i+1])
	}
	return nil
}

func checkTag(path, t string) error {
	if t == "" {
		return pathError(path, "empty tag")
	}
	return checkText(path, t, ",|")
}

func writeGaneti(w *bufio.Writer, s scheduler.Snapshot) error {
	// Groups, in order of first appearance.
	var groups []string
	uuids := make(map[string]string)
	groupOf := func(n scheduler.Node) string {
		if g, ok := n.Labels[groupLabel]; ok {
			return g
		}
		return ganetiDefaultGroup
	}
	for _, n := range s.Nodes {
		if g := groupOf(n); uuids[g] == "" {
			groups = append(groups, g)
			uuids[g] = fmt.Sprintf("00000000-0000-4000-8000-%012x", len(groups))
		}
	}
	if len(groups) == 0 {
		groups = []string{ganetiDefaultGroup}
		uuids[ganetiDefaultGroup] = fmt.Sprintf("00000000-0000-4000-8000-%012x", 1)
	}
	for _, g := range groups {
		fmt.Fprintf(w, "%s|%s|preferred||\n", g, uuids[g])
	}
	w.WriteString("\n")

	// Nodes, with what their instances use.
	usedMem := make(map[string]int64, len(s.Nodes))
	usedDisk := make(map[string]int64, len(s.Nodes))
	add := func(m map[string]int64, node string, v int64) error {
		if m[node] > math.MaxInt64-v {
			return fmt.Errorf("clusterfile: instances on node %q use more than an int64 can count", node)
		}
		m[node] += v
		return nil
	}
	for _, in := range s.Instances {
		if err := add(usedMem, in.Primary, in.Size.MemMiB); err != nil {
			return err
		}
		if in.SharedDisk {
			continue
		}
		for _, node := range []string{in.Primary, in.Secondary} {
			if node == "" {
				continue
			}
			if err := add(usedDisk, node, in.Size.DiskMiB); err != nil {
				return err
			}
		}
	}
	online := 0
	for _, n := range s.Nodes {
		offline := "N"
		if n.Offline {
			offline = "Y"
		} else {
			online++
		}
		var tags []string
		for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
			switch v := n.Labels[k]; {
			case k == groupLabel:
			case v == "":
				tags = append(tags, k)
			default:
				tags = append(tags, k+":"+v)
			}
		}
		if n.Unschedulable {
			tags = append(tags, unschedulableTag)
		}
		c := n.Capacity
		// name|t_mem|n_mem|f_mem|t_dsk|f_dsk|t_cpu|offline|group|spindles|
		// tags|exclusive storage|free spindles|OS cpus|cpu speed
		fmt.Fprintf(w, "%s|%d|%d|%d|%d|%d|%d|%s|%s|1|%s|N|1|0|1.0\n",
			n.Name, c.MemMiB+ganetiNodeMemMiB, ganetiNodeMemMiB, c.MemMiB-usedMem[n.Name],
			c.DiskMiB, c.DiskMiB-usedDisk[n.Name], c.CPUs, offline, uuids[groupOf(n)],
			strings.Join(tags, ","))
	}
	w.WriteString("\n")

	// Instances.
	var groupTags []string
	seen := make(map[string]bool)
	for _, in := range s.Instances {
		if in.Group != "" && !seen[in.Group] {
			seen[in.Group] = true
			groupTags = append(groupTags, in.Group)
		}
	}
	for _, in := range s.Instances {
		template := "plain"
		switch {
		case in.SharedDisk:
			template = "sharedfile"
		case in.Secondary != "":
			template = "drbd"
		}
		// name|memory|disk|vcpus|status|auto_balance|primary|secondary|
		// template|tags|spindle use|disk spindles|forthcoming
		fmt.Fprintf(w, "%s|%d|%d|%d|running|Y|%s|%s|%s|%s|1|-|N\n",
			in.Name, in.Size.MemMiB, in.Size.DiskMiB, in.Size.CPUs, in.Primary, in.Secondary,
			template, strings.Join(instanceTags(in, groupTags), ","))
	}
	w.WriteString("\n")

	// Cluster tags: each group is its own exclusion prefix, which is exact
	// (see instanceTags), and the spread label is the location prefix.
	for _, g := range groupTags {
		fmt.Fprintf(w, "%s%s\n", exclusionTagPrefix, g)
	}
	if s.Policy.SpreadLabel != "" {
		fmt.Fprintf(w, "%s%s\n", locationTagPrefix, s.Policy.SpreadLabel)
	}
	w.WriteString("\n")

	// The cluster's instance policy.
	ratio := s.Policy.CPURatio
	if ratio == 0 {
		ratio = ganetiDefaultCPURatio
	}
	std, maxSpec := specs(s, ratio)
	templates := diskTemplates()
	if online < 2 {
		// hspace allocates with the first template; drbd needs two nodes.
		templates[0], templates[1] = templates[1], templates[0]
	}
	// owner|std|min;max|disk templates|vcpu ratio|spindle ratio; a spec is
	// memory,cpus,disk,disk count,nic count,spindle use. The cluster's line
	// first, then one per group, as hscan writes them: htools places a
	// group's instances under its group's line, not the cluster's.
	policy := fmt.Sprintf("|%d,%d,%d,1,1,1|0,0,0,0,0,0;%d,%d,%d,1,8,1|%s|%s|%d\n",
		std.MemMiB, std.CPUs, std.DiskMiB, maxSpec.MemMiB, maxSpec.CPUs, maxSpec.DiskMiB,
		strings.Join(templates, ","), strconv.FormatFloat(ratio, 'f', -1, 64), ganetiSpindleRatio)
	w.WriteString(policy)
	for _, g := range groups {
		w.WriteString(g + policy)
	}
	return nil
}

// instanceTags returns the tags to write for in: its tags, with its Group
// first unless it already is the first tag that an exclusion prefix (one
// of groups) matches, so that ReadGaneti finds the same Group.
func instanceTags(in scheduler.Instance, groups []string) []string {
	if in.Group == "" || exclusionTag(in.Tags, groups) == in.Group {
		return in.Tags
	}
	tags := []string{in.Group}
	dropped := false
	for _, t := range in.Tags {
		if t == in.Group && !dropped {
			dropped = true
			continue
		}
		tags = append(tags, t)
	}
	return tags
}

// specs returns the standard instance spec (the most common size, each
// part at least 1, or Ganeti's default) and a maximum spec that every
// instance, the standard spec and anything a node could hold meet.
func specs(s scheduler.Snapshot, ratio float64) (std, maxSpec scheduler.Resources) {
	std = scheduler.Resources{MemMiB: 128, CPUs: 1, DiskMiB: 1024}
	counts := make(map[scheduler.Resources]int)
	best := 0
	for _, in := range s.Instances {
		counts[in.Size]++
		if c := counts[in.Size]; c > best {
			best, std = c, in.Size
		}
	}
	std.CPUs, std.MemMiB, std.DiskMiB = max(std.CPUs, 1), max(std.MemMiB, 1), max(std.DiskMiB, 1)
	maxSpec = std
	grow := func(r scheduler.Resources) {
		maxSpec.CPUs = max(maxSpec.CPUs, r.CPUs)
		maxSpec.MemMiB = max(maxSpec.MemMiB, r.MemMiB)
		maxSpec.DiskMiB = max(maxSpec.DiskMiB, r.DiskMiB)
	}
	for _, in := range s.Instances {
		grow(in.Size)
	}
	for _, n := range s.Nodes {
		c := n.Capacity
		vcpus := math.Ceil(float64(c.CPUs) * ratio)
		c.CPUs = MaxSize
		if vcpus < float64(MaxSize) {
			c.CPUs = int64(vcpus)
		}
		grow(c)
	}
	return std, maxSpec
}
