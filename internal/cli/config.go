package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ConfigFile is the CLI's config file: named contexts, each a server and
// the credentials to use with it, and which one is current, as in
//
//	{"current":"dev","contexts":{"dev":{"server":"https://127.0.0.1:7443","token":"...","caFile":"/path/ca.crt"}}}
type ConfigFile struct {
	// Current names the context used when --context is not given.
	Current string `json:"current,omitempty"`
	// Contexts maps a context name to its server and credentials.
	Contexts map[string]Context `json:"contexts"`
}

// Context is one server and the credentials to use with it.
type Context struct {
	// Server is the server's URL, e.g. "https://127.0.0.1:7443".
	Server string `json:"server"`
	// Token is the bearer token.
	Token string `json:"token,omitempty"`
	// CAFile is the path of the cluster CA certificate (PEM). A relative
	// path is relative to the config file's directory. Empty means the
	// system roots.
	CAFile string `json:"caFile,omitempty"`
}

// maxConfigBytes caps the config file; a real one is a few hundred bytes.
const maxConfigBytes = 1 << 20

// DefaultConfigPath returns where the config file lives: $FERRY_CONFIG if
// set, else $XDG_CONFIG_HOME/ferry/config.json, else
// ~/.config/ferry/config.json. getenv reads the environment (os.Getenv if
// nil).
func DefaultConfigPath(getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if p := getenv("FERRY_CONFIG"); p != "" {
		return p, nil
	}
	if dir := getenv("XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "ferry", "config.json"), nil
	}
	home := getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("finding the config file: %w", err)
		}
	}
	return filepath.Join(home, ".config", "ferry", "config.json"), nil
}

// LoadConfig reads the config file at path. A file that does not exist
// gives an empty config and no error, so that a first `ferry dev` can add a
// context to it and save it. Unknown fields are errors, so that a typo such
// as "ca_file" does not go unnoticed.
func LoadConfig(path string) (*ConfigFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &ConfigFile{Contexts: map[string]Context{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg, err := parseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return cfg, nil
}

// parseConfig decodes a config file's contents strictly.
func parseConfig(data []byte) (*ConfigFile, error) {
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigBytes)
	}
	cfg := &ConfigFile{}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(cfg); err != nil {
			return nil, fmt.Errorf("not valid: %w", err)
		}
		if dec.More() {
			return nil, errors.New("not valid: data after the JSON object")
		}
	}
	if cfg.Contexts == nil {
		cfg.Contexts = map[string]Context{}
	}
	return cfg, nil
}

// SetContext adds or replaces the context called name. It becomes the
// current one if makeCurrent is true or if no context is current yet.
func (c *ConfigFile) SetContext(name string, ctx Context, makeCurrent bool) {
	if c.Contexts == nil {
		c.Contexts = map[string]Context{}
	}
	c.Contexts[name] = ctx
	if makeCurrent || c.Current == "" {
		c.Current = name
	}
}

// contextNames lists the context names, sorted, for error messages.
func contextNames(c *ConfigFile) string {
	if len(c.Contexts) == 0 {
		return "none"
	}
	names := make([]string, 0, len(c.Contexts))
	for n := range c.Contexts {
		names = append(names, n)
	}
	sort.Strings(names)
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = strconv.Quote(n)
	}
	return strings.Join(quoted, ", ")
}

// SaveConfig writes cfg to path atomically (a temporary file in the same
// directory, synced, then renamed over path) with mode 0600, since it holds
// tokens. It creates the directory (mode 0700) if needed.
func SaveConfig(path string, cfg *ConfigFile) (err error) {
	if cfg == nil {
		return errors.New("saving config: nil config")
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("saving config: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("saving config: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("saving config: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// CreateTemp makes the file 0600 already; say so for umask-proof clarity.
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("saving config: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("saving config: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("saving config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("saving config: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("saving config: %w", err)
	}
	// Make the rename durable; not every file system can sync a directory.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
