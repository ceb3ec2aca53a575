//go:build !linux

package image

func yieldCPU(int) {}

func runYielding(fn func() error) error { return fn() }
