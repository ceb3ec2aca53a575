package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/spf13/cobra"
)

func (a *app) newNodeCmd() *cobra.Command {
	cmd := newGroup("node", "List, inspect, join and remove hosts", "nodes", "no")
	cmd.AddCommand(
		a.newNodeListCmd(),
		a.newNodeShowCmd(),
		a.newNodeJoinTokenCmd(),
		a.newNodeRemoveCmd(),
		a.newNodeLabelCmd(),
		a.newNodeDrainCmd(),
		a.newNodeUndrainCmd(),
	)
	return cmd
}

func (a *app) newNodeListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List nodes with their state and allocation",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := fetch(a, cmd, "node", "", (*client.Client).ListNodes)
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), list)
			}
			items := list.Items
			sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
			now := a.opts.Now()
			t := newTable(a.stdout(), "NAME", "STATE", "CPUS(ALLOC/CAP)", "MEMORY(ALLOC/CAP)", "DISK(ALLOC/CAP)", "SINCE", "ADDRESS")
			for _, n := range items {
				al, cp := n.Status.Allocated, n.Status.Capacity
				t.row(n.Name, nodeState(&n),
					fmt.Sprintf("%d/%d", al.CPUs, cp.CPUs),
					fmtBytes(al.Memory)+"/"+fmtBytes(cp.Memory),
					fmtBytes(al.Disk)+"/"+fmtBytes(cp.Disk),
					ago(now, n.Status.Since), n.Status.Address)
			}
			return t.flush()
		},
	}
}

// nodeState is the node's state, with ",Unschedulable" when it is
// cordoned, ",Draining (2 left)" or ",Drained" while a drain is recorded,
// ",Restoring (1 left)" while instances go back.
func nodeState(n *api.Node) string {
	s := string(n.Status.State)
	if s == "" {
		s = "Unknown"
	}
	st := n.Status.Drain
	switch {
	case n.Spec.Drain != nil && st != nil && st.Drained:
		s += ",Drained"
	case n.Spec.Drain != nil && st != nil:
		s += fmt.Sprintf(",Draining (%d left)", st.Remaining)
	case n.Spec.Drain != nil:
		s += ",Draining"
	case n.Spec.Unschedulable:
		s += ",Unschedulable"
	}
	if r := n.Spec.Restore; r != nil {
		s += fmt.Sprintf(",Restoring (%d left)", len(r.Instances))
	}
	return s
}

func (a *app) newNodeShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get", "describe"},
		Short:   "Show a node's state, capacity and allocation",
		Args:    exactlyOneName("node"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := fetch(a, cmd, "node", args[0], func(c *client.Client, ctx context.Context) (*api.Node, error) {
				return c.GetNode(ctx, args[0])
			})
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), n)
			}
			return a.printNode(n)
		},
	}
}

func (a *app) printNode(n *api.Node) error {
	now := a.opts.Now()
	res := func(r api.Resources) string {
		return fmt.Sprintf("%d CPUs, %s memory, %s disk", r.CPUs, fmtBytes(r.Memory), fmtBytes(r.Disk))
	}
	d := newDetails(a.stdout())
	d.add("Name", n.Name)
	d.add("State", nodeState(n))
	d.add("Since", timestamp(now, n.Status.Since))
	d.add("Last heartbeat", timestamp(now, n.Status.LastHeartbeat))
	d.add("Address", n.Status.Address)
	d.add("Capacity", res(n.Status.Capacity))
	d.add("Allocated", res(n.Status.Allocated))
	d.add("Free", res(n.Status.Capacity.Sub(n.Status.Allocated)))
	d.add("Agent version", n.Status.AgentVersion)
	d.add("Accelerator", n.Status.Accel)
	d.add("Labels", api.FormatLabels(n.Spec.Labels))
	if dr := n.Spec.Drain; dr != nil {
		what := fmt.Sprintf("%s, %d at a time, since %s", dr.Mode, dr.MaxConcurrent, timestamp(now, dr.StartedAt))
		if dr.Replicas {
			what += "; the replicas move too"
		}
		d.add("Drain", what)
		d.add("Drain progress", drainProgress(n))
		d.add("Drain took", strings.Join(dr.Took, ", "))
		if dr.Replicas {
			d.add("Drain moved replicas", strings.Join(dr.MovedReplicas, ", "))
		}
	}
	if r := n.Spec.Restore; r != nil {
		d.add("Restore", fmt.Sprintf("%s, %d at a time, since %s; to move back: %s", r.Mode, r.MaxConcurrent, timestamp(now, r.StartedAt), strings.Join(r.Instances, ", ")))
		if n.Spec.Drain == nil {
			d.add("Restore progress", drainProgress(n))
		}
	}
	d.add("Certificate serial", n.Status.CertSerial)
	d.add("Joined", timestamp(now, n.CreatedAt))
	d.add("UID", n.UID)
	d.add("Resource version", n.ResourceVersion)
	return d.flush()
}

func (a *app) newNodeJoinTokenCmd() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Create a token with which one host can join the cluster",
		Long: `Create a join token and print the command that joins a host with it. The token
carries the fingerprint of the cluster CA, so the agent needs no CA file.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 || ttl > 7*24*time.Hour {
				return fmt.Errorf("--ttl: must be between 1s and 168h (7 days), got %v", ttl)
			}
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			tok, err := c.CreateJoinToken(ctx, ttl)
			if err != nil {
				return explain(err, conn, "join token", "")
			}
			if a.g.JSON {
				return printJSON(a.stdout(), tok)
			}
			w := a.stdout()
			expiry := ""
			if !tok.ExpiresAt.IsZero() {
				expiry = fmt.Sprintf(" (valid until %s)", tok.ExpiresAt.Local().Format("2006-01-02 15:04:05 MST"))
			}
			fmt.Fprintf(w, "Join token%s:\n\n    %s\n\n", expiry, clean(tok.Token))
			fmt.Fprintf(w, "To join a host, run this on it:\n\n    ferry agent --server %s --token %s\n",
				shellQuote(c.Server()), shellQuote(clean(tok.Token)))
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	return cmd
}

// shellQuote quotes s for a POSIX shell if it has characters that need it.
func shellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/=+@,%", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *app) newNodeRemoveCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete", "remove"},
		Short:   "Remove a node from the cluster and revoke its certificate",
		Args:    exactlyOneName("node"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			defer cancel()
			if err := c.DeleteNode(ctx, args[0], force); err != nil {
				return explain(err, conn, "node", args[0])
			}
			fmt.Fprintf(a.stdout(), "node %q removed\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the node even if instances are still placed on it")
	return cmd
}

func (a *app) newNodeLabelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "label NAME KEY=VALUE... [KEY-...]",
		Short: "Set or remove a node's labels",
		Long: `Set labels on a node (KEY=VALUE) or remove them (KEY-), in one change. Labels
place nodes in failure domains: with the server's --spread-label rack, an
instance's replica is kept on a node whose rack differs from its host's.
Keys are lowercase letters, digits, '.', '_', '-' and '/'; values are letters,
digits, '.', '_' and '-'; both start and end with a letter or digit.`,
		Example: "  ferry node label n1 rack=r1 zone=a\n  ferry node label n1 zone-",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0 || strings.TrimSpace(args[0]) == "":
				return withHint(errors.New("missing the node NAME"), usageHint(cmd))
			case len(args) == 1:
				return withHint(errors.New("missing the labels: give KEY=VALUE to set one, KEY- to remove one"), usageHint(cmd))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			labels, err := parseLabelArgs(args[1:])
			if err != nil {
				return err
			}
			n, err := fetch(a, cmd, "node", name, func(c *client.Client, ctx context.Context) (*api.Node, error) {
				return c.PatchNode(ctx, name, api.NodePatch{Labels: labels})
			})
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), n)
			}
			if len(n.Spec.Labels) == 0 {
				fmt.Fprintf(a.stdout(), "node %q has no labels\n", name)
				return nil
			}
			fmt.Fprintf(a.stdout(), "node %q labels: %s\n", name, clean(api.FormatLabels(n.Spec.Labels)))
			return nil
		},
	}
}

// parseLabelArgs reads KEY=VALUE (set) and KEY- (remove) arguments into a
// patch of labels, naming the argument at fault.
func parseLabelArgs(args []string) (map[string]*string, error) {
	out := make(map[string]*string, len(args))
	for _, arg := range args {
		key, value, set := strings.Cut(arg, "=")
		if !set {
			var ok bool
			if key, ok = strings.CutSuffix(arg, "-"); !ok {
				return nil, fmt.Errorf("label %q: give KEY=VALUE to set a label or KEY- to remove one", arg)
			}
		}
		if err := api.ValidateLabelKey("", key); err != nil {
			return nil, fmt.Errorf("label %q: %w", arg, err)
		}
		if set {
			if err := api.ValidateLabelValue("", key, value); err != nil {
				return nil, fmt.Errorf("label %q: %w", arg, err)
			}
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("label %q: the key %s is given twice", arg, key)
		}
		if set {
			v := value
			out[key] = &v
		} else {
			out[key] = nil
		}
	}
	return out, nil
}
