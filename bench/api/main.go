// Command api measures the latency of instance creates through ferry's
// REST API against a running cluster (normally `ferry dev`), sequentially,
// one request in flight, and prints p50/p99 in milliseconds.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
	"github.com/ferrycluster/ferry/internal/client"
)

type contextEntry struct {
	Server string `json:"server"`
	Token  string `json:"token"`
	CAFile string `json:"caFile"`
}

type configFile struct {
	Current  string                  `json:"current"`
	Contexts map[string]contextEntry `json:"contexts"`
}

func main() {
	cfgPath := flag.String("config", "", "ferry CLI config written by `ferry dev`")
	n := flag.Int("n", 1000, "number of creates")
	flag.Parse()
	if err := run(*cfgPath, *n); err != nil {
		fmt.Fprintln(os.Stderr, "bench/api:", err)
		os.Exit(1)
	}
}

func run(cfgPath string, n int) error {
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var cf configFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	cur, ok := cf.Contexts[cf.Current]
	if !ok {
		return fmt.Errorf("%s: no current context", cfgPath)
	}
	ca, err := os.ReadFile(cur.CAFile)
	if err != nil {
		return err
	}
	c, err := client.New(client.Config{Server: cur.Server, Token: cur.Token, CAPEM: ca})
	if err != nil {
		return err
	}
	ctx := context.Background()
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		req := api.CreateInstanceRequest{Name: fmt.Sprintf("bench-%d", i), Spec: api.InstanceSpec{CPUs: 1, Memory: 16 << 20, Disk: 1 << 20, Image: "demo", State: api.DesiredStopped}}
		start := time.Now()
		if _, err := c.CreateInstance(ctx, req); err != nil {
			return fmt.Errorf("create %d: %w", i, err)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		idx := int(p*float64(len(lat))+0.5) - 1
		if idx < 0 {
			idx = 0
		}
		if idx >= len(lat) {
			idx = len(lat) - 1
		}
		return float64(lat[idx].Microseconds()) / 1000
	}
	fmt.Printf("creates=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n", n, pct(0.50), pct(0.99), float64(lat[len(lat)-1].Microseconds())/1000)
	return nil
}
