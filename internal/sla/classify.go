package sla

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Entry is one raw record of the live ledger, as the store keeps it: an
// instance's serving state changed (the agent's health probe, a lifecycle
// step of the control plane) or the instance was deleted. Classify turns
// entries into Events by applying the policies' exclusions.
type Entry struct {
	// Time is when the change happened, as the observer timed it.
	Time time.Time `json:"time"`
	// Instance and Customer (its owner, may be empty) say whose
	// change it is.
	Instance string `json:"instance"`
	Customer string `json:"customer,omitempty"`
	// Node is the host the instance was on when the change happened;
	// maintenance windows are matched against it.
	Node string `json:"node,omitempty"`
	// Serving is the new state: true when the instance serves again.
	Serving bool `json:"serving"`
	// Cause says why it stopped serving; empty means CauseUnknown.
	// It is ignored when Serving or Deleted.
	Cause Cause `json:"cause,omitempty"`
	// Deleted marks the instance's deletion: it leaves the ledger.
	Deleted bool `json:"deleted,omitempty"`
}

// Maintenance is a maintenance window of one host, as `ferry maintenance
// schedule` records it.
type Maintenance struct {
	// Node is the host under maintenance.
	Node string `json:"node"`
	// Start and End bound the window: [Start, End).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// AnnouncedAt is when the window was announced to customers.
	AnnouncedAt time.Time `json:"announced_at"`
}

// Classify turns raw ledger entries into events, applying each instance's
// policy (from plans) as follows:
//
//   - serving entries become serving, deleted entries deleted;
//   - a stop with cause customer-stop becomes excluded (cause
//     customer-stop) if the policy excludes customer stops, else down;
//   - a stop with cause maintenance is excluded (cause maintenance) for
//     the part of it inside a maintenance window of the instance's node
//     (Entry.Node) announced at least the policy's maintenance notice
//     before the window began, and down (cause maintenance) for the rest,
//     so that maintenance overrunning its window, or announced too late,
//     counts against the provider;
//   - any other stop is down with its cause (CauseUnknown if none).
//
// Only stops with cause maintenance are excused by a window: a host
// failure during maintenance still counts. A control plane that wants the
// migrations of a drain for announced maintenance excused records them
// with cause maintenance.
//
// entries may come in any order; they are sorted by time (stably), and of
// an instance's entries at the same time the last one wins. Successive
// events that would change nothing are dropped. The events are sorted by
// time then instance and pass CheckEvents. plans is called for instances
// that have a customer stop or maintenance stop; nil plans means the
// default exclusions (DefaultExcludeCustomerStops,
// DefaultMaintenanceNoticeHours) for all. Errors name the entry or window
// at fault (its index in the argument) or the instance whose plan failed.
func Classify(entries []Entry, windows []Maintenance, plans PlanFunc) ([]Event, error) {
	for i, m := range windows {
		bad := func(field, msg string) error {
			return &Error{Input: fmt.Sprintf("maintenance[%d]", i), Field: field, Err: errors.New(msg)}
		}
		switch {
		case m.Node == "":
			return nil, bad("node", "missing: name the host under maintenance")
		case m.Start.IsZero() || m.End.IsZero():
			return nil, bad("start", "missing the start or the end of the window")
		case !m.End.After(m.Start):
			return nil, bad("end", "must be after start")
		case m.AnnouncedAt.IsZero():
			return nil, bad("announced_at", "missing: when the window was announced")
		}
	}
	idx := make([]int, len(entries))
	for i := range idx {
		idx[i] = i
		e := &entries[i]
		bad := func(field string, err error) error {
			return &Error{Input: fmt.Sprintf("entries[%d]", i), Field: field, Err: err}
		}
		switch {
		case e.Time.IsZero():
			return nil, bad("time", errors.New("missing"))
		case e.Cause != "" && !e.Cause.Valid():
			return nil, bad("cause", fmt.Errorf("%q is not a cause: give one of %s", e.Cause, causeList(causeOrder[:])))
		}
		if err := checkText(e.Instance, maxInstanceLen, true); err != nil {
			return nil, bad("instance", err)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int { return entries[a].Time.Compare(entries[b].Time) })
	byInst := make(map[string][]int)
	var order []string
	for _, i := range idx {
		name := entries[i].Instance
		if _, ok := byInst[name]; !ok {
			order = append(order, name)
		}
		byInst[name] = append(byInst[name], i)
	}

	type planKey struct{ instance, customer string }
	planCache := make(map[planKey]*Policy)
	policyOf := func(e *Entry) (*Policy, error) {
		if plans == nil {
			return &Policy{}, nil // the defaults
		}
		k := planKey{e.Instance, e.Customer}
		if p, ok := planCache[k]; ok {
			return p, nil
		}
		plan, err := plans(e.Instance, e.Customer)
		if err != nil {
			return nil, fmt.Errorf("instance %q: %w", e.Instance, err)
		}
		planCache[k] = &plan.Policy
		return &plan.Policy, nil
	}

	var out []Event
	for _, name := range order {
		list := byInst[name]
		// Of entries at the same time, the last wins.
		var mine []*Entry
		for _, i := range list {
			e := &entries[i]
			if n := len(mine); n > 0 && mine[n-1].Time.Equal(e.Time) {
				mine[n-1] = e
				continue
			}
			mine = append(mine, e)
		}
		var evs []Event
		emit := func(t time.Time, e *Entry, st State, c Cause) {
			ev := Event{Time: t.UTC(), Instance: e.Instance, Customer: e.Customer, State: st, Cause: c, Node: e.Node}
			if n := len(evs); n > 0 {
				p := evs[n-1]
				if p.State == ev.State && p.Cause == ev.Cause && p.Customer == ev.Customer && p.Node == ev.Node {
					return
				}
			}
			evs = append(evs, ev)
		}
		for k, e := range mine {
			switch {
			case e.Deleted:
				emit(e.Time, e, Deleted, "")
				continue
			case e.Serving:
				emit(e.Time, e, Serving, "")
				continue
			}
			cause := cmp.Or(e.Cause, CauseUnknown)
			switch cause {
			case CauseCustomerStop:
				p, err := policyOf(e)
				if err != nil {
					return nil, err
				}
				st := Down
				if p.ExcludesCustomerStops() {
					st = Excluded
				}
				emit(e.Time, e, st, cause)
			case CauseMaintenance:
				p, err := policyOf(e)
				if err != nil {
					return nil, err
				}
				var next *time.Time
				if k+1 < len(mine) {
					next = &mine[k+1].Time
				}
				excused := announced(windows, e.Node, p.MaintenanceNotice())
				state := func(t time.Time) State {
					for _, w := range excused {
						if !t.Before(w.Start) && t.Before(w.End) {
							return Excluded
						}
					}
					return Down
				}
				emit(e.Time, e, state(e.Time), cause)
				for _, w := range excused {
					for _, b := range []time.Time{w.Start, w.End} {
						if b.After(e.Time) && (next == nil || b.Before(*next)) {
							emit(b, e, state(b), cause)
						}
					}
				}
			default:
				emit(e.Time, e, Down, cause)
			}
		}
		out = append(out, evs...)
	}
	slices.SortStableFunc(out, func(a, b Event) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Instance, b.Instance))
	})
	if err := CheckEvents(out); err != nil {
		return nil, fmt.Errorf("classify: %w", err)
	}
	return out, nil
}

// announced returns the maintenance windows of node announced at least
// notice before they began, merged where they overlap or touch, sorted.
func announced(windows []Maintenance, node string, notice time.Duration) []Maintenance {
	if node == "" {
		return nil
	}
	var ok []Maintenance
	for _, w := range windows {
		if w.Node == node && w.Start.Sub(w.AnnouncedAt) >= notice {
			ok = append(ok, w)
		}
	}
	slices.SortFunc(ok, func(a, b Maintenance) int { return a.Start.Compare(b.Start) })
	var merged []Maintenance
	for _, w := range ok {
		if n := len(merged); n > 0 && !w.Start.After(merged[n-1].End) {
			if w.End.After(merged[n-1].End) {
				merged[n-1].End = w.End
			}
			continue
		}
		merged = append(merged, w)
	}
	return merged
}
