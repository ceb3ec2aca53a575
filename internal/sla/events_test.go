package sla

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseEvents(t *testing.T) {
	t.Parallel()
	in := "" +
		`{"time":"2026-02-28T23:50:00Z","instance":"web-1","customer":"acme","state":"down","cause":"host-failure"}` + "\n" +
		"\r\n" +
		`{"time":"2026-03-01T00:50:00+01:00","instance":"web-2","customer":"acme","state":"serving"}` + "\r\n" +
		`  {"state":"serving","instance":"web-1","time":"2026-03-01T00:10:00.5Z","node":"n2","customer":"acme"}  ` + "\n" +
		`{"time":"2026-03-02T00:00:00Z","instance":"db-1","state":"excluded","cause":"customer-stop"}`
	got, err := ParseEvents(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{Time: tm(t, "2026-02-28T23:50:00Z"), Instance: "web-1", Customer: "acme", State: Down, Cause: CauseHostFailure},
		{Time: tm(t, "2026-02-28T23:50:00Z"), Instance: "web-2", Customer: "acme", State: Serving},
		{Time: tm(t, "2026-03-01T00:10:00.5Z"), Instance: "web-1", Customer: "acme", State: Serving, Node: "n2"},
		{Time: tm(t, "2026-03-02T00:00:00Z"), Instance: "db-1", State: Excluded, Cause: CauseCustomerStop},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseEvents =\n%+v\nwant\n%+v", got, want)
	}
	var out bytes.Buffer
	if err := WriteEvents(&out, got); err != nil {
		t.Fatal(err)
	}
	wantOut := "" +
		`{"time":"2026-02-28T23:50:00Z","instance":"web-1","customer":"acme","state":"down","cause":"host-failure"}` + "\n" +
		`{"time":"2026-02-28T23:50:00Z","instance":"web-2","customer":"acme","state":"serving"}` + "\n" +
		`{"time":"2026-03-01T00:10:00.5Z","instance":"web-1","customer":"acme","state":"serving","node":"n2"}` + "\n" +
		`{"time":"2026-03-02T00:00:00Z","instance":"db-1","customer":"","state":"excluded","cause":"customer-stop"}` + "\n"
	if out.String() != wantOut {
		t.Errorf("WriteEvents =\n%s\nwant\n%s", out.String(), wantOut)
	}
	again, err := ParseEvents(&out)
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Errorf("round trip = %+v, %v", again, err)
	}
	if evs, err := ParseEvents(strings.NewReader("")); err != nil || evs != nil {
		t.Errorf("empty file = %v, %v", evs, err)
	}
}

func TestParseEventsErrors(t *testing.T) {
	t.Parallel()
	const (
		ok1 = `{"time":"2026-02-01T11:00:00Z","instance":"web-1","customer":"acme","state":"serving"}`
		ok2 = `{"time":"2026-02-01T12:00:00Z","instance":"web-2","customer":"acme","state":"serving"}`
	)
	tests := []struct {
		name string
		in   string
		want string // the whole error message
		line int
	}{
		{"unsorted", ok1 + "\n" + ok2 + "\n" + `{"time":"2026-02-01T10:00:00Z","instance":"web-3","state":"serving"}`,
			"events line 3: time: 2026-02-01T10:00:00Z is before line 2's 2026-02-01T12:00:00Z: events must be sorted by time", 3},
		{"unsorted across an offset", ok2 + "\n" + `{"time":"2026-02-01T12:30:00+01:00","instance":"web-3","state":"serving"}`,
			"events line 2: time: 2026-02-01T11:30:00Z is before line 1's 2026-02-01T12:00:00Z: events must be sorted by time", 2},
		{"exact duplicate", ok1 + "\n\n" + ok1, "events line 3: duplicate of line 1", 3},
		{"same instance, same time", ok1 + "\n" + `{"time":"2026-02-01T11:00:00Z","instance":"web-2","state":"serving"}` + "\n" +
			`{"time":"2026-02-01T12:00:00+01:00","instance":"web-1","customer":"acme","state":"down","cause":"crash"}`,
			"events line 3: instance: web-1 already has an event at 2026-02-01T11:00:00Z (line 1): an instance has one state at a time", 3},
		{"unknown state", `{"time":"2026-02-01T11:00:00Z","instance":"web-1","state":"up"}`,
			`events line 1: state: "up" is not a state: give one of serving, down, excluded, deleted`, 1},
		{"unknown cause", `{"time":"2026-02-01T11:00:00Z","instance":"web-1","state":"down","cause":"gremlins"}`,
			`events line 1: cause: "gremlins" is not a cause: give one of host-failure, failover, migration, crash, guest-not-answering, customer-stop, maintenance, unknown`, 1},
		{"down without cause", `{"time":"2026-02-01T11:00:00Z","instance":"web-1","state":"down"}`,
			"events line 1: cause: missing: a down event needs a cause, one of host-failure, failover, migration, crash, guest-not-answering, customer-stop, maintenance, unknown (unknown if nobody knows)", 1},
		{"excluded for a crash", `{"time":"2026-02-01T11:00:00Z","instance":"web-1","state":"excluded","cause":"crash"}`,
			`events line 1: cause: must be customer-stop or maintenance when the state is excluded, got "crash"`, 1},
		{"excluded without cause", `{"time":"2026-02-01T11:00:00Z","instance":"web-1","state":"excluded"}`,
			`events line 1: cause: must be customer-stop or maintenance when the state is excluded, got ""`, 1},
		{"serving with a cause", `{"time":"2026-02-01T11:00:00Z","instance":"web-1","state":"serving","cause":"crash"}`,
			`events line 1: cause: must be empty when the state is serving, got "crash"`, 1},
		{"bad time", `{"time":"2026-02-01 11:00","instance":"web-1","state":"serving"}`,
			`events line 1: time: "2026-02-01 11:00" is not an RFC 3339 time such as 2026-02-28T23:50:00Z`, 1},
		{"time without zone", `{"time":"2026-02-01T11:00:00","instance":"web-1","state":"serving"}`,
			`events line 1: time: "2026-02-01T11:00:00" is not an RFC 3339 time such as 2026-02-28T23:50:00Z`, 1},
		{"missing time", `{"instance":"web-1","state":"serving"}`,
			`events line 1: time: missing; give the time of the change, e.g. "time":"2026-02-28T23:50:00Z"`, 1},
		{"missing instance", `{"time":"2026-02-01T11:00:00Z","state":"serving"}`,
			`events line 1: instance: missing; name the instance, e.g. "instance":"web-1"`, 1},
		{"empty instance", `{"time":"2026-02-01T11:00:00Z","instance":"","state":"serving"}`, `events line 1: instance: missing`, 1},
		{"missing state", `{"time":"2026-02-01T11:00:00Z","instance":"web-1"}`,
			`events line 1: state: missing; give one of serving, down, excluded, deleted`, 1},
		{"unknown field", ok1 + "\n" + `{"time":"2026-02-01T11:00:00Z","instance":"web-2","state":"serving","reason":"x"}`,
			`events line 2: unknown field "reason" (known: time, instance, customer, state, cause, node)`, 2},
		{"repeated field", `{"time":"2026-02-01T11:00:00Z","instance":"web-1","instance":"web-2","state":"serving"}`,
			`events line 1: field "instance" given twice`, 1},
		{"number for a string", `{"time":"2026-02-01T11:00:00Z","instance":7,"state":"serving"}`,
			`events line 1: instance: want a string, got the number 7`, 1},
		{"null", `{"time":"2026-02-01T11:00:00Z","instance":"web-1","state":null}`,
			`events line 1: state: want a string, got null`, 1},
		{"not an object", ok1 + "\n" + `["web-1"]`, `events line 2: want an object, got an array`, 2},
		{"two objects on a line", ok1 + ok2, `events line 1: unexpected data after the object: an object`, 1},
		{"truncated", ok1 + "\n" + `{"time":"2026-02-01T11:00:00Z",`, `events line 2: unexpected end of JSON`, 2},
		{"syntax", `{"time":"2026-02-01T11:00:00Z" "instance":"web-1"}`, `events line 1: invalid character '"' after object key:value pair`, 1},
		{"control character", `{"time":"2026-02-01T11:00:00Z","instance":"web\u001b[31m","state":"serving"}`,
			`events line 1: instance: "web\x1b[31m" contains control characters`, 1},
		{"year out of range", `{"time":"9999-12-31T23:00:00-05:00","instance":"web-1","state":"serving"}`,
			`events line 1: time: 10000-01-01T04:00:00Z is out of range: the year must be 1 to 9999 in UTC`, 1},
		{"too long", strings.Repeat(" ", MaxEventLine+1), "events line 1: longer than 65536 bytes", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseEvents(strings.NewReader(tc.in))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error = %v (%T), want an *Error", err, err)
			}
			if err.Error() != tc.want {
				t.Errorf("error =\n%s\nwant\n%s", err, tc.want)
			}
			if e.Line != tc.line {
				t.Errorf("Line = %d, want %d", e.Line, tc.line)
			}
		})
	}
}

func TestCheckEvents(t *testing.T) {
	t.Parallel()
	good := []Event{
		ev(t, "2026-02-01T11:00:00Z", "a", "", Serving, ""),
		ev(t, "2026-02-01T11:00:00Z", "b", "", Serving, ""),
		ev(t, "2026-02-01T12:00:00Z", "a", "", Deleted, ""),
	}
	if err := CheckEvents(good); err != nil {
		t.Fatal(err)
	}
	bad := append(good[:2:2], ev(t, "2026-02-01T10:00:00Z", "a", "", Serving, ""))
	err := CheckEvents(bad)
	want := "events[2]: time: 2026-02-01T10:00:00Z is before events[1]'s 2026-02-01T11:00:00Z: events must be sorted by time"
	if err == nil || err.Error() != want {
		t.Errorf("CheckEvents = %v, want %s", err, want)
	}
	if err := CheckEvents([]Event{{Instance: "a", State: Serving}}); err == nil || !strings.HasPrefix(err.Error(), "events[0]: time: missing") {
		t.Errorf("CheckEvents(zero time) = %v", err)
	}
	if err := WriteEvents(&bytes.Buffer{}, bad); err == nil {
		t.Error("WriteEvents wrote unsorted events")
	}
	// Times in another zone compare as instants.
	loc := time.FixedZone("X", 3600)
	mixed := []Event{
		{Time: time.Date(2026, 2, 1, 12, 0, 0, 0, loc), Instance: "a", State: Serving},
		{Time: time.Date(2026, 2, 1, 11, 0, 0, 0, time.UTC), Instance: "a", State: Serving},
	}
	if err := CheckEvents(mixed); err == nil || err.Error() != "events[1]: duplicate of events[0]" {
		t.Errorf("CheckEvents(same instant in two zones) = %v", err)
	}
}

func TestSlice(t *testing.T) {
	t.Parallel()
	w := MonthWindow(month(t, "2026-02"), nil)
	events := []Event{
		ev(t, "2026-01-05T00:00:00Z", "a", "x", Serving, ""),
		ev(t, "2026-01-20T00:00:00Z", "a", "x", Down, CauseCrash),
		ev(t, "2026-01-21T00:00:00Z", "b", "x", Serving, ""),
		ev(t, "2026-01-25T00:00:00Z", "c", "x", Serving, ""),
		ev(t, "2026-01-26T00:00:00Z", "c", "x", Deleted, ""),
		ev(t, "2026-02-01T00:00:00Z", "a", "x", Serving, ""),
		ev(t, "2026-02-10T00:00:00Z", "b", "x", Down, CauseMigration),
		ev(t, "2026-03-01T00:00:00Z", "b", "x", Serving, ""),
	}
	got := Slice(events, w)
	want := []Event{events[1], events[2], events[4], events[5], events[6]}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Slice =\n%+v\nwant\n%+v", got, want)
	}
	a := mustCompute(t, events, w, onePolicy(gold(t)))
	b := mustCompute(t, got, w, onePolicy(gold(t)))
	if !reflect.DeepEqual(a, b) {
		t.Errorf("report of the slice differs:\n%+v\n%+v", a, b)
	}
}
