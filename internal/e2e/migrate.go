package e2e

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// MigrationResult is what one migration looked like from outside.
type MigrationResult struct {
	Instance, Mode, From, To string
	Operation                *api.Operation
	// Downtime is the longest gap between two answers of the client that
	// polls the guest every 50 ms, from the request to a few seconds after
	// the operation ended.
	Downtime time.Duration
	// GapFrom is when that gap began, from the request: set against the
	// operation's steps, it says which part of the migration the customer
	// waited through.
	GapFrom time.Duration
	// QEMUDowntime is QEMU's own measure of the pause (live only).
	QEMUDowntime time.Duration
	// Took runs from the request to the end of the operation.
	Took                        time.Duration
	BootsBefore, BootsAfter     int
	CounterBefore, CounterAfter int
	// LostWrites is 1 when data the guest fsync'ed before the migration is
	// not there after it.
	LostWrites int
	// Answers counts the client's answers from the request on.
	Answers int
}

func (r MigrationResult) String() string {
	state := ""
	if r.Operation != nil {
		state = r.Operation.State + " " + r.Operation.Message
	}
	return fmt.Sprintf("%s migration of %s %s -> %s: %s; downtime %s (QEMU %s), took %s, boots %d -> %d, counter %d -> %d, lost writes %d",
		r.Mode, r.Instance, r.From, r.To, state, r.Downtime.Round(time.Millisecond), r.QEMUDowntime, r.Took.Round(time.Millisecond),
		r.BootsBefore, r.BootsAfter, r.CounterBefore, r.CounterAfter, r.LostWrites)
}

// pollEvery is the client's polling period during a migration (the issue's
// definition of downtime).
const pollEvery = 50 * time.Millisecond

// RunMigration migrates instance name as req says while a client polls
// its HTTP service every 50 ms; during, if set, runs once the operation
// exists (to cancel it, or break its target). It waits for the operation
// to end and reports what the client saw.
func (c *Cluster) RunMigration(ctx context.Context, name string, req api.MigrateRequest, during func(op *api.Operation) error) (MigrationResult, error) {
	res := MigrationResult{Instance: name, Mode: req.Mode}
	in, err := c.Client.GetInstance(ctx, name)
	if err != nil {
		return res, err
	}
	ip := in.Spec.IP
	res.From = in.Status.Node
	fill, err := c.Fill(ctx, ip, 1)
	if err != nil {
		return res, err
	}
	before, err := c.GetWithin(ctx, ip, 2*time.Second)
	if err != nil {
		return res, fmt.Errorf("e2e: %s does not answer before the migration: %w", name, err)
	}
	res.BootsBefore, res.CounterBefore = before.Boots, before.Counter

	pl, err := c.startPoller(ctx, ip, pollEvery, 250*time.Millisecond)
	if err != nil {
		return res, err
	}
	defer pl.end()

	start := time.Now()
	op, err := c.Client.MigrateInstance(ctx, name, req)
	if err != nil {
		return res, err
	}
	if during != nil {
		if err := during(op); err != nil {
			return res, err
		}
	}
	err = c.Wait(ctx, 4*time.Minute, "operation "+op.Name+" to end", func() bool {
		got, err := c.Client.GetOperation(ctx, op.Name)
		if err != nil {
			return false
		}
		op = got
		return got.State != api.OpRunning
	})
	res.Operation = op
	res.Took = time.Since(start)
	if err != nil {
		return res, err
	}
	// The guest must answer again (it may still be booting after a cold
	// migration), then a little more watching for late gaps.
	end := time.Now()
	if err := c.Wait(ctx, 2*time.Minute, name+" answering after the migration", func() bool {
		_, ok := pl.first(end, func(poll) bool { return true })
		return ok
	}); err != nil {
		return res, err
	}
	time.Sleep(2 * time.Second)
	pl.end()
	g := pl.gaps(start)
	res.Downtime, res.Answers, res.GapFrom = g.Longest, g.Answers, g.From.Sub(start)
	res.BootsAfter, res.CounterAfter = g.Last.Boots, g.Last.Counter
	if op.Mode == api.MigrateLive {
		res.QEMUDowntime = time.Duration(op.DowntimeMS) * time.Millisecond // QEMU's own, for a live one
	}
	now, err := c.Fill(ctx, ip, 0)
	if err != nil {
		return res, fmt.Errorf("e2e: reading back the data written before the migration: %w", err)
	}
	if now.SHA256 != fill.SHA256 {
		res.LostWrites = 1
	}
	in, err = c.Client.GetInstance(ctx, name)
	if err != nil {
		return res, err
	}
	res.To = in.Status.Node
	return res, nil
}
