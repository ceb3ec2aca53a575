// Package clusterfile reads and writes descriptions of a cluster as the
// scheduler sees it (a scheduler.Snapshot): ferry's own versioned JSON
// snapshot, and the text format of Ganeti's htools (what hscan writes and
// hbal, hspace and hcheck read with -t), so that a real Ganeti cluster can
// be checked by ferry and a ferry cluster by htools.
//
// Readers validate what they read and name the line and field, or the JSON
// path, of the first problem; writers refuse snapshots their format cannot
// hold. docs/cluster-files.md describes both formats and how they map.
package clusterfile
