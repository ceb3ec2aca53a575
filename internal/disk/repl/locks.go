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

// rangeLock is the set of stripes read-locked by rlockRange: the
// ascending intervals [lo1, hi1] and [lo2, hi2] (the second may be empty).
type rangeLock struct {
	r                  *regionLocks
	lo1, hi1, lo2, hi2 int
}

// rlockRange read-locks every region touched by [off, off+length), in
// ascending stripe order so that two writes cannot deadlock, and returns
// the locks to unlock.
func (r *regionLocks) rlockRange(off, length int64) rangeLock {
	first := off / r.regionSize
	last := (off + max(length, 1) - 1) / r.regionSize
	l := rangeLock{r: r, lo2: 1, hi2: 0}
	switch a, b := int(first%lockStripes), int(last%lockStripes); {
	case last-first+1 >= lockStripes:
		l.lo1, l.hi1 = 0, lockStripes-1
	case a <= b:
		l.lo1, l.hi1 = a, b
	default: // wraps around: ascending means 0..b, then a..end
		l.lo1, l.hi1, l.lo2, l.hi2 = 0, b, a, lockStripes-1
	}
	for i := l.lo1; i <= l.hi1; i++ {
		r.m[i].RLock()
	}
	for i := l.lo2; i <= l.hi2; i++ {
		r.m[i].RLock()
	}
	return l
}

// unlock releases the locks taken by rlockRange.
func (l rangeLock) unlock() {
	for i := l.lo1; i <= l.hi1; i++ {
		l.r.m[i].RUnlock()
	}
	for i := l.lo2; i <= l.hi2; i++ {
		l.r.m[i].RUnlock()
	}
}

// lockRegion write-locks region i and returns the function that unlocks it.
func (r *regionLocks) lockRegion(i int) func() {
	m := &r.m[i%lockStripes]
	m.Lock()
	return m.Unlock
}
