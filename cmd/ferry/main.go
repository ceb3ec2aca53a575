// Command ferry is the one binary of ferry: the control plane server, the
// host agent, an all-in-one dev cluster, and every user verb.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	// SLA reports take a month in any time zone (--tz): hosts without
	// zoneinfo must know them too.
	_ "time/tzdata"

	"github.com/ferrycluster/ferry/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g := &cli.Globals{}
	root := cli.NewRoot(cli.RootOptions{Version: version, Globals: g})
	root.AddCommand(newServerCmd(g), newAgentCmd(g), newDevCmd(g), newGuardCmd(g))
	if err := root.ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}
