package cli

import (
	"fmt"
	"runtime"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/spf13/cobra"
)

// versionInfo is what `ferry version --json` prints.
type versionInfo struct {
	Client      api.Version  `json:"client"`
	Server      *api.Version `json:"server,omitempty"`
	ServerURL   string       `json:"serverURL,omitempty"`
	ServerError string       `json:"serverError,omitempty"`
}

func (a *app) newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's version, and the server's if it is reachable",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := versionInfo{Client: api.Version{Version: a.opts.Version, GoVersion: runtime.Version()}}
			c, conn, err := a.newClient()
			if err == nil {
				info.ServerURL = c.Server()
				ctx, cancel := a.requestContext(cmd)
				info.Server, err = c.Version(ctx)
				cancel()
				err = explain(err, conn, "", "")
			}
			if err != nil {
				info.ServerError = err.Error()
			}
			if a.g.JSON {
				return printJSON(a.stdout(), info)
			}
			w := a.stdout()
			fmt.Fprintf(w, "Client: %s (%s)\n", info.Client.Version, info.Client.GoVersion)
			if info.Server != nil {
				fmt.Fprintf(w, "Server: %s (%s) at %s\n", clean(info.Server.Version), clean(info.Server.GoVersion), info.ServerURL)
				return nil
			}
			fmt.Fprintf(w, "Server: unavailable: %s\n", clean(info.ServerError))
			return nil
		},
	}
}
