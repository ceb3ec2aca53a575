package sla

import (
	"maps"
	"slices"
	"time"
)

// Interval is a stretch of an instance's timeline in one state: what
// `ferry sla incidents NAME` lists and the chart draws.
type Interval struct {
	State    State     `json:"state"`
	Cause    Cause     `json:"cause,omitempty"`
	Customer string    `json:"customer"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration Seconds   `json:"duration_seconds"`
}

// Timeline returns the timeline of instance within w: its intervals in
// time order, clipped to w, adjacent intervals in the same state, cause
// and customer merged. Time the instance was not in the ledger (before its
// first event, after its deletion) is a gap. events must pass CheckEvents;
// an instance with no time in w has no intervals.
func Timeline(events []Event, instance string, w Window) ([]Interval, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	if err := CheckEvents(events); err != nil {
		return nil, err
	}
	var mine []Event
	for i := range events {
		if events[i].Instance == instance {
			mine = append(mine, events[i])
		}
	}
	return intervals(ledger(mine, w)[instance]), nil
}

// Timelines returns the timeline of every instance within w, by name.
func Timelines(events []Event, w Window) (map[string][]Interval, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	if err := CheckEvents(events); err != nil {
		return nil, err
	}
	l := ledger(events, w)
	out := make(map[string][]Interval, len(l))
	for _, inst := range slices.Sorted(maps.Keys(l)) {
		out[inst] = intervals(l[inst])
	}
	return out, nil
}

// intervals merges segments into intervals.
func intervals(segs []segment) []Interval {
	var out []Interval
	for _, s := range segs {
		if n := len(out); n > 0 {
			p := &out[n-1]
			if p.State == s.state && p.Cause == s.cause && p.Customer == s.customer && p.End.Equal(s.start) {
				p.End = s.end
				p.Duration = Seconds(p.End.Sub(p.Start))
				continue
			}
		}
		out = append(out, Interval{State: s.state, Cause: s.cause, Customer: s.customer, Start: s.start, End: s.end, Duration: Seconds(s.end.Sub(s.start))})
	}
	return out
}
