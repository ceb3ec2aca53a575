package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// printJSON writes v as indented JSON and a newline.
func printJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		cols[i] = clean(c)
		if cols[i] == "" {
			cols[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// details writes "Key:   value" lines, aligned.
type details struct {
	tw *tabwriter.Writer
}

func newDetails(w io.Writer) *details {
	return &details{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
}

// add writes one line; an empty value is written as "-".
func (d *details) add(key, value string) {
	value = clean(value)
	if value == "" {
		value = "-"
	}
	fmt.Fprintf(d.tw, "%s:\t%s\n", key, value)
}

func (d *details) flush() error { return d.tw.Flush() }

// clean makes a server-supplied string safe for one line of a terminal:
// control characters (newlines, escape sequences) become spaces.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}

// fmtBytes formats a size exactly when that is short (256M, 1G, 100G),
// else approximately (7.5G, 16.1G).
func fmtBytes(b api.Bytes) string {
	s := b.String()
	digits := strings.TrimRight(s, "KMGT")
	if n, err := strconv.ParseInt(digits, 10, 64); err == nil && n < 1024 {
		return s
	}
	return b.Human()
}

// ago formats how long before now t was, the way kubectl's AGE does:
// 45s, 5m, 3h, 12d. A zero t is "-".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return shortDuration(now.Sub(t))
}

// shortDuration formats d with one or two units.
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch s := int64(d / time.Second); {
	case d < 2*time.Minute:
		return strconv.FormatInt(s, 10) + "s"
	case d < 10*time.Minute:
		if s%60 == 0 {
			return strconv.FormatInt(s/60, 10) + "m"
		}
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case d < time.Hour:
		return strconv.FormatInt(s/60, 10) + "m"
	case d < 8*time.Hour:
		if m := (s / 60) % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", s/3600, m)
		}
		return strconv.FormatInt(s/3600, 10) + "h"
	case d < 48*time.Hour:
		return strconv.FormatInt(s/3600, 10) + "h"
	default:
		return strconv.FormatInt(s/86400, 10) + "d"
	}
}

// timestamp formats t with its age, e.g. "2025-01-02 03:04:05 UTC (5m ago)".
func timestamp(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format("2006-01-02 15:04:05 MST"), ago(now, t))
}

// dash returns s, or "-" if it is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
