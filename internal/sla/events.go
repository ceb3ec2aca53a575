package sla

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Event is one state change of an instance: a line of an events file (JSON
// lines) and the input of Compute and Timeline.
//
//	{"time":"2026-02-28T23:50:00Z","instance":"web-1","customer":"acme","state":"down","cause":"host-failure"}
//
// An instance is in the ledger from its first event, in that event's
// state, until its next event (or a Deleted event, which takes it out).
type Event struct {
	// Time is when the state began, in RFC 3339 with a time zone and
	// up to nanoseconds. ParseEvents returns it in UTC.
	Time time.Time `json:"time"`
	// Instance names the instance (required).
	Instance string `json:"instance"`
	// Customer owns the instance from this event on (may be empty).
	// A report has one row per instance and customer, so an instance
	// that changes hands shows up under each owner for its share.
	Customer string `json:"customer"`
	// State is serving, down, excluded or deleted.
	State State `json:"state"`
	// Cause says why the instance is not serving: required when down
	// (CauseUnknown if nobody knows), customer-stop or maintenance when
	// excluded, and empty when serving or deleted.
	Cause Cause `json:"cause,omitempty"`
	// Node optionally names the host the instance was on. Reports do
	// not use it; it is there for audits.
	Node string `json:"node,omitempty"`
}

// Limits on the text of an event, to catch garbage rather than to
// describe real names.
const (
	maxInstanceLen = 253
	maxCustomerLen = 128
	maxNodeLen     = 253
)

// MaxEventLine bounds one line of an events file, in bytes.
const MaxEventLine = 64 << 10

// eventFields are the JSON fields of an event, in the order WriteEvents
// writes them.
var eventFields = []string{"time", "instance", "customer", "state", "cause", "node"}

// ParseEvents reads an events file: JSON lines, one Event each, sorted by
// time. Blank lines are skipped; CRLF line ends are accepted. Decoding is
// strict: unknown or repeated fields, values of the wrong type and data
// after the object are errors, and so is whatever CheckEvents rejects. The
// error is an *Error naming the line and the field, such as
//
//	events line 7: time: 2026-02-01T10:00:00Z is before line 6's 2026-02-01T11:00:00Z
func ParseEvents(r io.Reader) ([]Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxEventLine)
	var (
		events []Event
		lines  []int // the line of each event
		check  eventChecker
		line   int
	)
	at := func(i int) string { return fmt.Sprintf("line %d", lines[i]) }
	for sc.Scan() {
		line++
		text := bytes.TrimSuffix(sc.Bytes(), []byte{'\r'})
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		e, err := parseEvent(text, line)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
		lines = append(lines, line)
		if field, err := check.add(events, len(events)-1, at); err != nil {
			return nil, &Error{Input: "events", Line: line, Field: field, Err: err}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &Error{Input: "events", Line: line + 1, Err: fmt.Errorf("longer than %d bytes", MaxEventLine)}
		}
		return nil, fmt.Errorf("reading events: %w", err)
	}
	return events, nil
}

// parseEvent decodes one line.
func parseEvent(text []byte, line int) (Event, error) {
	w := newWalker("events", text, line-1, false)
	var e Event
	var seenTime, seenInstance, seenState bool
	err := w.object("", func(key, path string, off int) error {
		s, err := w.str(path)
		if err != nil {
			return err
		}
		switch key {
		case "time":
			seenTime = true
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return w.errorf(off, path, "%q is not an RFC 3339 time such as 2026-02-28T23:50:00Z", s)
			}
			e.Time = t.UTC()
		case "instance":
			seenInstance = true
			e.Instance = s
		case "customer":
			e.Customer = s
		case "state":
			seenState = true
			e.State = State(s)
		case "cause":
			e.Cause = Cause(s)
		case "node":
			e.Node = s
		}
		return nil
	}, eventFields...)
	if err == nil {
		err = w.end()
	}
	if err != nil {
		return Event{}, err
	}
	missing := func(field, hint string) error {
		return &Error{Input: "events", Line: line, Field: field, Err: errors.New("missing; " + hint)}
	}
	switch {
	case !seenTime:
		return Event{}, missing("time", "give the time of the change, e.g. \"time\":\"2026-02-28T23:50:00Z\"")
	case !seenInstance:
		return Event{}, missing("instance", "name the instance, e.g. \"instance\":\"web-1\"")
	case !seenState:
		return Event{}, missing("state", "give one of "+stateList())
	}
	return e, nil
}

func stateList() string {
	var s []string
	for _, st := range stateOrder {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

func causeList(cs []Cause) string {
	var s []string
	for _, c := range cs {
		s = append(s, string(c))
	}
	return strings.Join(s, ", ")
}

// CheckEvents checks events as ParseEvents checks a file: each event is
// valid (see Event), times never go backwards, and an instance has at most
// one event at any time. The error is an *Error whose Input names the
// element, such as "events[6]: time: ... is before events[5]'s ...".
func CheckEvents(events []Event) error {
	var check eventChecker
	at := func(i int) string { return fmt.Sprintf("events[%d]", i) }
	for i := range events {
		if field, err := check.add(events, i, at); err != nil {
			return &Error{Input: at(i), Field: field, Err: err}
		}
	}
	return nil
}

// eventChecker checks events one by one.
type eventChecker struct {
	// now is the time of the last event; atNow the instances that have
	// an event at that time, with its index.
	now   time.Time
	atNow map[string]int
}

// add checks events[i] against those before it; at names an index in
// errors. It returns the offending field.
func (c *eventChecker) add(events []Event, i int, at func(int) string) (string, error) {
	e := &events[i]
	if field, err := validEvent(e); err != nil {
		return field, err
	}
	if i > 0 {
		switch {
		case e.Time.Before(c.now):
			return "time", fmt.Errorf("%s is before %s's %s: events must be sorted by time",
				e.Time.Format(time.RFC3339Nano), at(i-1), c.now.Format(time.RFC3339Nano))
		case e.Time.After(c.now) && len(c.atNow) > 16:
			c.atNow = nil // clear would cost the map's largest size, each time
		case e.Time.After(c.now):
			clear(c.atNow)
		}
	}
	if c.atNow == nil {
		c.atNow = make(map[string]int)
	}
	if j, dup := c.atNow[e.Instance]; dup {
		if sameEvent(&events[j], e) {
			return "", fmt.Errorf("duplicate of %s", at(j))
		}
		return "instance", fmt.Errorf("%s already has an event at %s (%s): an instance has one state at a time",
			e.Instance, e.Time.Format(time.RFC3339Nano), at(j))
	}
	c.now = e.Time
	c.atNow[e.Instance] = i
	return "", nil
}

// sameEvent reports whether a and b say the same thing.
func sameEvent(a, b *Event) bool {
	return a.Time.Equal(b.Time) && a.Instance == b.Instance && a.Customer == b.Customer &&
		a.State == b.State && a.Cause == b.Cause && a.Node == b.Node
}

// validEvent checks one event on its own and returns the offending field.
func validEvent(e *Event) (string, error) {
	switch {
	case e.Time.IsZero():
		return "time", errors.New("missing (0001-01-01T00:00:00Z is the zero time, not a time of a change)")
	case e.Time.UTC().Year() < 1 || e.Time.UTC().Year() > 9999:
		return "time", fmt.Errorf("%s is out of range: the year must be 1 to 9999 in UTC", e.Time.Format(time.RFC3339Nano))
	}
	if err := checkText(e.Instance, maxInstanceLen, true); err != nil {
		return "instance", err
	}
	if err := checkText(e.Customer, maxCustomerLen, false); err != nil {
		return "customer", err
	}
	if err := checkText(e.Node, maxNodeLen, false); err != nil {
		return "node", err
	}
	if !e.State.Valid() {
		return "state", fmt.Errorf("%q is not a state: give one of %s", e.State, stateList())
	}
	if e.Cause != "" && !e.Cause.Valid() {
		return "cause", fmt.Errorf("%q is not a cause: give one of %s", e.Cause, causeList(causeOrder[:]))
	}
	switch e.State {
	case Serving, Deleted:
		if e.Cause != "" {
			return "cause", fmt.Errorf("must be empty when the state is %s, got %q", e.State, e.Cause)
		}
	case Down:
		if e.Cause == "" {
			return "cause", fmt.Errorf("missing: a down event needs a cause, one of %s (%s if nobody knows)", causeList(causeOrder[:]), CauseUnknown)
		}
	case Excluded:
		if e.Cause != CauseCustomerStop && e.Cause != CauseMaintenance {
			return "cause", fmt.Errorf("must be %s or %s when the state is excluded, got %q", CauseCustomerStop, CauseMaintenance, e.Cause)
		}
	}
	return "", nil
}

// checkText checks a name: valid UTF-8, no control characters, not too
// long, and present if required.
func checkText(s string, maxLen int, required bool) error {
	switch {
	case s == "" && required:
		return errors.New("missing")
	case len(s) > maxLen:
		return fmt.Errorf("is %d bytes long; at most %d are allowed", len(s), maxLen)
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 }):
		return fmt.Errorf("%q contains control characters", s)
	}
	return nil
}

// WriteEvents writes events as ParseEvents reads them: one JSON object a
// line, fields in a fixed order, times in UTC with as many decimals as they
// need. It refuses what CheckEvents refuses, so what it writes reads back
// equal (with times in UTC).
func WriteEvents(w io.Writer, events []Event) error {
	if err := CheckEvents(events); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	for i := range events {
		e := &events[i]
		bw.WriteString(`{"time":`)
		writeString(bw, e.Time.UTC().Format(time.RFC3339Nano))
		bw.WriteString(`,"instance":`)
		writeString(bw, e.Instance)
		bw.WriteString(`,"customer":`)
		writeString(bw, e.Customer)
		bw.WriteString(`,"state":`)
		writeString(bw, string(e.State))
		if e.Cause != "" {
			bw.WriteString(`,"cause":`)
			writeString(bw, string(e.Cause))
		}
		if e.Node != "" {
			bw.WriteString(`,"node":`)
			writeString(bw, e.Node)
		}
		bw.WriteString("}\n")
	}
	return bw.Flush()
}

// writeString writes s as a JSON string, without escaping HTML.
func writeString(w *bufio.Writer, s string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	w.Write(bytes.TrimSuffix(b.Bytes(), []byte{'\n'}))
}

// Slice returns the events a replay of window w needs to give the same
// report and timelines as events: for each instance its last event before
// w.From (its state when the window begins) and every event before w.To.
// The result shares no memory with events and keeps their order.
func Slice(events []Event, w Window) []Event {
	last := make(map[string]int) // instance -> index of its last event before From
	for i := range events {
		if events[i].Time.Before(w.From) {
			last[events[i].Instance] = i
		}
	}
	var out []Event
	for i := range events {
		e := events[i]
		if e.Time.Before(w.From) && last[e.Instance] != i || !e.Time.Before(w.To) {
			continue
		}
		out = append(out, e)
	}
	return out
}
