package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/spf13/cobra"
)

func (a *app) newEventsCmd() *cobra.Command {
	var (
		limit   int
		noWatch bool
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream cluster events as they happen",
		Long: `Print the most recent events, then stream new ones as they happen, one line
each, until interrupted (like kubectl get -w). --no-watch prints the recent
ones and exits. With --json each event is one line of JSON (with --no-watch,
the list object).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit: must not be negative, got %d", limit)
			}
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			if noWatch {
				ctx, cancel := a.requestContext(cmd)
				defer cancel()
				list, err := c.ListEvents(ctx, limit)
				if err != nil {
					return explain(err, conn, "event", "")
				}
				if a.g.JSON {
					return printJSON(a.stdout(), list)
				}
				printEventHeader(a.stdout())
				for _, ev := range list.Items {
					printEvent(a.stdout(), ev)
				}
				return nil
			}
			w := a.stdout()
			if !a.g.JSON {
				printEventHeader(w)
			}
			err = c.WatchEvents(cmd.Context(), limit, func(ev api.Event) error {
				if a.g.JSON {
					data, err := json.Marshal(ev)
					if err != nil {
						return err
					}
					_, err = w.Write(append(data, '\n'))
					return err
				}
				printEvent(w, ev)
				return nil
			})
			switch {
			case cmd.Context().Err() != nil:
				return nil // interrupted: the normal way to stop watching
			case errors.Is(err, client.ErrStreamClosed):
				return errors.New("the server closed the event stream")
			}
			return explain(err, conn, "event", "")
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "how many recent events to print first (default: server's, 20 when watching, 100 with --no-watch)")
	cmd.Flags().BoolVar(&noWatch, "no-watch", false, "print the recent events and exit")
	return cmd
}

// Widths of the event columns; a stream cannot be aligned after the fact.
const eventFormat = "%-19s  %-28s  %-13s  %-12s  %s"

func printEventHeader(w io.Writer) {
	fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf(eventFormat, "TIME", "OBJECT", "TYPE", "NODE", "MESSAGE"), " "))
}

// printEvent writes one event as one line.
func printEvent(w io.Writer, ev api.Event) {
	t := "-"
	if !ev.Time.IsZero() {
		t = ev.Time.Local().Format("2006-01-02 15:04:05")
	}
	obj := strings.ToLower(ev.Kind) + "/" + ev.Name
	line := fmt.Sprintf(eventFormat, t, clean(obj), clean(dash(ev.Type)), clean(dash(ev.Node)), clean(ev.Message))
	fmt.Fprintln(w, strings.TrimRight(line, " "))
}
