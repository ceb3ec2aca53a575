package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/spf13/cobra"
)

// waitForPhase polls the instance until its phase is target, printing each
// change of phase, host or message to stderr, and returns it then. start is
// the instance as the request that started the wait returned it: a Failed
// phase ends the wait with an error, unless it is the one start already
// had (an instance being restarted after a failure still shows it).
func (a *app) waitForPhase(cmd *cobra.Command, c *client.Client, start *api.Instance, target api.Phase, timeout time.Duration) (*api.Instance, error) {
	name := start.Name
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	p := &progress{a: a, name: name}
	inst := start
	for {
		p.show(inst)
		switch {
		case inst.Status.Phase == target:
			return inst, nil
		case inst.Status.Phase == api.PhaseFailed && !sameStatus(inst, start):
			return inst, fmt.Errorf("instance %q failed: %s", name, dash(clean(joinNonEmpty(": ", inst.Status.LastError, inst.Status.Message))))
		}
		if err := a.pause(ctx); err != nil {
			return inst, waitError(cmd.Context(), err, timeout, fmt.Sprintf("instance %q to be %s (now %s)", name, target, describePlace(inst)))
		}
		next, err := c.GetInstance(ctx, name)
		switch {
		case err == nil:
			inst = next
		case client.IsNotFound(err):
			return inst, &messageError{msg: fmt.Sprintf("instance %q was deleted while waiting for it to be %s", name, target), err: err}
		case ctx.Err() != nil:
			return inst, waitError(cmd.Context(), ctx.Err(), timeout, fmt.Sprintf("instance %q to be %s (now %s)", name, target, describePlace(inst)))
		case retryable(err):
			p.problem(err)
		default:
			return inst, err
		}
	}
}

// waitGone polls until the instance no longer exists.
func (a *app) waitGone(cmd *cobra.Command, c *client.Client, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	p := &progress{a: a, name: name}
	now := "Deleting"
	for {
		if err := a.pause(ctx); err != nil {
			return waitError(cmd.Context(), err, timeout, fmt.Sprintf("instance %q to be deleted (now %s)", name, now))
		}
		inst, err := c.GetInstance(ctx, name)
		switch {
		case err == nil:
			p.show(inst)
			now = describePlace(inst)
		case client.IsNotFound(err):
			return nil
		case ctx.Err() != nil:
			return waitError(cmd.Context(), ctx.Err(), timeout, fmt.Sprintf("instance %q to be deleted (now %s)", name, now))
		case retryable(err):
			p.problem(err)
		default:
			return err
		}
	}
}

// pause waits one poll interval, or until ctx ends.
func (a *app) pause(ctx context.Context) error {
	t := time.NewTimer(a.opts.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitError says why a wait ended early: the user interrupted it (parent
// ended) or it timed out.
func waitError(parent context.Context, err error, timeout time.Duration, what string) error {
	if parent.Err() != nil {
		return fmt.Errorf("interrupted while waiting for %s: %w", what, parent.Err())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
	}
	return err
}

// retryable reports whether a failed poll is worth repeating: the server
// is restarting or electing a leader, or the network hiccuped.
func retryable(err error) bool {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500
	}
	return true
}

// sameStatus reports whether two reads of an instance show the same phase
// change.
func sameStatus(a, b *api.Instance) bool {
	return a.Status.Phase == b.Status.Phase && a.Status.Since.Equal(b.Status.Since)
}

// progress prints what changes while waiting, one line per change.
type progress struct {
	a       *app
	name    string
	last    string
	lastErr string
}

func (p *progress) show(inst *api.Instance) {
	line := describePlace(inst)
	if m := clean(inst.Status.Message); m != "" {
		line += ": " + m
	}
	if line == p.last {
		return
	}
	p.last, p.lastErr = line, ""
	p.a.progressLine(p.name, line)
}

func (p *progress) problem(err error) {
	msg := clean(err.Error())
	if msg == p.lastErr {
		return
	}
	p.lastErr = msg
	p.a.progressLine(p.name, "(retrying: "+msg+")")
}

// progressLine prints one line of a wait's progress about an instance to
// stderr: "15:04:05  instance/web-1  Running on n1".
func (a *app) progressLine(name, line string) {
	fmt.Fprintf(a.stderr(), "%s  instance/%s  %s\n", a.opts.Now().Local().Format("15:04:05"), name, line)
}
