package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultConfigPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{name: "FERRY_CONFIG wins", env: map[string]string{"FERRY_CONFIG": "/etc/ferry.json", "XDG_CONFIG_HOME": "/x", "HOME": "/h"}, want: "/etc/ferry.json"},
		{name: "XDG_CONFIG_HOME", env: map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/h"}, want: "/x/ferry/config.json"},
		{name: "HOME", env: map[string]string{"HOME": "/h"}, want: "/h/.config/ferry/config.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := DefaultConfigPath(func(k string) string { return tc.env[k] })
			if err != nil || got != tc.want {
				t.Errorf("DefaultConfigPath() = %q, %v, want %q", got, err, tc.want)
			}
		})
	}
}

func TestConfigLoadSave(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "config.json")

	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig(missing) error = %v, want none", err)
	}
	if cfg.Current != "" || len(cfg.Contexts) != 0 || cfg.Contexts == nil {
		t.Fatalf("LoadConfig(missing) = %+v, want empty with a map", cfg)
	}

	dev := Context{Server: "https://127.0.0.1:7443", Token: "t1", CAFile: "/d/ca.crt"}
	cfg.SetContext("dev", dev, false)
	if cfg.Current != "dev" {
		t.Errorf("first SetContext: current = %q, want dev", cfg.Current)
	}
	cfg.SetContext("prod", Context{Server: "https://prod:7443", Token: "t2"}, false)
	if cfg.Current != "dev" {
		t.Errorf("SetContext(makeCurrent=false): current = %q, want dev", cfg.Current)
	}
	if err := SaveConfig(path, cfg); err != nil {
		t.Fatalf("SaveConfig: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("config mode = %v, want 0600", perm)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("config dir mode = %v (%v), want 0700", st.Mode().Perm(), err)
	}
	back, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("LoadConfig after SaveConfig = %+v, want %+v", back, cfg)
	}
	data, _ := os.ReadFile(path)
	if !bytes.Contains(data, []byte(`"caFile": "/d/ca.crt"`)) {
		t.Errorf("saved config lacks the caFile key:\n%s", data)
	}

	back.SetContext("prod", Context{Server: "https://prod2:7443", Token: "t3"}, true)
	if err := SaveConfig(path, back); err != nil {
		t.Fatal(err)
	}
	again, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.Current != "prod" || again.Contexts["prod"].Server != "https://prod2:7443" || again.Contexts["dev"] != dev {
		t.Errorf("after replacing prod: %+v", again)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("config dir holds %d files, want only config.json (no temporary files left)", len(entries))
	}
}

func TestSetContextOnZeroValue(t *testing.T) {
	t.Parallel()
	var cfg ConfigFile
	cfg.SetContext("a", Context{Server: "https://a"}, false)
	if cfg.Current != "a" || cfg.Contexts["a"].Server != "https://a" {
		t.Errorf("SetContext on zero ConfigFile: %+v", cfg)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data, wantErr string
	}{
		{name: "not JSON", data: "{", wantErr: "not valid"},
		{name: "unknown field", data: `{"contexts":{"a":{"server":"https://a","ca_file":"x"}}}`, wantErr: `unknown field "ca_file"`},
		{name: "trailing data", data: `{} {}`, wantErr: "data after the JSON object"},
		{name: "wrong type", data: `{"contexts":[]}`, wantErr: "not valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(path)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("LoadConfig(%s) error = %v, want naming the file and containing %q", tc.data, err, tc.wantErr)
			}
		})
	}
	t.Run("empty file is an empty config", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path)
		if err != nil || len(cfg.Contexts) != 0 {
			t.Errorf("LoadConfig(empty) = %+v, %v", cfg, err)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"current":"dev","contexts":{"dev":{"server":"https://127.0.0.1:7443","token":"x","caFile":"/ca.crt"}}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(``))
	f.Add([]byte(`{"contexts":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfig(data)
		if err != nil {
			return
		}
		if cfg.Contexts == nil {
			t.Fatal("parseConfig returned nil Contexts")
		}
		// What parses must survive a save and load unchanged.
		path := filepath.Join(t.TempDir(), "c.json")
		if err := SaveConfig(path, cfg); err != nil {
			t.Fatalf("SaveConfig: %v", err)
		}
		back, err := LoadConfig(path)
		if err != nil {
			t.Fatalf("LoadConfig of a saved config: %v", err)
		}
		if !reflect.DeepEqual(back, cfg) {
			t.Fatalf("round trip: %+v, want %+v", back, cfg)
		}
	})
}

func TestResolve(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	configPath := filepath.Join(dir, "config.json")
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("dev-ca.crt", "DEV CA")
	prodCA := write("prod-ca.crt", "PROD CA")
	envCA := write("env-ca.crt", "ENV CA")
	flagCA := write("flag-ca.crt", "FLAG CA")
	cfg := &ConfigFile{}
	cfg.SetContext("dev", Context{Server: "https://dev:7443", Token: "devtok", CAFile: "dev-ca.crt"}, true)
	cfg.SetContext("prod", Context{Server: "https://prod:7443", Token: "prodtok", CAFile: prodCA}, false)
	if err := SaveConfig(configPath, cfg); err != nil {
		t.Fatal(err)
	}
	noCurrent := filepath.Join(dir, "nocurrent.json")
	if err := SaveConfig(noCurrent, &ConfigFile{Contexts: map[string]Context{"x": {Server: "https://x"}}}); err != nil {
		t.Fatal(err)
	}
	broken := write("broken.json", "{")

	tests := []struct {
		name    string
		flags   Globals
		env     map[string]string
		want    connection // cfg.CAPEM compared as a string
		wantCA  string
		wantErr string
	}{
		{
			name:   "current context",
			want:   connection{cfg: cfgOf("https://dev:7443", "devtok"), context: "dev"},
			wantCA: "DEV CA",
		},
		{
			name:   "--context",
			flags:  Globals{Context: "prod"},
			want:   connection{cfg: cfgOf("https://prod:7443", "prodtok"), context: "prod"},
			wantCA: "PROD CA",
		},
		{
			name:   "env server is the context's: context token and CA used",
			env:    map[string]string{"FERRY_SERVER": "https://dev:7443/"},
			want:   connection{cfg: cfgOf("https://dev:7443/", "devtok"), context: "dev"},
			wantCA: "DEV CA",
		},
		{
			name:    "env server elsewhere: context token not sent there",
			env:     map[string]string{"FERRY_SERVER": "https://other:7443"},
			wantErr: "no token for server https://other:7443: pass --token or set FERRY_TOKEN",
		},
		{
			name: "env server and token",
			env:  map[string]string{"FERRY_SERVER": "https://other:7443", "FERRY_TOKEN": "envtok"},
			want: connection{cfg: cfgOf("https://other:7443", "envtok")},
		},
		{
			name:   "flags beat env",
			flags:  Globals{Server: "https://flag:1", Token: "flagtok", CAFile: flagCA},
			env:    map[string]string{"FERRY_SERVER": "https://env:1", "FERRY_TOKEN": "envtok", "FERRY_CA_FILE": envCA},
			want:   connection{cfg: cfgOf("https://flag:1", "flagtok")},
			wantCA: "FLAG CA",
		},
		{
			name:   "env token and CA beat the context's",
			env:    map[string]string{"FERRY_TOKEN": "envtok", "FERRY_CA_FILE": envCA},
			want:   connection{cfg: cfgOf("https://dev:7443", "envtok"), context: "dev"},
			wantCA: "ENV CA",
		},
		{
			name:    "unknown --context",
			flags:   Globals{Context: "nope"},
			wantErr: `context "nope" is not in ` + configPath + ` (contexts: "dev", "prod")`,
		},
		{
			name:    "no config file",
			flags:   Globals{ConfigPath: filepath.Join(dir, "missing.json")},
			wantErr: errNoServer,
		},
		{
			name:    "config without a current context",
			flags:   Globals{ConfigPath: noCurrent},
			wantErr: errNoServer,
		},
		{
			name:    "broken config",
			flags:   Globals{ConfigPath: broken},
			wantErr: "config file " + broken + ": not valid",
		},
		{
			name:  "broken config not needed when flags say everything",
			flags: Globals{ConfigPath: broken, Server: "https://s", Token: "tok"},
			want:  connection{cfg: cfgOf("https://s", "tok")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := tc.flags
			if g.ConfigPath == "" {
				g.ConfigPath = configPath
			}
			a := &app{opts: RootOptions{Getenv: func(k string) string { return tc.env[k] }}, g: &g}
			got, err := a.resolve()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("resolve() error = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("resolve(): %v", err)
			}
			if string(got.cfg.CAPEM) != tc.wantCA {
				t.Errorf("CA = %q, want %q", got.cfg.CAPEM, tc.wantCA)
			}
			got.cfg.CAPEM, got.caFile = nil, ""
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("resolve() = %+v, want %+v", *got, tc.want)
			}
		})
	}
}

// TestConfigContextEndToEnd registers a context the way `ferry dev` will
// and runs a verb with no flags and no environment but the config path.
func TestConfigContextEndToEnd(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	seed(e.api)
	path := filepath.Join(e.dir, "ferry.json")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SetContext("dev", Context{Server: e.srv.URL, Token: testToken, CAFile: "ca.crt"}, true) // relative to the config's dir
	if err := SaveConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	e.env = map[string]string{"FERRY_CONFIG": path, "HOME": e.dir}
	r := e.run(t, runOpts{}, "instance", "ls")
	r.check(t, []string{"web-1", "db"}, "")

	e.env = map[string]string{"HOME": e.dir}
	r = e.run(t, runOpts{}, "--config", path, "--context", "dev", "node", "ls")
	r.check(t, []string{"n1", "n2"}, "")

	e.env = map[string]string{"HOME": e.dir}
	r = e.run(t, runOpts{}, "instance", "ls") // ~/.config/ferry/config.json does not exist
	r.check(t, nil, errNoServer)
}

func cfgOf(server, token string) clientConfig {
	return clientConfig{Server: server, Token: token}
}
