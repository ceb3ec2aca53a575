package repl

import "sync"

// lockStripes is the number of region locks. Regions share a lock when
// their indices are equal modulo lockStripes; sharing only costs some
// needless waiting, never correctness.
const lockStripes = 1024

// regionLocks orders guest writes against resync of the same region. A
// guest write holds the read side of every region it touches from before
// its dirty mark until it completes; resync holds the write side of one
// region from reading it until the peer acknowledged it and its bit is
// cleared. So resync never sends a region's old contents after a newer
// write, and never clears a bit that a write in progress has just set.
type regionLocks struct {
	regionSize int64
	m          [lockStripes]sync.RWMutex
}

// rlockRange read-locks every region touched by [off, off+length), in
// ascending stripe order so that two writes cannot deadlock, and returns
// the function that unlocks them.
func (r *regionLocks) rlockRange(off, length int64) func() {
	first := off / r.regionSize
	last := (off + max(length, 1) - 1) / r.regionSize
	var idx []int
	if last-first+1 >= lockStripes {
		idx = make([]int, lockStripes)
		for i := range idx {
			idx[i] = i
		}
	} else {
		a, b := int(first%lockStripes), int(last%lockStripes)
		if a <= b {
			for i := a; i <= b; i++ {
				idx = append(idx, i)
			}
		} else { // wraps around: ascending means 0..b, then a..end
			for i := 0; i <= b; i++ {
				idx = append(idx, i)
			}
			for i := a; i < lockStripes; i++ {
				idx = append(idx, i)
			}
		}
	}
	for _, i := range idx {
		r.m[i].RLock()
	}
	return func() {
		for _, i := range idx {
			r.m[i].RUnlock()
		}
	}
}

// lockRegion write-locks region i and returns the function that unlocks it.
func (r *regionLocks) lockRegion(i int) func() {
	m := &r.m[i%lockStripes]
	m.Lock()
	return m.Unlock
}
