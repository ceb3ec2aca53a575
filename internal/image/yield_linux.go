package image

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// backgroundNice is the CPU priority of the work that unpacks a kernel:
// it runs on hosts whose guests are running, and a guest starved of CPU
// for a second stops answering its customers (bench/migrate saw the
// guest being moved stall while its target unpacked the kernel).
const backgroundNice = 19

// yieldCPU lowers the CPU priority of process pid to backgroundNice; a
// failure only costs the guests some CPU, so it is ignored.
func yieldCPU(pid int) {
	_ = unix.Setpriority(unix.PRIO_PROCESS, pid, backgroundNice)
}

// runYielding runs fn on an OS thread of its own at backgroundNice. The
// thread is never unlocked, so the runtime ends it with the goroutine and
// the lowered priority never reaches other goroutines.
func runYielding(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		yieldCPU(unix.Gettid())
		errc <- fn()
	}()
	return <-errc
}
