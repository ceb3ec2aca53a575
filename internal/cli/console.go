package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// detachKey is Ctrl-]: read from stdin, it ends `ferry console`, as it
// ends telnet and virsh console. It is not sent to the guest.
const detachKey = 0x1d

func (a *app) newConsoleCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to an instance's serial console (Ctrl-] detaches)",
		Long: `Attach this terminal to the serial console of a running instance: what you type
goes to the guest, what it prints comes back. The terminal is put in raw mode,
so Ctrl-C and the like go to the guest; press Ctrl-] to detach.

When stdin is not a terminal, it is sent as it is, and the guest's output is
printed until the server ends the session or for a second after stdin ends
and the guest stops printing. A Ctrl-] byte in the input detaches there too.`,
		Example: "  ferry console web-1\n  printf 'uptime\\n' | ferry console web-1",
		Args:    exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runConsole(cmd, args[0])
		},
	}
}

func (a *app) runConsole(cmd *cobra.Command, name string) error {
	c, conn, err := a.newClient()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	stream, err := c.Console(ctx, name)
	if err != nil {
		return explain(err, conn, "instance", name)
	}
	defer stream.Close()
	fmt.Fprintf(a.stderr(), "Connected to %s's console; Ctrl-] to detach\n", clean(name))

	in := a.stdin()
	if f, ok := in.(interface{ Fd() uintptr }); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer func() {
			_ = term.Restore(int(f.Fd()), old)
			fmt.Fprintln(a.stderr()) // the guest may have left the cursor mid-line
		}()
	}
	end, err := attach(stream, in, a.stdout(), a.opts.ConsoleLinger, ctx.Done())
	switch {
	case ctx.Err() != nil:
		return nil // interrupted: a normal way to leave
	case err != nil:
		return explain(err, conn, "instance", name)
	case end == endClosed:
		fmt.Fprintf(a.stderr(), "\r\nThe server closed %s's console.\r\n", clean(name))
	}
	return nil
}

// attachEnd says why a console session ended.
type attachEnd int

const (
	endDetached attachEnd = iota // the detach key was read
	endClosed                    // the server ended the stream
	endInput                     // stdin ended and output went quiet
	endDone                      // done was closed
)

// attach copies in to the console stream and the stream to out, until the
// detach key is read from in, the server ends the stream, or done closes.
// When in ends, output is copied on until the server ends the stream or
// none has come for linger. attach does not close the stream; the caller
// does, which also ends the goroutine reading it. The goroutine reading in
// may stay blocked in Read until in yields something.
func attach(stream io.ReadWriter, in io.Reader, out io.Writer, linger time.Duration, done <-chan struct{}) (attachEnd, error) {
	activity := make(chan struct{}, 1)
	outErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(&activityWriter{w: out, c: activity}, stream)
		outErr <- err
	}()
	type inResult struct {
		detached bool
		err      error
	}
	inDone := make(chan inResult, 1)
	go func() {
		detached, err := copyUntilDetach(stream, in)
		inDone <- inResult{detached, err}
	}()

	select {
	case <-done:
		return endDone, nil
	case err := <-outErr:
		return endClosed, readError(err)
	case r := <-inDone:
		switch {
		case r.detached:
			return endDetached, nil
		case r.err != nil:
			return endInput, fmt.Errorf("writing to the console: %w", r.err)
		}
	}
	// Input ended. A serial port has no end of input, and the server ends
	// the session when told of one, so keep the stream open and print the
	// output until it goes quiet.
	t := time.NewTimer(linger)
	defer t.Stop()
	for {
		select {
		case <-done:
			return endDone, nil
		case err := <-outErr:
			return endInput, readError(err)
		case <-activity:
			t.Reset(linger)
		case <-t.C:
			return endInput, nil
		}
	}
}

// readError describes how copying the console's output ended: nil for
// the server ending the stream, or the stream being closed on our side.
func readError(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("reading the console: %w", err)
}

// copyUntilDetach copies src to dst until src ends (detached false, err
// nil), a write fails (err), or src yields the detach key Ctrl-]
// (detached true): the bytes before the key are written, the key and what
// follows it are not. A read error of src other than io.EOF is returned.
func copyUntilDetach(dst io.Writer, src io.Reader) (detached bool, err error) {
	buf := make([]byte, 4096)
	for {
		n, rerr := src.Read(buf)
		chunk := buf[:n]
		if i := bytes.IndexByte(chunk, detachKey); i >= 0 {
			chunk, detached = chunk[:i], true
		}
		if len(chunk) > 0 {
			if _, err := dst.Write(chunk); err != nil {
				return false, err
			}
		}
		switch {
		case detached:
			return true, nil
		case errors.Is(rerr, io.EOF):
			return false, nil
		case rerr != nil:
			return false, rerr
		}
	}
}

// activityWriter writes to w and signals c (without blocking) on each
// write, so that a session can tell output has gone quiet.
type activityWriter struct {
	w io.Writer
	c chan<- struct{}
}

func (w *activityWriter) Write(p []byte) (int, error) {
	select {
	case w.c <- struct{}{}:
	default:
	}
	return w.w.Write(p)
}

func (a *app) newLogsCmd() *cobra.Command {
	var tail int
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print an instance's serial console log",
		Long: `Print what the instance's guest wrote to its serial console (boot messages,
login prompts), as kept by the agent of its node: all of it, up to 1 MiB, or
the last --tail lines.`,
		Example: "  ferry logs web-1 --tail 50",
		Args:    exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail < 0 {
				return fmt.Errorf("--tail: must not be negative, got %d", tail)
			}
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			rc, err := c.InstanceLogs(ctx, args[0], tail)
			if err != nil {
				return explain(err, conn, "instance", args[0])
			}
			defer rc.Close()
			if _, err := io.Copy(a.stdout(), rc); err != nil {
				return fmt.Errorf("reading the log of instance %q: %w", args[0], err)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&tail, "tail", 0, "print only the last N lines (0: all)")
	return cmd
}
