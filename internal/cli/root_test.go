package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestAddedCommandSeesGlobals is how cmd/ferry adds `server`, `agent` and
// `dev`: AddCommand on the root, reading the global flags from Globals.
func TestAddedCommandSeesGlobals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantJSON bool
		wantCfg  string
	}{
		{name: "defaults", args: []string{"dev"}, wantCfg: "/home/u/.config/ferry/config.json"},
		{name: "flags before", args: []string{"--log-format", "json", "--config", "/c.json", "dev"}, wantJSON: true, wantCfg: "/c.json"},
		{name: "flags after", args: []string{"dev", "--log-format=json"}, wantJSON: true, wantCfg: "/home/u/.config/ferry/config.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := &Globals{}
			var stdout, stderr, logs bytes.Buffer
			root := NewRoot(RootOptions{
				Stdout: &stdout, Stderr: &stderr, Globals: g,
				Getenv: func(k string) string { return map[string]string{"HOME": "/home/u"}[k] },
			})
			ran := false
			root.AddCommand(&cobra.Command{
				Use: "dev",
				RunE: func(cmd *cobra.Command, args []string) error {
					ran = true
					g.Logger(&logs).Info("cluster up", "nodes", 3)
					return nil
				},
			})
			root.SetArgs(tc.args)
			if err := root.Execute(); err != nil {
				t.Fatalf("Execute(%q): %v", tc.args, err)
			}
			if !ran {
				t.Fatal("added command did not run")
			}
			if g.ConfigPath != tc.wantCfg {
				t.Errorf("ConfigPath = %q, want %q", g.ConfigPath, tc.wantCfg)
			}
			isJSON := json.Valid(bytes.TrimSpace(logs.Bytes()))
			if isJSON != tc.wantJSON || !strings.Contains(logs.String(), "cluster up") {
				t.Errorf("log output %q: JSON = %v, want %v", logs.String(), isJSON, tc.wantJSON)
			}
		})
	}
}

// TestNewRootIndependent checks that two trees share no state.
func TestNewRootIndependent(t *testing.T) {
	t.Parallel()
	g1, g2 := &Globals{}, &Globals{}
	r1 := NewRoot(RootOptions{Globals: g1, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }})
	r2 := NewRoot(RootOptions{Globals: g2, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }})
	r1.SetArgs([]string{"--server", "https://one", "--json", "--help"})
	if err := r1.Execute(); err != nil {
		t.Fatal(err)
	}
	if g1.Server != "https://one" || !g1.JSON {
		t.Errorf("tree 1 globals = %+v", g1)
	}
	if g2.Server != "" || g2.JSON {
		t.Errorf("tree 2 globals changed by tree 1: %+v", g2)
	}
	if r2.PersistentFlags().Lookup("server").Value.String() != "" {
		t.Error("tree 2 --server changed by tree 1")
	}
}

func TestHelpListsVerbs(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	root := NewRoot(RootOptions{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }})
	root.SetArgs([]string{})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"version", "instance", "node", "image", "network", "console", "logs", "events", "--server", "--token", "--ca-file", "--config", "--log-format", "--json"} {
		if !strings.Contains(out.String(), verb) {
			t.Errorf("help lacks %q:\n%s", verb, out.String())
		}
	}
}
