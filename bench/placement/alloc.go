package main

import "github.com/ferrycluster/ferry/internal/scheduler"

// newAllocator places instances one by one on a stateful cluster, the way
// the controller does: scheduler.NewCluster once, then (*Cluster).Allocate
// per instance, each placement recorded for the next.
func newAllocator(s scheduler.Snapshot) (string, func(scheduler.Instance) (scheduler.Placement, error), error) {
	const mode = "scheduler.NewCluster + (*Cluster).Allocate"
	c, err := scheduler.NewCluster(s)
	if err != nil {
		return mode, nil, err
	}
	return mode, func(inst scheduler.Instance) (scheduler.Placement, error) {
		return c.Allocate(inst, scheduler.AllocateOptions{})
	}, nil
}
