package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// RootOptions configures [NewRoot]. The zero value is what a real process
// wants; tests replace the writers, the environment and the clock.
type RootOptions struct {
	// Stdin is what `ferry console` sends to the guest; nil means os.Stdin.
	// When it is a terminal (an *os.File that is one), console puts it in
	// raw mode for the session.
	Stdin io.Reader
	// Stdout receives command output; nil means os.Stdout.
	Stdout io.Writer
	// Stderr receives errors and progress (--wait, uploads, builds); nil
	// means os.Stderr.
	Stderr io.Writer
	// Version is this binary's version, shown by `ferry version`; empty
	// means "dev".
	Version string
	// Getenv reads the environment (FERRY_SERVER, FERRY_TOKEN,
	// FERRY_CA_FILE, FERRY_CONFIG, XDG_CONFIG_HOME, HOME); nil means
	// os.Getenv.
	Getenv func(string) string
	// Now returns the current time, for AGE and SINCE columns; nil means
	// time.Now.
	Now func() time.Time
	// Globals, if not nil, is where the global flags are stored, so that
	// commands the caller adds to the root (server, agent, dev) can read
	// them once flags are parsed. Nil means a private one.
	Globals *Globals
	// PollInterval is how often --wait polls an instance; 0 means 1s.
	PollInterval time.Duration
	// RequestTimeout bounds each API call of a verb, but not an event
	// stream, a console session, an upload or a --wait; 0 means 30s.
	RequestTimeout time.Duration
	// ConsoleLinger is how long `ferry console` goes on printing the
	// guest's output once stdin has ended, counted from the last output
	// (socat -t waits the same way); 0 means 1s.
	ConsoleLinger time.Duration
}

// Globals holds the values of the global flags of a root built by
// [NewRoot]. They are set when the command line is parsed, before any
// command runs.
type Globals struct {
	// Server is --server: the server URL, overriding FERRY_SERVER and the
	// config file's context.
	Server string
	// Token is --token, overriding FERRY_TOKEN and the context's token.
	Token string
	// CAFile is --ca-file, overriding FERRY_CA_FILE and the context's CA.
	CAFile string
	// ConfigPath is --config, defaulting to [DefaultConfigPath].
	ConfigPath string
	// Context is --context: the config file's context to use instead of
	// its current one.
	Context string
	// LogFormat is --log-format.
	LogFormat LogFormat
	// JSON is --json: print API objects as JSON instead of tables.
	JSON bool
}

// LogFormat is how log records are written: "text" or "json". It
// implements pflag.Value, so a bad --log-format fails flag parsing.
type LogFormat string

// Log formats.
const (
	LogText LogFormat = "text"
	LogJSON LogFormat = "json"
)

// String returns the format's name.
func (f *LogFormat) String() string { return string(*f) }

// Set parses a format name.
func (f *LogFormat) Set(s string) error {
	switch LogFormat(s) {
	case LogText, LogJSON:
		*f = LogFormat(s)
		return nil
	}
	return fmt.Errorf("must be %q or %q", LogText, LogJSON)
}

// Type names the flag's value type in help.
func (f *LogFormat) Type() string { return "text|json" }

// Logger returns a logger writing to w in the format of --log-format, at
// level Info and above.
func (g *Globals) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if g.LogFormat == LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// app is what every command of one tree shares: options and parsed flags.
type app struct {
	opts RootOptions
	g    *Globals
}

// NewRoot returns a new `ferry` command tree with the user verbs. Execute
// it with ExecuteContext; cancelling the context stops `events` (cleanly)
// and --wait (with an error). Every error is printed once to Stderr as
// "Error: ..."; usage is not printed, but flag and argument errors end with
// a hint to --help. cmd/ferry should exit non-zero when Execute returns an
// error.
func NewRoot(opts RootOptions) *cobra.Command {
	if opts.Stdin == nil {
		opts.Stdin = os.Stdin
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Globals == nil {
		opts.Globals = &Globals{}
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.ConsoleLinger <= 0 {
		opts.ConsoleLinger = time.Second
	}
	a := &app{opts: opts, g: opts.Globals}

	root := &cobra.Command{
		Use:   "ferry",
		Short: "ferry runs VMs on a cluster of hosts and moves them when a host fails",
		Long: `ferry runs VMs on a cluster of hosts, keeps a synchronous replica of each disk
on a second host, and restarts an instance there when its host fails.

The user commands talk to a ferry server over HTTPS. Which server, and the
token to use, come from --server/--token/--ca-file, else FERRY_SERVER,
FERRY_TOKEN and FERRY_CA_FILE, else the current context of the config file.`,
		SilenceUsage: true,
		Args:         groupArgs,
		RunE:         runGroup,
	}
	root.SetOut(opts.Stdout)
	root.SetErr(opts.Stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return withHint(err, usageHint(c))
	})

	defaultConfig, err := DefaultConfigPath(opts.Getenv)
	if err != nil {
		defaultConfig = ""
	}
	a.g.ConfigPath = defaultConfig
	a.g.LogFormat = LogText
	pf := root.PersistentFlags()
	pf.StringVar(&a.g.Server, "server", "", "server URL, e.g. https://10.0.0.1:7443 (env FERRY_SERVER)")
	pf.StringVar(&a.g.Token, "token", "", "bearer token (env FERRY_TOKEN)")
	pf.StringVar(&a.g.CAFile, "ca-file", "", "PEM file of the cluster CA that signed the server's certificate (env FERRY_CA_FILE)")
	pf.StringVar(&a.g.ConfigPath, "config", defaultConfig, "config file with contexts (env FERRY_CONFIG)")
	pf.StringVar(&a.g.Context, "context", "", "context of the config file to use instead of its current one")
	pf.Var(&a.g.LogFormat, "log-format", "log format: text or json")
	pf.BoolVar(&a.g.JSON, "json", false, "print API objects as JSON")

	root.AddCommand(
		a.newVersionCmd(),
		a.newInstanceCmd(),
		a.newNodeCmd(),
		a.newImageCmd(),
		a.newNetworkCmd(),
		a.newConsoleCmd(),
		a.newLogsCmd(),
		a.newEventsCmd(),
		a.newOperationCmd(),
		a.newClusterCmd(),
		a.newSLACmd(),
		a.newMaintenanceCmd(),
	)
	return root
}

// groupArgs rejects an unknown subcommand of a command that only groups
// others (cobra would print help instead).
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return withHint(fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath()), usageHint(cmd))
	}
	return nil
}

// runGroup shows the help of a command that only groups others.
func runGroup(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// newGroup returns a command that only groups subcommands.
func newGroup(use, short string, aliases ...string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Aliases: aliases, Args: groupArgs, RunE: runGroup}
}

// exactlyOneName accepts exactly one positional argument, a kind's NAME.
func exactlyOneName(kind string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 1 && strings.TrimSpace(args[0]) != "":
			return nil
		case len(args) == 0 || strings.TrimSpace(args[0]) == "":
			return withHint(fmt.Errorf("missing the %s NAME", kind), usageHint(cmd))
		}
		return withHint(fmt.Errorf("expected one %s NAME, got %d arguments: %s", kind, len(args), strings.Join(args, " ")), usageHint(cmd))
	}
}

// noArgs accepts no positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return withHint(fmt.Errorf("unexpected argument %q", args[0]), usageHint(cmd))
	}
	return nil
}

// requestContext bounds one API call.
func (a *app) requestContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.opts.RequestTimeout)
}

// stdin, stdout and stderr are the tree's streams.
func (a *app) stdin() io.Reader  { return a.opts.Stdin }
func (a *app) stdout() io.Writer { return a.opts.Stdout }
func (a *app) stderr() io.Writer { return a.opts.Stderr }
