package sla

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes v (a *Report, a *ForecastReport, a []Interval) as
// indented JSON and a newline, without escaping HTML.
func WriteJSON(w io.Writer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// CSVHeader is the header row of WriteCSV. After the fixed columns come,
// for each cause in Causes, <cause>_incidents, <cause>_downtime_seconds
// and <cause>_credit.
func CSVHeader() []string {
	h := []string{"row", "month", "time_zone", "instance", "customer", "policy", "monthly_price", "target_percent",
		"window_seconds", "serving_seconds", "downtime_seconds", "excluded_seconds", "availability_percent",
		"breaches", "incidents", "credit_percent", "credit", "revenue"}
	for _, c := range causeOrder {
		h = append(h, string(c)+"_incidents", string(c)+"_downtime_seconds", string(c)+"_credit")
	}
	return h
}

// WriteCSV writes r as one CSV table (RFC 4180) with the header
// CSVHeader: a row per instance ("instance"), then one per customer
// ("customer", with the instance column empty), then the provider's totals
// ("total"). breaches is 1 or 0 in an instance's row and a count in the
// others; revenue is the instance's monthly price. Seconds and money are exact decimals; availability has the
// precision of a float64.
func WriteCSV(w io.Writer, r *Report) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader()); err != nil {
		return err
	}
	month, tz := r.Month.String(), r.TimeZone
	causes := func(rec []string, inc map[Cause]CauseTotal, credits map[Cause]Money) []string {
		for _, c := range causeOrder {
			t := inc[c]
			rec = append(rec, strconv.Itoa(t.Count), t.Downtime.String(), credits[c].String())
		}
		return rec
	}
	for _, ir := range r.Instances {
		rec := []string{"instance", month, tz, ir.Instance, ir.Customer, ir.Policy, ir.MonthlyPrice.String(), fmtFloat(ir.TargetPercent),
			ir.Window.String(), ir.Serving.String(), ir.Downtime.String(), ir.Excluded.String(), fmtFloat(ir.AvailabilityPercent),
			strconv.Itoa(b2i(ir.Breach)), strconv.Itoa(ir.Incidents), fmtFloat(ir.CreditPercent), ir.Credit.String(), ir.MonthlyPrice.String()}
		if err := cw.Write(causes(rec, ir.IncidentsByCause, ir.CreditsByCause)); err != nil {
			return err
		}
	}
	summary := func(kind, customer string, s *Summary) error {
		rec := []string{kind, month, tz, "", customer, "", "", "",
			s.Window.String(), s.Serving.String(), s.Downtime.String(), s.Excluded.String(), fmtFloat(s.AvailabilityPercent),
			strconv.Itoa(s.Breaches), strconv.Itoa(s.Incidents), "", s.Credits.String(), s.Revenue.String()}
		return cw.Write(causes(rec, s.IncidentsByCause, s.CreditsByCause))
	}
	for i := range r.Customers {
		if err := summary("customer", r.Customers[i].Customer, &r.Customers[i].Summary); err != nil {
			return err
		}
	}
	if err := summary("total", "", &r.Totals.Summary); err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// WriteText writes r for a terminal: the window, a table of instances, a
// table of customers, and the provider's totals with the credits by cause.
// Names are cleaned of control characters.
func WriteText(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "SLA report %s (%s): %s to %s\n\n", r.Month, r.TimeZone,
		r.From.Format("2006-01-02 15:04"), r.To.Format("2006-01-02 15:04"))
	if len(r.Instances) == 0 {
		fmt.Fprintln(w, "no instances in this window")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	line := func(cols ...string) {
		for i, c := range cols {
			if cols[i] = clean(c); cols[i] == "" {
				cols[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	line("INSTANCE", "CUSTOMER", "POLICY", "AVAILABILITY", "TARGET", "DOWNTIME", "EXCLUDED", "INCIDENTS", "CREDIT")
	for _, ir := range r.Instances {
		avail := FormatPercent(ir.AvailabilityPercent)
		if ir.Breach {
			avail += " !"
		}
		credit := ir.Credit.String()
		if ir.CreditPercent > 0 {
			credit += " (" + fmtFloat(ir.CreditPercent) + "%)"
		}
		line(ir.Instance, ir.Customer, ir.Policy, avail, fmtFloat(ir.TargetPercent)+"%",
			FormatDuration(ir.Downtime.Duration()), FormatDuration(ir.Excluded.Duration()),
			incidentsText(ir.Incidents, ir.IncidentsByCause), credit)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	line("CUSTOMER", "INSTANCES", "AVAILABILITY", "BREACHES", "DOWNTIME", "INCIDENTS", "REVENUE", "CREDITS")
	for _, c := range r.Customers {
		line(c.Customer, strconv.Itoa(c.Instances), FormatPercent(c.AvailabilityPercent), strconv.Itoa(c.Breaches),
			FormatDuration(c.Downtime.Duration()), strconv.Itoa(c.Incidents), c.Revenue.String(), c.Credits.String())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	t := &r.Totals
	fmt.Fprintf(w, "\nRevenue %s, credits %s (%s of revenue), %d of %d instances below target, %d incidents, %s down\n",
		t.Revenue, t.Credits, shareText(t.Credits, t.Revenue), t.Breaches, t.Instances, t.Incidents, FormatDuration(t.Downtime.Duration()))
	if len(t.IncidentsByCause) > 0 {
		fmt.Fprintln(w)
		line("CAUSE", "INCIDENTS", "DOWNTIME", "CREDITS", "SHARE OF CREDITS")
		for _, c := range sortedCauses(t.IncidentsByCause) {
			share := "-"
			if t.Credits > 0 {
				share = strconv.FormatFloat(t.CreditSharePercent[c], 'f', 1, 64) + "%"
			}
			line(string(c), strconv.Itoa(t.IncidentsByCause[c].Count), FormatDuration(t.IncidentsByCause[c].Downtime.Duration()),
				t.CreditsByCause[c].String(), share)
		}
		return tw.Flush()
	}
	return nil
}

// WriteTimelineText writes an instance's intervals, one a line: start,
// end, length, state and cause.
func WriteTimelineText(w io.Writer, ivs []Interval) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "START\tEND\tLENGTH\tSTATE\tCAUSE\tCUSTOMER")
	for _, iv := range ivs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", iv.Start.Format("2006-01-02 15:04:05 MST"), iv.End.Format("2006-01-02 15:04:05 MST"),
			FormatDuration(iv.Duration.Duration()), iv.State, dash(string(iv.Cause)), dash(clean(iv.Customer)))
	}
	return tw.Flush()
}

// sortedCauses returns m's causes in the order of Causes.
func sortedCauses[V any](m map[Cause]V) []Cause {
	return slices.SortedFunc(maps.Keys(m), func(a, b Cause) int {
		return cmpInt(causeIndex(a), causeIndex(b), string(a), string(b))
	})
}

func cmpInt(a, b int, sa, sb string) int {
	switch {
	case a != b:
		return a - b
	case sa < sb:
		return -1
	case sa > sb:
		return 1
	}
	return 0
}

// incidentsText is "0", or "3 (host-failure 1: 22m, migration 2: 1s)".
func incidentsText(n int, by map[Cause]CauseTotal) string {
	if n == 0 {
		return "0"
	}
	var parts []string
	for _, c := range sortedCauses(by) {
		parts = append(parts, fmt.Sprintf("%s %d: %s", c, by[c].Count, FormatDuration(by[c].Downtime.Duration())))
	}
	return fmt.Sprintf("%d (%s)", n, strings.Join(parts, ", "))
}

// shareText is part as a percentage of whole, or "-".
func shareText(part, whole Money) string {
	if whole <= 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(part)/float64(whole), 'f', 1, 64) + "%"
}

// FormatPercent writes an availability with three decimals, rounded
// down, so that it never reads as more than it is: 99.94907 is "99.949%",
// 99.99995 is "99.999%", only 100 is "100.000%".
func FormatPercent(p float64) string {
	if math.IsNaN(p) {
		return "-"
	}
	// The epsilon keeps 99.95 stored as 99.94999999999999 at 99.950.
	return strconv.FormatFloat(math.Floor(p*1000+1e-6)/1000, 'f', 3, 64) + "%"
}

// FormatDuration writes a length for people: "0", "0.25s", "45s", "22m",
// "22m5s", "1h5m", "3d4h" (at most two units; below a minute with up to
// two decimals).
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0"
	}
	if d < time.Minute {
		s := strconv.FormatFloat(d.Seconds(), 'f', 2, 64)
		return strings.TrimSuffix(strings.TrimRight(s, "0"), ".") + "s"
	}
	s := int64(d / time.Second)
	two := func(a int64, ua string, b int64, ub string) string {
		if b == 0 {
			return strconv.FormatInt(a, 10) + ua
		}
		return strconv.FormatInt(a, 10) + ua + strconv.FormatInt(b, 10) + ub
	}
	switch {
	case s < 3600:
		return two(s/60, "m", s%60, "s")
	case s < 86400:
		return two(s/3600, "h", s%3600/60, "m")
	}
	return two(s/86400, "d", s%86400/3600, "h")
}

// clean makes a name safe for one line of a terminal: control characters
// become spaces.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}

// dash returns s, or "-" if it is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
