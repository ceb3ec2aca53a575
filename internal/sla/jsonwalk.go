package sla

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// jsonWalker reads one JSON document token by token, strictly: it knows
// the offset of every token, so errors can name a line and column, and the
// callers reject unknown and repeated fields.
type jsonWalker struct {
	data []byte
	dec  *json.Decoder
	// input names the document in errors ("policy").
	input string
	// columns says whether errors carry a column (one-line documents
	// do not need one).
	columns bool
	// line is added to every line number (for one line of a file).
	line int
	// pos is the offset of each path's value, to place errors found
	// after the walk.
	pos map[string]int
}

func newWalker(input string, data []byte, line int, columns bool) *jsonWalker {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return &jsonWalker{data: data, dec: dec, input: input, columns: columns, line: line, pos: make(map[string]int)}
}

// lineCol turns a byte offset into a 1-based line and column (in runes).
func (w *jsonWalker) lineCol(off int) (int, int) {
	off = max(min(off, len(w.data)), 0)
	before := w.data[:off]
	start := bytes.LastIndexByte(before, '\n') + 1
	return bytes.Count(before, []byte{'\n'}) + 1, utf8.RuneCount(before[start:]) + 1
}

// errorAt is an *Error for field at offset off.
func (w *jsonWalker) errorAt(off int, field string, err error) *Error {
	e := &Error{Input: w.input, Field: field, Err: err}
	line, col := w.lineCol(off)
	e.Line = w.line + line
	if w.columns {
		e.Column = col
	}
	return e
}

func (w *jsonWalker) errorf(off int, field, format string, args ...any) *Error {
	return w.errorAt(off, field, fmt.Errorf(format, args...))
}

// locate places an error found after the walk at its field, or at the
// closest ancestor of it that was read.
func (w *jsonWalker) locate(field string, err error) *Error {
	for p := field; ; {
		if off, ok := w.pos[p]; ok {
			return w.errorAt(off, field, err)
		}
		if p == "" {
			return &Error{Input: w.input, Field: field, Err: err}
		}
		p = parentPath(p)
	}
}

// parentPath drops the last element of a path: "tiers[1].x" -> "tiers[1]"
// -> "tiers" -> "".
func parentPath(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '.' || p[i] == '[' {
			return p[:i]
		}
	}
	return ""
}

// token reads the next token and the offset where it begins.
func (w *jsonWalker) token() (json.Token, int, error) {
	start := w.skipSpace()
	tok, err := w.dec.Token()
	if err != nil {
		return nil, start, w.syntaxError(err)
	}
	return tok, start, nil
}

// skipSpace returns the offset of the next token: past the decoder's
// position, the spaces and separators before it.
func (w *jsonWalker) skipSpace() int {
	start := int(w.dec.InputOffset())
	for start < len(w.data) {
		switch w.data[start] {
		case ' ', '\t', '\r', '\n', ',', ':':
			start++
			continue
		}
		break
	}
	return start
}

// syntaxError places a decoding error.
func (w *jsonWalker) syntaxError(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se) && se.Offset < int64(len(w.data)):
		return w.errorAt(max(int(se.Offset)-1, 0), "", errors.New(se.Error()))
	case se != nil, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return w.errorAt(len(w.data), "", errors.New("unexpected end of JSON"))
	}
	return w.errorAt(int(w.dec.InputOffset()), "", err)
}

// object reads an object whose fields field reads: it is called with the
// decoder before each field's value. Unknown and repeated fields are
// errors.
func (w *jsonWalker) object(path string, field func(key, path string, off int) error, known ...string) error {
	tok, off, err := w.token()
	if err != nil {
		return err
	}
	w.pos[path] = off
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return w.errorf(off, path, "want an object, got %s", describe(tok))
	}
	seen := make(map[string]bool, len(known))
	for w.dec.More() {
		tok, off, err := w.token()
		if err != nil {
			return err
		}
		key, _ := tok.(string) // keys are strings
		ok := false
		for _, k := range known {
			ok = ok || k == key
		}
		if !ok {
			return w.errorf(off, path, "unknown field %q (known: %s)", key, quoteList(known))
		}
		if seen[key] {
			return w.errorf(off, path, "field %q given twice", key)
		}
		seen[key] = true
		if err := field(key, joinPath(path, key), off); err != nil {
			return err
		}
	}
	_, _, err = w.token() // '}'
	return err
}

// end checks that nothing follows the document.
func (w *jsonWalker) end() error {
	off := w.skipSpace()
	tok, err := w.dec.Token()
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return w.syntaxError(err)
	}
	return w.errorf(off, "", "unexpected data after the object: %s", describe(tok))
}

// str reads a string value.
func (w *jsonWalker) str(path string) (string, error) {
	tok, off, err := w.token()
	if err != nil {
		return "", err
	}
	w.pos[path] = off
	s, ok := tok.(string)
	if !ok {
		return "", w.errorf(off, path, "want a string, got %s", describe(tok))
	}
	return s, nil
}

// number reads a number value as its text.
func (w *jsonWalker) number(path string) (json.Number, int, error) {
	tok, off, err := w.token()
	if err != nil {
		return "", off, err
	}
	w.pos[path] = off
	n, ok := tok.(json.Number)
	if !ok {
		return "", off, w.errorf(off, path, "want a number, got %s", describe(tok))
	}
	return n, off, nil
}

// float reads a number as a float64.
func (w *jsonWalker) float(path string) (float64, error) {
	n, off, err := w.number(path)
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return 0, w.errorf(off, path, "%s is out of range", n)
	}
	return f, nil
}

// boolean reads true or false.
func (w *jsonWalker) boolean(path string) (bool, error) {
	tok, off, err := w.token()
	if err != nil {
		return false, err
	}
	w.pos[path] = off
	b, ok := tok.(bool)
	if !ok {
		return false, w.errorf(off, path, "want true or false, got %s", describe(tok))
	}
	return b, nil
}

// describe names a token's type for errors.
func describe(tok json.Token) string {
	switch t := tok.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(t)
	case json.Number:
		return "the number " + string(t)
	case string:
		return strconv.Quote(t)
	case json.Delim:
		switch t {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return strconv.Quote(t.String())
	}
	return fmt.Sprintf("%v", tok)
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func quoteList(s []string) string {
	var b bytes.Buffer
	for i, k := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k)
	}
	return b.String()
}
