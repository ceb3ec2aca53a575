package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
	"github.com/spf13/cobra"
)

// waitFlags are the flags of a verb that can wait for its outcome.
type waitFlags struct {
	wait    bool
	timeout time.Duration
}

func (w *waitFlags) bind(cmd *cobra.Command, what string) {
	w.bindFor(cmd, "wait until the instance is "+what+", printing progress", 5*time.Minute)
}

// bindFor adds --wait, described by usage, and --timeout with its default.
func (w *waitFlags) bindFor(cmd *cobra.Command, usage string, timeout time.Duration) {
	cmd.Flags().BoolVar(&w.wait, "wait", false, usage)
	cmd.Flags().DurationVar(&w.timeout, "timeout", timeout, "how long --wait waits")
}

func (a *app) newInstanceCmd() *cobra.Command {
	cmd := newGroup("instance", "Create, list, start, stop and remove instances", "inst", "i", "instances")
	cmd.AddCommand(
		a.newInstanceCreateCmd(),
		a.newInstanceListCmd(),
		a.newInstanceShowCmd(),
		a.newInstanceStartStopCmd("start"),
		a.newInstanceStartStopCmd("stop"),
		a.newInstanceRemoveCmd(),
		a.newInstanceWaitSyncedCmd(),
		a.newInstanceMigrateCmd(),
		a.newInstanceHistoryCmd(),
		a.newConsoleCmd(),
		a.newLogsCmd(),
	)
	return cmd
}

// createFlags are the flags of `instance create`.
type createFlags struct {
	cpus    int
	memory  string
	disk    string
	image   string
	owner   string
	stopped bool
	network string
	ip      string
	mac     string
	storage string
	probe   string
	restart string
	noHA    bool
	group   string
	waitFlags
}

func (a *app) newInstanceCreateCmd() *cobra.Command {
	f := &createFlags{}
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an instance",
		Long: `Create an instance from an image. Sizes take binary units: 256M, 1.5G, 20GiB.
The instance starts as soon as a host is chosen, unless --stopped is given.

Its NIC joins --network (default: the network called "default", if any) with
--ip and --mac, assigned by the server when not given; they stay the same
wherever the instance runs. --storage shared:/dir puts the disk in a directory
every host mounts, so the instance can start on any host (instance start --on).
--probe says how ferry decides the guest is serving: tcp:22,80 (a connect to
any port succeeds; the default) or http:80/healthz (GET answers 2xx or 3xx).
--restart says what happens when the VM stops by itself: always (the default),
on-failure (not after a clean poweroff) or never.
--group names an anti-affinity group: the scheduler keeps the instances of one
group on different hosts, so one host failing takes down at most one of them.`,
		Example: `  ferry instance create web-1 --cpus 2 --memory 512M --disk 4G --image demo --wait
  ferry instance create web-2 --network lan --ip 10.77.0.20 --probe http:80/healthz --restart on-failure
  ferry instance create db-1 --storage shared:/mnt/ferry --probe tcp:5432
  ferry instance create web-3 --group web`,
		Args: exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runInstanceCreate(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.cpus, "cpus", 1, "virtual CPUs")
	fl.StringVar(&f.memory, "memory", "256M", "memory, e.g. 256M or 1G")
	fl.StringVar(&f.disk, "disk", "1G", "disk size, e.g. 1G or 20G")
	fl.StringVar(&f.image, "image", "demo", "image the disk is cloned from (see: ferry image ls)")
	fl.StringVar(&f.owner, "owner", "", "customer the instance belongs to, for SLA reports")
	fl.BoolVar(&f.stopped, "stopped", false, "create the instance without starting it")
	fl.StringVar(&f.network, "network", "", "network of the instance's NIC (default: \"default\", if it exists)")
	fl.StringVar(&f.ip, "ip", "", "IPv4 address on the network (default: assigned)")
	fl.StringVar(&f.mac, "mac", "", "MAC address of the NIC (default: assigned)")
	fl.StringVar(&f.storage, "storage", "", "where the disk lives: local or shared:/dir (default local)")
	fl.StringVar(&f.probe, "probe", "", "serving check: tcp:PORT[,PORT...] or http:PORT[/PATH] (default tcp:22,80)")
	fl.StringVar(&f.restart, "restart", "", "when the VM stops by itself: always, on-failure or never (default always)")
	fl.BoolVar(&f.noHA, "no-ha", false, "do not fail the instance over to its replica's host when its host dies")
	fl.StringVar(&f.group, "group", "", "anti-affinity group: instances of one group are kept on different hosts")
	f.waitFlags.bind(cmd, "Running (Stopped with --stopped)")
	return cmd
}

// createRequest builds and checks a create request from the flags, so that
// mistakes are reported against the flag before anything is sent.
func (f *createFlags) createRequest(name string) (api.CreateInstanceRequest, error) {
	mem, err := api.ParseBytes(f.memory)
	if err != nil {
		return api.CreateInstanceRequest{}, fmt.Errorf("--memory: %w", err)
	}
	disk, err := api.ParseBytes(f.disk)
	if err != nil {
		return api.CreateInstanceRequest{}, fmt.Errorf("--disk: %w", err)
	}
	req := api.CreateInstanceRequest{
		Name: name,
		Spec: api.InstanceSpec{
			CPUs: f.cpus, Memory: mem, Disk: disk, Image: f.image, Owner: f.owner,
			State:   api.DesiredRunning,
			Network: f.network, IP: f.ip, MAC: f.mac, Storage: f.storage,
			RestartPolicy: api.RestartPolicy(f.restart),
			Group:         f.group,
		},
	}
	if f.stopped {
		req.Spec.State = api.DesiredStopped
	}
	if f.noHA {
		off := false
		req.Spec.HA = &off
	}
	if f.probe != "" {
		if req.Spec.Probe, err = parseProbe(f.probe); err != nil {
			return req, err
		}
	}
	if err := req.Validate(nil); err != nil {
		return req, fieldToFlag(err)
	}
	return req, nil
}

// createFlagFor maps a field of a create request to the flag that sets it.
func createFlagFor(field string) string {
	switch field {
	case "name":
		return "NAME"
	case "spec.cpus":
		return "--cpus"
	case "spec.memory":
		return "--memory"
	case "spec.disk":
		return "--disk"
	case "spec.image":
		return "--image"
	case "spec.owner":
		return "--owner"
	case "spec.state":
		return "--stopped"
	case "spec.network":
		return "--network"
	case "spec.ip":
		return "--ip"
	case "spec.mac":
		return "--mac"
	case "spec.storage":
		return "--storage"
	case "spec.restartPolicy":
		return "--restart"
	case "spec.group":
		return "--group"
	case "on":
		return "--on"
	}
	if field == "spec.probe" || strings.HasPrefix(field, "spec.probe.") {
		return "--probe"
	}
	return field
}

// flagError is a validation error reported against a flag or argument.
type flagError struct {
	flag, msg string
	err       error
}

func (e *flagError) Error() string { return e.flag + ": " + e.msg }
func (e *flagError) Unwrap() error { return e.err }

// apiField is the field an API error blames, if any.
func apiField(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Field
	}
	return ""
}

// fieldToFlag rewrites a field error (local, or from the server) so that it
// names the flag: "spec.memory: must be ..." becomes "--memory: must be ...".
func fieldToFlag(err error) error {
	var fe *api.FieldError
	if errors.As(err, &fe) && fe.Field != "" {
		return &flagError{flag: createFlagFor(fe.Field), msg: fe.Message, err: err}
	}
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Field != "" {
		return &flagError{flag: createFlagFor(ae.Field), msg: strings.TrimPrefix(ae.Message, ae.Field+": "), err: err}
	}
	return err
}

func (a *app) runInstanceCreate(cmd *cobra.Command, name string, f *createFlags) error {
	req, err := f.createRequest(name)
	if err != nil {
		return err
	}
	c, conn, err := a.newClient()
	if err != nil {
		return err
	}
	ctx, cancel := a.requestContext(cmd)
	inst, err := c.CreateInstance(ctx, req)
	cancel()
	if err != nil {
		if client.IsConflict(err) && (apiField(err) == "" || apiField(err) == "name") {
			return &messageError{msg: fmt.Sprintf("instance %q already exists", name), err: err}
		}
		return explain(fieldToFlag(err), conn, "instance", "")
	}
	if f.wait {
		target := api.PhaseRunning
		if f.stopped {
			target = api.PhaseStopped
		}
		if inst, err = a.waitForPhase(cmd, c, inst, target, f.timeout); err != nil {
			return explain(err, conn, "instance", name)
		}
	}
	if a.g.JSON {
		return printJSON(a.stdout(), inst)
	}
	if f.wait {
		fmt.Fprintf(a.stdout(), "instance %q created and %s\n", name, describePlace(inst))
		return nil
	}
	fmt.Fprintf(a.stdout(), "instance %q created (%s)\n", name, dash(string(inst.Status.Phase)))
	return nil
}

// describePlace says where an instance is: "Running on n1 (replica on n2)".
func describePlace(inst *api.Instance) string {
	s := string(inst.Status.Phase)
	if inst.Status.Node != "" {
		s += " on " + inst.Status.Node
	}
	if inst.Status.ReplicaNode != "" {
		s += " (replica on " + inst.Status.ReplicaNode + ")"
	}
	return clean(s)
}

func (a *app) newInstanceListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List instances",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := fetch(a, cmd, "instance", "", (*client.Client).ListInstances)
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), list)
			}
			return a.printInstances(list.Items)
		},
	}
}

func (a *app) printInstances(items []api.Instance) error {
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	now := a.opts.Now()
	t := newTable(a.stdout(), "NAME", "PHASE", "SERVING", "NODE", "REPLICA", "DISK-REPL", "IP", "CPUS", "MEMORY", "DISK", "AGE", "SINCE")
	for _, in := range items {
		phase := string(in.Status.Phase)
		if in.Status.Deleting && in.Status.Phase != api.PhaseDeleting {
			phase += ",Deleting"
		}
		t.row(in.Name, phase, yesNo(in.Status.Serving), in.Status.Node, in.Status.ReplicaNode, diskColumn(&in), in.Spec.IP,
			strconv.Itoa(in.Spec.CPUs), fmtBytes(in.Spec.Memory), fmtBytes(in.Spec.Disk),
			ago(now, in.CreatedAt), ago(now, in.Status.Since))
	}
	return t.flush()
}

func (a *app) newInstanceShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get", "describe"},
		Short:   "Show an instance's spec and status",
		Args:    exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := fetch(a, cmd, "instance", args[0], func(c *client.Client, ctx context.Context) (*api.Instance, error) {
				return c.GetInstance(ctx, args[0])
			})
			if err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.stdout(), inst)
			}
			return a.printInstance(inst)
		},
	}
}

func (a *app) printInstance(in *api.Instance) error {
	now := a.opts.Now()
	d := newDetails(a.stdout())
	d.add("Name", in.Name)
	d.add("Owner", in.Spec.Owner)
	d.add("Created", timestamp(now, in.CreatedAt))
	d.add("Image", in.Spec.Image)
	d.add("CPUs", strconv.Itoa(in.Spec.CPUs))
	d.add("Memory", fmtBytes(in.Spec.Memory))
	d.add("Disk", fmtBytes(in.Spec.Disk))
	d.add("Desired state", string(in.Spec.State))
	phase := string(in.Status.Phase)
	if in.Status.Deleting {
		phase += " (being deleted)"
	}
	d.add("Phase", phase)
	d.add("Since", timestamp(now, in.Status.Since))
	d.add("Serving", serving(now, in.Status))
	d.add("Boots", strconv.Itoa(in.Status.Boots))
	d.add("Host", in.Status.Node)
	d.add("Replica host", in.Status.ReplicaNode)
	d.add("Disk replication", diskReplication(in))
	d.add("Replica", replicaState(in))
	if m := in.Status.Migration; m != nil {
		d.add("Migration", describeMigration(m))
	}
	d.add("Network", in.Spec.Network)
	d.add("IP", in.Spec.IP)
	d.add("MAC", in.Spec.MAC)
	storage := in.Spec.Storage
	if storage == "" {
		storage = "local"
	}
	d.add("Storage", storage)
	if in.Spec.Probe != nil {
		d.add("Probe", formatProbe(*in.Spec.Probe))
	} else {
		d.add("Probe", formatProbe(api.DefaultProbe())+" (default)")
	}
	restart := string(in.Spec.RestartPolicy)
	if restart == "" {
		restart = string(api.RestartAlways) + " (default)"
	}
	d.add("Restart policy", restart)
	ha := "on (fails over to its replica's host when its host dies)"
	if !in.Spec.HAEnabled() {
		ha = "off (--no-ha): waits for its host to return"
	}
	d.add("HA", ha)
	d.add("Group", in.Spec.Group)
	d.add("Message", in.Status.Message)
	d.add("Last error", in.Status.LastError)
	d.add("UID", in.UID)
	d.add("Resource version", in.ResourceVersion)
	return d.flush()
}

// serving says whether the guest is serving and since when: "yes, since
// 2025-01-02 03:04:05 UTC (5m ago)".
func serving(now time.Time, st api.InstanceStatus) string {
	s := yesNo(st.Serving)
	if !st.ServingSince.IsZero() {
		s += ", since " + timestamp(now, st.ServingSince)
	}
	return s
}

func (a *app) newInstanceStartStopCmd(verb string) *cobra.Command {
	wf := &waitFlags{}
	var on string
	target, desired := api.PhaseRunning, api.DesiredRunning
	short := "Start an instance"
	if verb == "stop" {
		target, desired = api.PhaseStopped, api.DesiredStopped
		short = "Stop an instance"
	}
	cmd := &cobra.Command{
		Use:   verb + " NAME",
		Short: short,
		Args:  exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if cmd.Flags().Changed("on") {
				if err := api.ValidateName("--on", on); err != nil {
					return err
				}
			}
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			var inst *api.Instance
			switch {
			case verb == "stop":
				inst, err = c.StopInstance(ctx, name, "")
			case on != "":
				inst, err = c.StartInstanceOn(ctx, name, on)
			default:
				inst, err = c.StartInstance(ctx, name, "")
			}
			cancel()
			if err != nil {
				if on != "" {
					// A 404 may be about the node: keep the server's words.
					return explain(fieldToFlag(err), conn, "instance", "")
				}
				return explain(err, conn, "instance", name)
			}
			if wf.wait {
				if inst, err = a.waitForPhase(cmd, c, inst, target, wf.timeout); err != nil {
					return explain(err, conn, "instance", name)
				}
			}
			if a.g.JSON {
				return printJSON(a.stdout(), inst)
			}
			if wf.wait {
				fmt.Fprintf(a.stdout(), "instance %q is %s\n", name, describePlace(inst))
				return nil
			}
			where := ""
			if on != "" {
				where = " on " + on
			}
			fmt.Fprintf(a.stdout(), "instance %q: desired state %s%s (now %s)\n", name, desired, where, dash(string(inst.Status.Phase)))
			return nil
		},
	}
	wf.bind(cmd, string(target))
	if verb == "start" {
		cmd.Long = `Start an instance where it is placed. --on NODE starts it on NODE instead,
moving it there: only for an instance on shared storage (--storage shared:/dir)
that is not running anywhere.`
		cmd.Example = "  ferry instance start web-1 --wait\n  ferry instance start db-1 --on n3 --wait"
		cmd.Flags().StringVar(&on, "on", "", "start on this node, moving the instance there (shared storage only)")
	}
	return cmd
}

func (a *app) newInstanceRemoveCmd() *cobra.Command {
	wf := &waitFlags{}
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete", "remove"},
		Short:   "Remove an instance and its disks",
		Long: `Remove an instance: its host's agent destroys the VM and the disk and its
replica, then the record goes. --force removes the record at once, without
waiting for the agent (use it when the host is gone for good).`,
		Args: exactlyOneName("instance"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c, conn, err := a.newClient()
			if err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd)
			inst, removed, err := c.DeleteInstance(ctx, name, "", force)
			cancel()
			if err != nil {
				return explain(err, conn, "instance", name)
			}
			if !removed && wf.wait {
				if err := a.waitGone(cmd, c, name, wf.timeout); err != nil {
					return explain(err, conn, "instance", name)
				}
				removed = true
			}
			if a.g.JSON {
				if inst == nil {
					return nil
				}
				return printJSON(a.stdout(), inst)
			}
			if removed {
				fmt.Fprintf(a.stdout(), "instance %q deleted\n", name)
			} else {
				fmt.Fprintf(a.stdout(), "instance %q is being deleted\n", name)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the record at once, without waiting for the host's agent")
	wf.bind(cmd, "gone")
	return cmd
}

// joinNonEmpty joins the non-empty strings with sep.
func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}
