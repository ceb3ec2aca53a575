package sla

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// Colours of the chart: down time by cause, excluded time grey.
var causeColours = map[Cause]string{
	CauseHostFailure:       "#d62728",
	CauseFailover:          "#ff7f0e",
	CauseMigration:         "#1f77b4",
	CauseCrash:             "#9467bd",
	CauseGuestNotAnswering: "#8c564b",
	CauseCustomerStop:      "#e377c2",
	CauseMaintenance:       "#bcbd22",
	CauseUnknown:           "#7f7f7f",
}

const (
	colourServing  = "#cfe8cf"
	colourExcluded = "#b8b8b8"
	colourAbsent   = "#f2f2f2"
	colourMet      = "#2ca02c"
	colourBreach   = "#d62728"
)

// Layout of the chart, in pixels.
const (
	svgWidth   = 1080
	svgMargin  = 16
	svgLabelW  = 230
	svgChartX  = svgMargin + svgLabelW
	svgChartW  = 560
	svgRowH    = 22
	svgBarH    = 14
	svgHeading = 48
)

// RenderSVG draws r as an SVG image: one bar per instance showing its
// availability against its target (the target is a black mark; a bar
// below its target is red, else green), then each instance's timeline
// across the window (serving pale green, down time coloured by cause,
// excluded time grey, time out of the ledger blank), and a legend.
// timelines is what Timelines returns for the report's window (a missing
// instance draws an empty timeline). The availability axis starts at a
// round value below the lowest availability or target shown (99.9, 99,
// 95, 90, 50 or 0), so that small differences are visible. Text is
// escaped. Elements carry classes for a stylesheet: "bar met" and "bar
// breach", "target", and the state and cause of a timeline's interval
// ("down host-failure"). The image is a standalone XML document that the dashboard can
// embed.
func RenderSVG(w io.Writer, r *Report, timelines map[string][]Interval) error {
	bw := bufio.NewWriter(w)
	n := len(r.Instances)
	barsY := svgMargin + svgHeading
	timelineY := barsY + n*svgRowH + svgHeading + 18
	legendY := timelineY + n*svgRowH + 28
	height := legendY + 2*svgRowH + svgMargin
	if n == 0 {
		height = barsY + svgRowH + svgMargin
	}
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	fmt.Fprintf(bw, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", svgWidth, height)
	text(bw, svgMargin, svgMargin+14, "font-size=\"16\" font-weight=\"bold\"",
		fmt.Sprintf("Availability %s (%s), %s to %s", r.Month, r.TimeZone, r.From.Format("2006-01-02 15:04"), r.To.Format("2006-01-02 15:04")))
	if n == 0 {
		text(bw, svgMargin, barsY+14, "", "no instances in this window")
		fmt.Fprintln(bw, "</svg>")
		return bw.Flush()
	}

	// Availability bars.
	floor := axisFloor(r)
	pos := func(p float64) float64 {
		p = min(max(p, floor), 100)
		return svgChartX + (p-floor)/(100-floor)*svgChartW
	}
	text(bw, svgMargin, barsY-8, `font-weight="bold"`, "Availability against target")
	for _, tick := range axisTicks(floor) {
		x := pos(tick)
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#dddddd"/>`+"\n", x, barsY, x, barsY+n*svgRowH)
		text(bw, x, barsY+n*svgRowH+12, `text-anchor="middle" fill="#555555"`, fmtFloat(tick)+"%")
	}
	for i, ir := range r.Instances {
		y := barsY + i*svgRowH
		text(bw, svgMargin, y+svgBarH-2, "", rowLabel(ir))
		colour, class := colourMet, "bar met"
		if ir.Breach {
			colour, class = colourBreach, "bar breach"
		}
		fmt.Fprintf(bw, `<rect class="%s" x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>`, class, svgChartX, y+2, pos(ir.AvailabilityPercent)-svgChartX, svgBarH, colour)
		escape(bw, fmt.Sprintf("%s: %s, target %s%%", ir.Instance, FormatPercent(ir.AvailabilityPercent), fmtFloat(ir.TargetPercent)))
		fmt.Fprintln(bw, `</title></rect>`)
		tx := pos(ir.TargetPercent)
		fmt.Fprintf(bw, `<line class="target" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000000" stroke-width="2"/>`+"\n", tx, y, tx, y+svgBarH+4)
		value := FormatPercent(ir.AvailabilityPercent) + " (target " + fmtFloat(ir.TargetPercent) + "%)"
		if ir.Credit > 0 {
			value += ", credit " + ir.Credit.String()
		}
		text(bw, svgChartX+svgChartW+8, y+svgBarH-2, "", value)
	}

	// Timelines.
	text(bw, svgMargin, timelineY-8, `font-weight="bold"`, "Timeline")
	span := r.To.Sub(r.From)
	at := func(t time.Time) float64 {
		if span <= 0 {
			return svgChartX
		}
		return svgChartX + float64(t.Sub(r.From))/float64(span)*svgChartW
	}
	loc := r.From.Location()
	for day, k := time.Date(r.From.Year(), r.From.Month(), r.From.Day(), 0, 0, 0, 0, loc), 0; day.Before(r.To) && k < 400; day, k = day.AddDate(0, 0, 1), k+1 {
		if day.Before(r.From) {
			continue
		}
		x := at(day)
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e4e4e4"/>`+"\n", x, timelineY, x, timelineY+n*svgRowH)
		if day.Day() == 1 || day.Day()%7 == 1 {
			text(bw, x, timelineY+n*svgRowH+12, `text-anchor="middle" fill="#555555"`, day.Format("Jan 2"))
		}
	}
	for i, ir := range r.Instances {
		y := timelineY + i*svgRowH
		text(bw, svgMargin, y+svgBarH-2, "", rowLabel(ir))
		fmt.Fprintf(bw, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", svgChartX, y+2, svgChartW, svgBarH, colourAbsent)
		for _, iv := range timelines[ir.Instance] {
			if iv.Customer != ir.Customer || !iv.End.After(iv.Start) {
				continue
			}
			x0, x1 := at(iv.Start), at(iv.End)
			fill := colourServing
			switch iv.State {
			case Down:
				fill = causeColours[iv.Cause]
			case Excluded:
				fill = colourExcluded
			}
			if iv.State != Serving && x1-x0 < 1.5 {
				x1 = x0 + 1.5 // a short outage stays visible
			}
			class := string(iv.State)
			if iv.Cause != "" {
				class += " " + string(iv.Cause)
			}
			fmt.Fprintf(bw, `<rect class="%s" x="%.2f" y="%d" width="%.2f" height="%d" fill="%s"><title>`, class, x0, y+2, x1-x0, svgBarH, fill)
			what := string(iv.State)
			if iv.Cause != "" {
				what += " (" + string(iv.Cause) + ")"
			}
			escape(bw, fmt.Sprintf("%s: %s %s to %s, %s", ir.Instance, what, iv.Start.Format("2006-01-02 15:04:05"),
				iv.End.Format("2006-01-02 15:04:05"), FormatDuration(iv.Duration.Duration())))
			fmt.Fprintln(bw, `</title></rect>`)
		}
	}

	// Legend.
	type item struct{ colour, label string }
	items := []item{{colourServing, "serving"}, {colourExcluded, "excluded"}}
	for _, c := range causeOrder {
		items = append(items, item{causeColours[c], "down: " + string(c)})
	}
	for i, it := range items {
		x := svgMargin + (i%5)*190
		y := legendY + (i/5)*svgRowH
		fmt.Fprintf(bw, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`+"\n", x, y, it.colour)
		text(bw, float64(x+18), y+11, "", it.label)
	}
	fmt.Fprintln(bw, "</svg>")
	return bw.Flush()
}

// axisFloor picks where the availability axis starts.
func axisFloor(r *Report) float64 {
	lowest := 100.0
	for _, ir := range r.Instances {
		lowest = min(lowest, ir.AvailabilityPercent, ir.TargetPercent)
	}
	for _, f := range []float64{99.9, 99, 95, 90, 50} {
		if f < lowest {
			return f
		}
	}
	return 0
}

// axisTicks are the labelled values of the axis from floor to 100.
func axisTicks(floor float64) []float64 {
	switch floor {
	case 99.9:
		return []float64{99.9, 99.95, 100}
	case 99:
		return []float64{99, 99.5, 99.9, 100}
	case 95:
		return []float64{95, 99, 100}
	case 90:
		return []float64{90, 95, 99, 100}
	case 50:
		return []float64{50, 75, 90, 100}
	}
	return []float64{0, 50, 90, 100}
}

// rowLabel names a row: "web-1 (acme)", shortened to fit.
func rowLabel(ir InstanceReport) string {
	s := ir.Instance
	if ir.Customer != "" {
		s += " (" + ir.Customer + ")"
	}
	if utf8.RuneCountInString(s) > 32 {
		rs := []rune(s)
		s = string(rs[:31]) + "…"
	}
	return s
}

// text writes a <text> element at (x, y) with extra attributes (trusted)
// and escaped content.
func text[X int | float64](w *bufio.Writer, x X, y int, attrs, content string) {
	fmt.Fprintf(w, `<text x="%s" y="%d"`, strconv.FormatFloat(float64(x), 'f', 1, 64), y)
	if attrs != "" {
		w.WriteString(" " + attrs)
	}
	w.WriteString(">")
	escape(w, content)
	w.WriteString("</text>\n")
}

// escape writes s as XML character data; characters XML cannot hold
// become U+FFFD.
func escape(w *bufio.Writer, s string) {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // writes to a buffer cannot fail
	w.Write(b.Bytes())
}
