//go:build race

package scheduler

// raceEnabled skips the large-cluster tests under the race detector: the
// scheduler runs on one goroutine, and they would take minutes.
const raceEnabled = true
