package sla

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// eventSeeds are events files, good and bad, for FuzzParseEvents.
var eventSeeds = []string{
	`{"time":"2026-02-28T23:50:00Z","instance":"web-1","customer":"acme","state":"down","cause":"host-failure"}` + "\n" +
		`{"time":"2026-03-01T00:10:00Z","instance":"web-1","customer":"acme","state":"serving"}` + "\n",
	`{"time":"2026-02-01T00:00:00.000000001+01:00","instance":"é<&>","customer":"","state":"excluded","cause":"maintenance","node":"n1"}` + "\r\n\r\n" +
		`{"time":"2026-02-01T00:00:00Z","instance":"b","state":"deleted"}`,
	`{"time":"2026-02-01T00:00:00Z","instance":"a","state":"down","cause":"unknown"}` + "\n" +
		`{"time":"2026-02-01T00:00:00Z","instance":"a","state":"down","cause":"unknown"}`,
	`{"time":"2026-02-01T00:00:00Z","instance":"a","state":"down"}`,
	`{"time":"2026-02-01T00:00:00Z","instance":"a","state":"serving","x":1}`,
	`{"time":"2026-02-01T00:00:00Z","instance":"a\u0000","state":"serving"}`,
	`{"time":"0001-01-01T00:00:00Z","instance":"a","state":"serving"}` + "\n" + `{"time":"9999-12-31T23:59:59.999999999Z","instance":"a","state":"down","cause":"crash"}`,
	`[]`, `{`, `{}`, "\n\n", `{"time":"2026-02-01T00:00:00Z","instance":"a","state":"serving"} x`,
}

// FuzzParseEvents checks that ParseEvents never panics and fails only with
// an *Error; that what it reads comes back equal through WriteEvents; and
// that Compute and Timelines on it never fail and tile each row exactly.
func FuzzParseEvents(f *testing.F) {
	for _, s := range eventSeeds {
		f.Add([]byte(s))
	}
	var b bytes.Buffer
	if err := WriteEvents(&b, novemberEvents(f)); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	pol := gold(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := ParseEvents(bytes.NewReader(data))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Line < 1 {
				t.Fatalf("error %q is a %T without a line", err, err)
			}
			return
		}
		var out bytes.Buffer
		if err := WriteEvents(&out, events); err != nil {
			t.Fatalf("cannot write what was read: %v", err)
		}
		again, err := ParseEvents(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("cannot read what was written: %v\n%s", err, out.String())
		}
		if !reflect.DeepEqual(again, events) {
			t.Fatalf("round trip changed the events:\n%+v\n%+v", events, again)
		}
		if len(events) == 0 {
			return
		}
		for _, m := range []Month{MonthOf(events[0].Time), MonthOf(events[len(events)-1].Time)} {
			if m.Year > 9998 {
				continue
			}
			w := MonthWindow(m, nil)
			r, err := Compute(events, w, onePolicy(pol))
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			for _, ir := range r.Instances {
				if ir.Serving+ir.Downtime+ir.Excluded != ir.Window || ir.AvailabilityPercent < 0 || ir.AvailabilityPercent > 100 {
					t.Fatalf("row %+v", ir)
				}
			}
			if _, err := Timelines(events, w); err != nil {
				t.Fatalf("Timelines: %v", err)
			}
			var sink bytes.Buffer
			if err := WriteCSV(&sink, r); err != nil {
				t.Fatal(err)
			}
			if err := WriteText(&sink, r); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// policySeeds are policies, good and bad, for FuzzParsePolicy.
var policySeeds = []string{
	goldJSON,
	`{"name":"a","target_percent":100,"monthly_price":0.01,"tiers":[],"exclude_customer_stops":false,"maintenance_notice_hours":0}`,
	`{"name":"b","target_percent":1e-300,"window":"month","monthly_price":1e10,"tiers":[{"below_percent":100,"credit_percent":0},{"below_percent":5e-324,"credit_percent":100}]}`,
	`{"name":"gold","target_percent":99.95,"tiers":[{"below_percent":99,"credit_percent":25},{"below_percent":99,"credit_percent":25}]}`,
	`{"name":"gold","target_percent":99.95,"tiers":[{"below_percent":99,"credit_percent":25},{"below_percent":95,"credit_percent":10}]}`,
	`{"name":"gold","target_percent":101}`, `{"name":"gold"}`, `{"name":"gold","target_percent":99,"monthly_price":1.005}`,
	`{"name":"gold","target_percent":99}{}`, `{"name":"gold","target_percent":99,"tiers":[{}]}`, `[`, ``, `null`,
	"{\"name\":\"g\",\n \"target_percent\":99,\n \"tiers\":[{\"below_percent\":99,\"credit_percent\":1e999}]}",
}

// FuzzParsePolicy checks that ParsePolicy never panics and fails only
// with an *Error naming a line; that what it reads is valid and comes
// back equal through WritePolicy.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range policySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(bytes.NewReader(data))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Input != "policy" || e.Line < 1 && !strings.Contains(err.Error(), "longer than") {
				t.Fatalf("error %q is a %T without a line", err, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("read an invalid policy: %v", err)
		}
		var out bytes.Buffer
		if err := WritePolicy(&out, p); err != nil {
			t.Fatalf("cannot write what was read: %v", err)
		}
		again, err := ParsePolicy(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("cannot read what was written: %v\n%s", err, out.String())
		}
		if !reflect.DeepEqual(again, p) {
			t.Fatalf("round trip changed the policy:\n%+v\n%+v", p, again)
		}
	})
}

// TestSeedsParse shows what the seeds parse to (-v), so the fuzz targets'
// deeper checks are known to run on some of them.
func TestSeedsParse(t *testing.T) {
	good := 0
	for i, s := range eventSeeds {
		evs, err := ParseEvents(strings.NewReader(s))
		t.Logf("events seed %d: %d events, %v", i, len(evs), err)
		if err == nil && len(evs) > 0 {
			good++
		}
	}
	for i, s := range policySeeds {
		p, err := ParsePolicy(strings.NewReader(s))
		t.Logf("policy seed %d: %+v, %v", i, p, err)
		if err == nil {
			good++
		}
	}
	if good < 5 {
		t.Errorf("only %d seeds parse", good)
	}
}
