package clusterfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ferrycluster/ferry/internal/scheduler"
)

// SnapshotVersion is the version of ferry's JSON snapshot format that
// ReadSnapshot reads and WriteSnapshot writes.
const SnapshotVersion = 1

// snapshotFile is the JSON document: a scheduler.Snapshot with a version.
type snapshotFile struct {
	Version   *int                 `json:"version"`
	Policy    scheduler.Policy     `json:"policy"`
	Nodes     []scheduler.Node     `json:"nodes"`
	Instances []scheduler.Instance `json:"instances"`
}

// ReadSnapshot reads ferry's JSON snapshot format:
//
//	{"version":1,"policy":{...},"nodes":[...],"instances":[...]}
//
// Decoding is strict: unknown or repeated fields, values of the wrong type,
// numbers out of range and data after the document are errors, and so is
// anything Validate rejects. Errors are *Error values naming the line and
// column and, once the JSON is well formed, the path of the value, such as
// `line 7, column 18: nodes[0].capacity: unknown field "cpu"`. Empty label
// maps and tag lists read as nil.
func ReadSnapshot(r io.Reader) (scheduler.Snapshot, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return scheduler.Snapshot{}, fmt.Errorf("reading snapshot: %w", err)
	}
	return parseSnapshot(data)
}

func parseSnapshot(data []byte) (scheduler.Snapshot, error) {
	w := jsonWalker{data: data, pos: make(map[string]int)}
	// Syntax first: json.Unmarshal gives offsets from the start of the
	// file, where a Decoder gives them from the start of the current value.
	var raw json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return scheduler.Snapshot{}, w.syntaxError(err)
	}
	w.dec = json.NewDecoder(bytes.NewReader(data))
	w.dec.UseNumber()
	if err := w.document(reflect.TypeFor[snapshotFile]()); err != nil {
		return scheduler.Snapshot{}, err
	}
	var f snapshotFile
	if err := json.Unmarshal(data, &f); err != nil {
		// The walk accepted it, so this is a bug here rather than in the file.
		return scheduler.Snapshot{}, fmt.Errorf("decoding snapshot: %w", err)
	}
	if f.Version == nil {
		return scheduler.Snapshot{}, w.locate(pathError("version", "missing (this ferry reads version %d)", SnapshotVersion))
	}
	if *f.Version != SnapshotVersion {
		return scheduler.Snapshot{}, w.locate(pathError("version", "%d is not supported (this ferry reads version %d)", *f.Version, SnapshotVersion))
	}
	s := scheduler.Snapshot{Policy: f.Policy, Nodes: f.Nodes, Instances: f.Instances}
	normalize(&s)
	if err := Validate(s); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return scheduler.Snapshot{}, w.locate(e)
		}
		return scheduler.Snapshot{}, err
	}
	return s, nil
}

// normalize makes empty maps and slices nil, as they read back after a
// write (which omits them).
func normalize(s *scheduler.Snapshot) {
	if len(s.Nodes) == 0 {
		s.Nodes = nil
	}
	if len(s.Instances) == 0 {
		s.Instances = nil
	}
	for i := range s.Nodes {
		if len(s.Nodes[i].Labels) == 0 {
			s.Nodes[i].Labels = nil
		}
	}
	for i := range s.Instances {
		if len(s.Instances[i].Tags) == 0 {
			s.Instances[i].Tags = nil
		}
	}
}

// WriteSnapshot writes s in ferry's JSON snapshot format, indented, after
// checking it with Validate: what it writes, ReadSnapshot reads back equal
// (with empty label maps and tag lists as nil).
func WriteSnapshot(w io.Writer, s scheduler.Snapshot) error {
	if err := Validate(s); err != nil {
		return err
	}
	v := SnapshotVersion
	f := snapshotFile{Version: &v, Policy: s.Policy, Nodes: s.Nodes, Instances: s.Instances}
	if f.Nodes == nil {
		f.Nodes = []scheduler.Node{}
	}
	if f.Instances == nil {
		f.Instances = []scheduler.Instance{}
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(f); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return nil
}

// jsonWalker checks a JSON document against the shape of a Go type, token
// by token, so that every error can say where it is: unknown and repeated
// fields, wrong types and out-of-range numbers. It records where each value
// starts so that later errors about a path can name a line too.
type jsonWalker struct {
	data []byte
	dec  *json.Decoder
	pos  map[string]int // path -> offset of the value's first byte
}

func (w *jsonWalker) document(t reflect.Type) error {
	tok, start, err := w.token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return w.errorAt(start, "", "want an object, got %s", describe(tok))
	}
	w.pos[""] = start
	if err := w.object(t, ""); err != nil {
		return err
	}
	off := int(w.dec.InputOffset())
	if _, err := w.dec.Token(); err != io.EOF {
		if err != nil {
			return w.syntaxError(err)
		}
		return w.errorAt(w.skipSpace(off), "", "unexpected data after the end of the snapshot")
	}
	return nil
}

// token returns the next token and the offset of its first byte.
func (w *jsonWalker) token() (json.Token, int, error) {
	off := int(w.dec.InputOffset())
	tok, err := w.dec.Token()
	if err != nil {
		return nil, 0, w.syntaxError(err)
	}
	return tok, w.skipSpace(off), nil
}

// skipSpace returns the offset of the first byte at or after off that is
// not white space or a separator.
func (w *jsonWalker) skipSpace(off int) int {
	for off < len(w.data) && strings.IndexByte(" \t\r\n,:", w.data[off]) >= 0 {
		off++
	}
	return off
}

func (w *jsonWalker) syntaxError(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se) && se.Error() != "unexpected end of JSON input":
		// Offset counts the offending byte.
		line, col := w.lineCol(max(int(se.Offset)-1, 0))
		return &Error{Line: line, Column: col, Err: err}
	case se != nil, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		line, col := w.lineCol(len(w.data))
		return &Error{Line: line, Column: col, Err: errors.New("unexpected end of file")}
	default:
		return fmt.Errorf("reading snapshot: %w", err)
	}
}

// lineCol turns a byte offset into a 1-based line and column (in runes).
func (w *jsonWalker) lineCol(off int) (int, int) {
	off = min(off, len(w.data))
	before := w.data[:off]
	lineStart := bytes.LastIndexByte(before, '\n') + 1
	return bytes.Count(before, []byte{'\n'}) + 1, utf8.RuneCount(before[lineStart:]) + 1
}

func (w *jsonWalker) errorAt(off int, path, format string, args ...any) *Error {
	line, col := w.lineCol(off)
	return &Error{Line: line, Column: col, Name: path, Err: fmt.Errorf(format, args...)}
}

// locate adds the position of e's path (or of its closest ancestor that is
// in the file) to e.
func (w *jsonWalker) locate(e *Error) *Error {
	for p := e.Name; ; {
		if off, ok := w.pos[p]; ok {
			e.Line, e.Column = w.lineCol(off)
			return e
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			if p == "" {
				return e
			}
			p = ""
			continue
		}
		p = p[:i]
	}
}

// value checks the next value against t.
func (w *jsonWalker) value(t reflect.Type, path string) error {
	tok, start, err := w.token()
	if err != nil {
		return err
	}
	w.pos[path] = start
	if t.Kind() == reflect.Pointer {
		if tok == nil {
			return nil
		}
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Slice:
		want := "an object"
		delim := json.Delim('{')
		if t.Kind() == reflect.Slice {
			want, delim = "an array", '['
		}
		if tok == nil {
			return nil // null: absent
		}
		if d, ok := tok.(json.Delim); !ok || d != delim {
			return w.errorAt(start, path, "want %s, got %s", want, describe(tok))
		}
		switch t.Kind() {
		case reflect.Struct:
			return w.object(t, path)
		case reflect.Map:
			return w.mapping(t, path)
		default:
			return w.array(t, path)
		}
	case reflect.String:
		if _, ok := tok.(string); !ok {
			return w.errorAt(start, path, "want a string, got %s", describe(tok))
		}
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			return w.errorAt(start, path, "want true or false, got %s", describe(tok))
		}
	case reflect.Int, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.errorAt(start, path, "want an integer, got %s", describe(tok))
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return w.errorAt(start, path, "%s is out of range", n)
			}
			return w.errorAt(start, path, "want an integer, got %s", n)
		}
	case reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			return w.errorAt(start, path, "want a number, got %s", describe(tok))
		}
		if _, err := strconv.ParseFloat(string(n), 64); err != nil {
			return w.errorAt(start, path, "%s is out of range", n)
		}
	default:
		return fmt.Errorf("clusterfile: internal error: no JSON check for %s at %s", t, path)
	}
	return nil
}

// object checks the fields of an object whose '{' has been read.
func (w *jsonWalker) object(t reflect.Type, path string) error {
	fields := jsonFields(t)
	seen := make(map[string]bool, len(fields))
	for w.dec.More() {
		tok, start, err := w.token()
		if err != nil {
			return err
		}
		key, _ := tok.(string) // object keys are always strings
		ft, ok := fields[key]
		if !ok {
			return w.errorAt(start, path, "unknown field %q", key)
		}
		if seen[key] {
			return w.errorAt(start, path, "field %q given twice", key)
		}
		seen[key] = true
		if err := w.value(ft, joinPath(path, key)); err != nil {
			return err
		}
	}
	_, _, err := w.token() // '}'
	return err
}

// mapping checks a JSON object read into a Go map with string keys.
func (w *jsonWalker) mapping(t reflect.Type, path string) error {
	seen := make(map[string]bool)
	for w.dec.More() {
		tok, start, err := w.token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if seen[key] {
			return w.errorAt(start, path, "key %q given twice", key)
		}
		seen[key] = true
		if err := w.value(t.Elem(), fmt.Sprintf("%s[%q]", path, key)); err != nil {
			return err
		}
	}
	_, _, err := w.token() // '}'
	return err
}

// array checks the elements of an array whose '[' has been read.
func (w *jsonWalker) array(t reflect.Type, path string) error {
	for i := 0; w.dec.More(); i++ {
		if err := w.value(t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	_, _, err := w.token() // ']'
	return err
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonFields maps the JSON names of t's fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type, t.NumField())
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// describe names the kind of a token for an error message.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(v)
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return "an object"
	}
	return fmt.Sprintf("%v", tok)
}
