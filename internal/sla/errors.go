package sla

import (
	"errors"
	"fmt"
	"strings"
)

// Error locates a problem in an events file, a policy file or a slice of
// events. Fields that do not apply are zero.
type Error struct {
	// Input names what was read: "events" or "policy" for a file,
	// "events[6]" for the seventh element of a slice given to CheckEvents.
	Input string
	// Line and Column are 1-based; Column is only set in policy files.
	Line   int
	Column int
	// Field is the JSON name or path of the offending value, such as
	// "time" or "tiers[1].below_percent"; empty for the whole line.
	Field string
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Input)
	if e.Line > 0 {
		fmt.Fprintf(&b, " line %d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ", column %d", e.Column)
		}
	}
	if e.Field != "" {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(e.Field)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("invalid")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Sentinel errors, matched with errors.Is.
var (
	// ErrUnknownPolicy: an instance or customer is assigned a policy
	// that does not exist.
	ErrUnknownPolicy = errors.New("unknown policy")
	// ErrNoPolicy: no policy applies to an instance (no assignment and
	// no default).
	ErrNoPolicy = errors.New("no policy applies")
	// ErrMonthNotBegun: a live report was asked for a month that has not
	// begun yet; only a replay answers what-if questions about it.
	ErrMonthNotBegun = errors.New("the month has not begun")
)
