package clusterfile

import (
	"bytes"
	"strings"
	"testing"
)

func TestDetectAndRead(t *testing.T) {
	for _, c := range []struct {
		path, format string
	}{
		{"testdata/snapshot/full.json", FormatJSON},
		{"testdata/ganeti/full.txt", FormatGaneti},
		{"testdata/ganeti/old-columns.txt", FormatGaneti},
	} {
		data := readFile(t, c.path)
		if got := Detect(data); got != c.format {
			t.Errorf("%s: Detect = %q, want %q", c.path, got, c.format)
		}
		if got := Detect(append([]byte(" \n\t"), data...)); got != c.format {
			t.Errorf("%s after white space: Detect = %q, want %q", c.path, got, c.format)
		}
		auto, err := Read(bytes.NewReader(data), "")
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		named, err := Read(bytes.NewReader(data), c.format)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		equalSnapshots(t, c.path, auto, named)
	}
	for _, format := range []string{FormatJSON, FormatGaneti} {
		var b bytes.Buffer
		if err := Write(&b, sample(), format); err != nil {
			t.Fatalf("write %s: %v", format, err)
		}
		if got := Detect(b.Bytes()); got != format {
			t.Errorf("written as %s, detected as %s", format, got)
		}
		got, err := Read(&b, "")
		if err != nil {
			t.Fatal(err)
		}
		equalSnapshots(t, format, got, sample())
	}
}

func TestUnknownFormat(t *testing.T) {
	want := `unknown cluster file format "yaml" (want json or ganeti)`
	if _, err := Read(strings.NewReader("{}"), "yaml"); err == nil || err.Error() != want {
		t.Errorf("Read: got %v, want %s", err, want)
	}
	if err := Write(&bytes.Buffer{}, sample(), "yaml"); err == nil || err.Error() != want {
		t.Errorf("Write: got %v, want %s", err, want)
	}
	want = `unknown cluster file format "" (want json or ganeti)`
	if err := Write(&bytes.Buffer{}, sample(), ""); err == nil || err.Error() != want {
		t.Errorf("Write: got %v, want %s", err, want)
	}
}
