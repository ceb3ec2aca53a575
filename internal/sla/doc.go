// Package sla is the pure core of ferry's SLA ledger: it turns a ledger of
// instance state changes into availability, incidents and credits per
// instance, customer and month, under policies that say what is promised
// and what breaking the promise costs. It does no I/O beyond the readers
// and writers it is given, keeps no global state and reads no clock: every
// function that needs the time takes it as an argument, so the whole
// package runs on a virtual clock in tests and simulations, and a replay
// of a ledger file reproduces a live report exactly.
//
// # The model
//
// The ledger is a sequence of Events, sorted by time: an instance became
// Serving, Down (with a Cause: host-failure, failover, migration, crash,
// guest-not-answering, customer-stop, maintenance, unknown), Excluded
// (time that does not count: a customer's stop, or maintenance announced
// in time; the Cause says which) or Deleted. An instance is in the ledger
// from its first event, in that event's state, and stays in a state until
// its next event. Its time within a report's Window therefore splits into
// serving, down and excluded time that add up exactly to the time it was
// in the ledger (its row's window).
//
// A report covers a Window: a calendar Month in a time zone ([first
// instant of the month, first instant of the next), see MonthWindow),
// or for a live report of the current month the part up to now
// (LiveWindow, which refuses a month that has not begun). An interval that
// crosses the month's edge is split at it: an outage from 23:50 on the
// last day to 00:10 counts 10 minutes in each month, and as an incident in
// both. The same outage can fall in one month in UTC and in two in
// Europe/Berlin; the report's time zone decides.
//
// For each instance (and customer: a row per owner, if an instance
// changed hands):
//
//	availability = serving / (window − excluded)    (100 % if that is 0)
//	incidents    = maximal periods down for one cause, counted and summed by cause
//	credit       = credit_percent of the lowest tier whose below_percent the
//	               availability is strictly under × the monthly price, to the cent
//
// Comparisons with a policy's percentages are exact (in rationals, with
// the percentage as written): a month at exactly 99.95 % is not below
// 99.95. An instance's credit is split among the causes of its downtime in
// proportion to their length, to the cent, so the provider can see what
// failovers cost against migrations. Revenue is the full monthly price of
// every instance in the report: prices are not pro-rated for instances
// that joined or left during the month. Money is kept in cents (Money) and
// durations in nanoseconds (Seconds), so totals equal the sums of the rows
// exactly.
//
// # Policies and plans
//
// A Policy (ParsePolicy, Validate) is a target, the window ("month" only),
// a default monthly price, credit Tiers, and exclusion settings: whether
// customer stops are excluded (default yes) and how many hours ahead
// maintenance must be announced to be excluded (default 48). A PlanFunc
// gives each instance its policy and price; Plans resolves one from
// policies by name and assignments by instance and by customer, with a
// default.
//
// # From the live ledger to events
//
// The store keeps raw Entries: an instance started or stopped serving,
// with a cause and the host it was on, or was deleted. Classify turns
// them into Events with the policies and the maintenance windows: a
// customer stop becomes excluded if the policy says so; a maintenance
// stop is excluded for the part inside an announced maintenance window of
// the instance's host that was announced early enough, and down for the
// rest. The server's adapter is then:
//
//	events, err := sla.Classify(entries, windows, plans.Plan)
//	w, err := sla.LiveWindow(month, loc, now)       // a future month: ErrMonthNotBegun
//	report, err := sla.Compute(events, w, plans.Plan)
//	report.GeneratedAt = now                          // optional, not reproduced by a replay
//	ivs, err := sla.Timeline(events, "web-1", w)     // ferry sla incidents web-1
//	err = sla.WriteEvents(out, sla.Slice(events, w)) // ferry sla export
//
// and `ferry sla replay` runs Compute on ParseEvents of that export, with
// a window cut at the same instant, giving the same Report.
//
// # Formats
//
// Events files are JSON lines (ParseEvents, WriteEvents); policies are
// JSON (ParsePolicy, WritePolicy). Both parsers are strict and name the
// line and field at fault. Reports render as JSON (WriteJSON, the field
// names of Report), CSV (WriteCSV), text for a terminal (WriteText) and
// SVG (RenderSVG); timelines as text (WriteTimelineText) or JSON.
//
// # Forecasts
//
// Forecast estimates availability and credits per policy from a host
// failure rate and the mean downtime of a failover and of a migration,
// with outages counted by Poisson laws; see Forecast for the model.
//
// Every function is safe for concurrent use and keeps no reference to its
// arguments. The parsers never panic, whatever they read (they are fuzzed);
// Compute, Timeline and Classify never panic on any events or entries, and
// return an error for those they cannot use.
package sla
