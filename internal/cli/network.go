package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/spf13/cobra"
)

func (a *app) newNetworkCmd() *cobra.Command {
	cmd := newGroup("network", "Create, list, inspect and remove the networks instances attach to", "net", "networks")
	cmd.AddCommand(
		a.newNetworkCreateCmd(),
		a.newNetworkListCmd(),
		a.newNetworkShowCmd(),
		a.newNetworkRemoveCmd(),
	)
	return cmd
}

func (a *app) newNetworkCreateCmd() *cobra.Command {
	var (
		cidr, gateway string
		reserve       []string
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a network",
		Long: `Create a layer-2 network that every host bridges. Instances on it get an address
from CIDR, never the gateway's nor a reserved one (an address, a prefix or a
range). An instance created without --network joins the network called
"default", if there is one.`,
		Example: "  ferry network create default --cidr 10.77.0.0/24 --gateway 10.77.0.1 --reserve 10.77.0.2,10.77.0.3",
		Args:    exactlyOneName("network"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := api.Network{Meta: api.Meta{Name: args[0]}, CIDR: cidr, Gateway: gateway}
			for _, r := range reserve {
				if r = strings.TrimSpace(r); r != "" {
					n.Reserved = append(n.Reserved, r)
				}
			}
			if cidr == "" {
				return withHint(errors.New("--cidr is required, e.g. --cidr 10.77.0.0/24"), usageHint(cmd))
			}
			if err := n.Validate(); err != nil {
				return networkFieldToFlag(err)
			}
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			out, err := c.CreateNetwork(ctx, n)
			if err != nil {
				if client.IsConflict(err) && (apiField(err) == "" || apiField(err) == "name") {
					return &messageError{msg: fmt.Sprintf("network %q already exists", n.Name), err: err}
				}
				return explain(networkFieldToFlag(err), conn, "network", "")
			}
			if a.g.JSON {
				return printJSON(a.stdout(), out)
			}
			fmt.Fprintf(a.stdout(), "network %q created (%s)\n", out.Name, clean(joinNonEmpty(", gateway ", out.CIDR, out.Gateway)))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cidr, "cidr", "", "IPv4 subnet, e.g. 10.77.0.0/24 (required)")
	fl.StringVar(&gateway, "gateway", "", "router address guests use, inside the subnet")
	fl.StringSliceVar(&reserve, "reserve", nil, "addresses never handed out (hosts, routers): 10.77.0.5, 10.77.0.0/28 or 10.77.0.2-10.77.0.9; comma-separated or repeated")
	return cmd
}

// networkFieldToFlag rewrites a field error of a network (local, or from
// the server) so that it names the flag.
func networkFieldToFlag(err error) error {
	flagFor := func(field string) string {
		switch field {
		case "name":
			return "NAME"
		case "cidr":
			return "--cidr"
		case "gateway":
			return "--gateway"
		}
		if strings.HasPrefix(field, "reserved") {
			return "--reserve"
		}
		return field
	}
	var fe *api.FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		return &flagError{flag: flagFor(fe.Field), msg: fe.Message, err: err}
	}
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Field != "" {
		return &flagError{flag: flagFor(ae.Field), msg: strings.TrimPrefix(ae.Message, ae.Field+": "), err: err}
	}
	return err
}

func (a *app) newNetworkListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List networks",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := fetch(a, cmd, "network", "", (*client.Client).ListNetworks)
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), list)
			}
			items := list.Items
			sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
			t := newTable(a.stdout(), "NAME", "CIDR", "GATEWAY", "RESERVED")
			for _, n := range items {
				t.row(n.Name, n.CIDR, n.Gateway, strings.Join(n.Reserved, ","))
			}
			return t.flush()
		},
	}
}

func (a *app) newNetworkShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get", "describe"},
		Short:   "Show a network",
		Args:    exactlyOneName("network"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := fetch(a, cmd, "network", args[0], func(c *client.Client, ctx context.Context) (*api.Network, error) {
				return c.GetNetwork(ctx, args[0])
			})
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), n)
			}
			d := newDetails(a.stdout())
			d.add("Name", n.Name)
			d.add("CIDR", n.CIDR)
			d.add("Gateway", n.Gateway)
			d.add("Reserved", strings.Join(n.Reserved, ", "))
			d.add("Created", timestamp(a.opts.Now(), n.CreatedAt))
			d.add("UID", n.UID)
			d.add("Resource version", n.ResourceVersion)
			return d.flush()
		},
	}
}

func (a *app) newNetworkRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete", "remove"},
		Short:   "Remove a network no instance uses",
		Args:    exactlyOneName("network"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			if err := c.DeleteNetwork(ctx, args[0]); err != nil {
				return explain(err, conn, "network", args[0])
			}
			fmt.Fprintf(a.stdout(), "network %q removed\n", args[0])
			return nil
		},
	}
}
