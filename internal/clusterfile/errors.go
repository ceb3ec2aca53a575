package clusterfile

import (
	"fmt"
	"strings"
)

// Error locates a problem in a cluster file or a snapshot. Fields that do
// not apply are zero.
type Error struct {
	// Line and Column are 1-based; Column is only known in JSON files.
	Line   int
	Column int
	// Section is the section of a Ganeti file, such as "nodes".
	Section string
	// Field is the 1-based column of a Ganeti line (as cut -f counts).
	Field int
	// Name is the name of the Ganeti field ("free memory") when Field is
	// set, or else the path of the JSON value ("nodes[2].capacity.cpus").
	Name string
	Err  error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ", column %d", e.Column)
		}
		if e.Section != "" {
			fmt.Fprintf(&b, " (%s section)", e.Section)
		}
	} else if e.Section != "" {
		fmt.Fprintf(&b, "%s section", e.Section)
	}
	switch {
	case e.Field > 0:
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "field %d %q", e.Field, e.Name)
	case e.Name != "":
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(e.Name)
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

// pathError is an *Error for a JSON path with no position.
func pathError(path, format string, args ...any) *Error {
	return &Error{Name: path, Err: fmt.Errorf(format, args...)}
}
