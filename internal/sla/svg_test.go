package sla

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

// parseXML checks that data is well-formed XML and returns its character
// data and the count of each element.
func parseXML(t *testing.T, data []byte) (string, map[string]int) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	var text strings.Builder
	count := make(map[string]int)
	depth := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v\n%s", err, data)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 && (tok.Name.Local != "svg" || tok.Name.Space != "http://www.w3.org/2000/svg") {
				t.Errorf("root element %v", tok.Name)
			}
			depth++
			count[tok.Name.Local]++
		case xml.EndElement:
			depth--
		case xml.CharData:
			text.Write(tok)
			text.WriteByte('\n')
		}
	}
	return text.String(), count
}

func TestRenderSVG(t *testing.T) {
	t.Parallel()
	events := novemberEvents(t)
	events = append(events[:len(events)-2:len(events)-2], ev(t, "2026-11-29T00:00:00Z", "x<&>\"'", `<b>"x"</b>`, Excluded, CauseMaintenance), events[len(events)-2], events[len(events)-1])
	w := MonthWindow(month(t, "2026-11"), nil)
	r := mustCompute(t, events, w, onePolicy(gold(t)))
	tls, err := Timelines(events, w)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := RenderSVG(&b, r, tls); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "<b>") {
		t.Error("a name was not escaped")
	}
	text, count := parseXML(t, b.Bytes())
	for _, s := range []string{
		"Availability 2026-11 (UTC)", "db-1 (beta)", `x<&>"' (<b>"x"</b>)`,
		"99.949% (target 99.95%), credit 10.00", "down: host-failure", "excluded",
		"web-1: down (host-failure) 2026-11-10 10:00:00 to 2026-11-10 10:20:00, 20m",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("text lacks %q:\n%s", s, text)
		}
	}
	// Two breaching red bars, a target mark per instance.
	if got := strings.Count(b.String(), `class="bar breach"`); got != 2 {
		t.Errorf("%d red bars, want 2", got)
	}
	if got := strings.Count(b.String(), `class="target"`); got != len(r.Instances) {
		t.Errorf("%d target marks, want %d", got, len(r.Instances))
	}
	if count["svg"] != 1 || count["rect"] < 2*len(r.Instances) {
		t.Errorf("elements: %v", count)
	}

	// An empty report is a valid image too.
	empty := mustCompute(t, nil, w, onePolicy(gold(t)))
	b.Reset()
	if err := RenderSVG(&b, empty, nil); err != nil {
		t.Fatal(err)
	}
	if text, _ := parseXML(t, b.Bytes()); !strings.Contains(text, "no instances in this window") {
		t.Errorf("empty: %s", text)
	}
}
