package clusterfile

import (
	"bytes"
	"fmt"
	"io"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// Formats of cluster files, as Read and Write name them.
const (
	// FormatJSON is ferry's JSON snapshot (ReadSnapshot, WriteSnapshot).
	FormatJSON = "json"
	// FormatGaneti is the text format of Ganeti's htools (ReadGaneti,
	// WriteGaneti).
	FormatGaneti = "ganeti"
)

// Detect guesses the format of a cluster file from its first bytes:
// FormatJSON when the first byte that is not white space is '{',
// FormatGaneti otherwise (a Ganeti file starts with a group name).
func Detect(data []byte) string {
	if bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{")) {
		return FormatJSON
	}
	return FormatGaneti
}

// Read reads a cluster file in format, FormatJSON or FormatGaneti, or
// guesses the format with Detect when format is "".
func Read(r io.Reader, format string) (scheduler.Snapshot, error) {
	if err := checkFormat(format, true); err != nil {
		return scheduler.Snapshot{}, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return scheduler.Snapshot{}, fmt.Errorf("reading cluster file: %w", err)
	}
	if format == "" {
		format = Detect(data)
	}
	if format == FormatGaneti {
		return parseGaneti(string(data))
	}
	return parseSnapshot(data)
}

// Write writes s in format, FormatJSON or FormatGaneti.
func Write(w io.Writer, s scheduler.Snapshot, format string) error {
	if err := checkFormat(format, false); err != nil {
		return err
	}
	if format == FormatGaneti {
		return WriteGaneti(w, s)
	}
	return WriteSnapshot(w, s)
}

func checkFormat(format string, detect bool) error {
	switch {
	case format == FormatJSON, format == FormatGaneti, format == "" && detect:
		return nil
	}
	return fmt.Errorf("unknown cluster file format %q (want %s or %s)", format, FormatJSON, FormatGaneti)
}
