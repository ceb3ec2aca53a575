package api

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"regexp"
	"strings"
)

// FieldError is a validation failure of one field. Its message says what is
// allowed, so the user can fix the input without reading the docs.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return e.Field + ": " + e.Message
}

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Limits on what one instance may ask for. They catch typos (4096 CPUs,
// 256T of memory) rather than describe any real host.
const (
	MaxCPUs      = 1024
	MinMemory    = 16 << 20
	MaxMemory    = 16 << 40
	MinDisk      = 1 << 20
	MaxDisk      = 64 << 40
	maxNameLen   = 63
	maxOwnerLen  = 128
	MaxBodyBytes = 1 << 20 // cap on every API request body
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateName checks a name of an instance, node or image: a DNS label
// (lowercase letters, digits and '-', 1 to 63 characters, starting and ending
// with a letter or digit), so it can be a hostname, a tap name prefix and a key.
func ValidateName(field, name string) error {
	switch {
	case name == "":
		return fieldErr(field, "is required: use lowercase letters, digits and '-', e.g. web-1")
	case len(name) > maxNameLen:
		return fieldErr(field, "%q is %d characters long; at most %d are allowed", name, len(name), maxNameLen)
	case !nameRE.MatchString(name):
		return fieldErr(field, "%q is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// Validate checks a spec as submitted. knownImage reports whether an image
// is registered; nil skips that check.
func (s *InstanceSpec) Validate(knownImage func(string) bool) error {
	if s.CPUs <= 0 || s.CPUs > MaxCPUs {
		return fieldErr("spec.cpus", "must be between 1 and %d, got %d", MaxCPUs, s.CPUs)
	}
	if s.Memory < MinMemory || s.Memory > MaxMemory {
		return fieldErr("spec.memory", "must be between %s and %s (e.g. 256M), got %s", Bytes(MinMemory), Bytes(MaxMemory), s.Memory.Human())
	}
	if s.Memory%(1<<20) != 0 {
		return fieldErr("spec.memory", "must be a whole number of MiB, got %d bytes", int64(s.Memory))
	}
	if s.Disk < MinDisk || s.Disk > MaxDisk {
		return fieldErr("spec.disk", "must be between %s and %s (e.g. 1G), got %s", Bytes(MinDisk), Bytes(MaxDisk), s.Disk.Human())
	}
	if s.Disk%(1<<20) != 0 {
		return fieldErr("spec.disk", "must be a whole number of MiB, got %d bytes", int64(s.Disk))
	}
	if err := ValidateName("spec.image", s.Image); err != nil {
		return err
	}
	if knownImage != nil && !knownImage(s.Image) {
		return fieldErr("spec.image", "image %q is not registered; see `ferry image ls`", s.Image)
	}
	switch s.State {
	case "", DesiredRunning, DesiredStopped:
	default:
		return fieldErr("spec.state", "must be %q or %q, got %q", DesiredRunning, DesiredStopped, s.State)
	}
	if err := ValidateOwner("spec.owner", s.Owner); err != nil {
		return err
	}
	if s.Group != "" {
		if err := ValidateName("spec.group", s.Group); err != nil {
			return err
		}
	}
	return s.validateIdentity()
}

// Validate checks a create request and fills defaults.
func (r *CreateInstanceRequest) Validate(knownImage func(string) bool) error {
	if err := ValidateName("name", r.Name); err != nil {
		return err
	}
	if r.Spec.State == "" {
		r.Spec.State = DesiredRunning
	}
	return r.Spec.Validate(knownImage)
}

// Validate checks a heartbeat's self-reported capacity.
func (h *Heartbeat) Validate() error {
	if h.Capacity.CPUs <= 0 || h.Capacity.CPUs > 1<<16 {
		return fieldErr("capacity.cpus", "must be between 1 and 65536, got %d", h.Capacity.CPUs)
	}
	if h.Capacity.Memory <= 0 {
		return fieldErr("capacity.memory", "must be positive")
	}
	if h.Capacity.Disk < 0 {
		return fieldErr("capacity.disk", "must not be negative")
	}
	if len(h.Address) > 255 || len(h.AgentVersion) > 64 || len(h.Accel) > 16 {
		return fieldErr("address", "address, agentVersion or accel is too long")
	}
	return nil
}

// Validate checks an agent's instance report.
func (r *InstanceReport) Validate() error {
	switch r.Phase {
	case PhaseStarting, PhaseRunning, PhaseStopping, PhaseStopped, PhaseFailed, PhaseDeleting:
	default:
		return fieldErr("phase", "agents report Starting, Running, Stopping, Stopped, Failed or Deleting, got %q", r.Phase)
	}
	if len(r.Message) > 4096 || len(r.Error) > 4096 {
		return fieldErr("message", "message and error are limited to 4096 bytes")
	}
	return nil
}

// Validate checks a disk status report.
func (d *DiskStatus) Validate() error {
	ok := false
	for _, s := range DiskStates {
		ok = ok || d.State == s
	}
	if !ok {
		return fieldErr("state", "must be one of %v, got %q", DiskStates, d.State)
	}
	if len(d.Reason) > 4096 {
		return fieldErr("reason", "is limited to 4096 bytes")
	}
	if d.DirtyBytes < 0 {
		return fieldErr("dirtyBytes", "must not be negative, got %d", d.DirtyBytes)
	}
	if s := d.Sync; s != nil && (s.TotalBytes < 0 || s.DoneBytes < 0 || s.SentBytes < 0 || s.DoneBytes > s.TotalBytes || s.BytesPerSecond < 0 || s.ETASeconds < 0) {
		return fieldErr("sync", "byte counts and rates must not be negative, and doneBytes must not exceed totalBytes")
	}
	return nil
}

// Validate checks an outdate request.
func (r *OutdateRequest) Validate() error {
	if r.Epoch == 0 {
		return fieldErr("epoch", "is required: the epoch the primary wrote under")
	}
	return nil
}

// Validate checks a join request (the CSR itself is checked by pki).
func (r *JoinRequest) Validate() error {
	if r.Token == "" {
		return fieldErr("token", "is required: get one with `ferry node join-token`")
	}
	if err := ValidateName("node", r.Node); err != nil {
		return err
	}
	if r.CSR == "" {
		return fieldErr("csr", "is required")
	}
	return nil
}

// Validate checks a join-token request.
func (r *JoinTokenRequest) Validate() error {
	if r.TTLSeconds < 0 || r.TTLSeconds > 7*24*3600 {
		return fieldErr("ttlSeconds", "must be between 0 (default, 1 hour) and 604800 (7 days), got %d", r.TTLSeconds)
	}
	return nil
}

// ErrBodyTooLarge is returned by Decode when a body exceeds MaxBodyBytes.
var ErrBodyTooLarge = errors.New("api: request body too large")

// Decode reads one JSON value from r into v, strictly: unknown fields,
// trailing data, wrong types and bodies over MaxBodyBytes are errors that
// name the offending field where JSON allows it.
func Decode(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return fmt.Errorf("reading body: %w", err)
	}
	return DecodeBytes(data, v)
}

// DecodeBytes is Decode over a byte slice.
func DecodeBytes(data []byte, v any) error {
	if len(data) > MaxBodyBytes {
		return fmt.Errorf("%w: the limit is %d bytes", ErrBodyTooLarge, MaxBodyBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return &FieldError{Message: "request body is empty: send a JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field ") {
			// encoding/json names only the key; find its whole path.
			if kerr := checkKeys(data, v); kerr != nil {
				return kerr
			}
		}
		return describeJSONError(err)
	}
	if dec.More() {
		return &FieldError{Message: "request body has data after the JSON object"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &FieldError{Message: "request body has data after the JSON object"}
	}
	// encoding/json matches keys case-insensitively and lets a later
	// duplicate key win; a strict API accepts neither.
	return checkKeys(data, v)
}

// checkKeys walks the JSON value at the start of data against the Go type of
// v and returns a *FieldError, with the key's full path, for the first object
// key that names no field exactly (encoding/json would accept "NAME" for
// "name") or that appears twice in one object. It returns nil if every key is
// fine, and also if data is not valid JSON, which encoding/json reports.
func checkKeys(data []byte, v any) error {
	w := keyWalker{dec: json.NewDecoder(bytes.NewReader(data))}
	err := w.value(reflect.TypeOf(v), "")
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return nil
}

// keyWalker reads a JSON value token by token alongside the Go type it was
// decoded into.
type keyWalker struct {
	dec *json.Decoder
}

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// value checks the next JSON value, to be decoded into t (nil: anything).
func (w *keyWalker) value(t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar
	}
	custom := t != nil && (reflect.PointerTo(t).Implements(jsonUnmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType))
	switch {
	case t == nil || custom:
	case delim == '{' && t.Kind() == reflect.Struct:
		return w.object(path, jsonFields(t), nil)
	case delim == '{' && t.Kind() == reflect.Map:
		return w.object(path, nil, t.Elem())
	case delim == '[' && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i := 0; w.dec.More(); i++ {
			if err := w.value(t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := w.dec.Token()
		return err
	}
	return w.skip()
}

// object checks the members of an object whose '{' has been read: against
// fields if it decodes into a struct, else as map values of type elem.
func (w *keyWalker) object(path string, fields map[string]reflect.Type, elem reflect.Type) error {
	seen := make(map[string]bool)
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		field := key
		if path != "" {
			field = path + "." + key
		}
		if seen[key] {
			return fieldErr(field, "is given twice")
		}
		seen[key] = true
		t := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				return unknownField(field, key, fields)
			}
			t = ft
		}
		if err := w.value(t, field); err != nil {
			return err
		}
	}
	_, err := w.dec.Token() // '}'
	return err
}

// skip reads the rest of an object or array whose opening delimiter has
// been read.
func (w *keyWalker) skip() error {
	for depth := 1; depth > 0; {
		tok, err := w.dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

func unknownField(field, key string, fields map[string]reflect.Type) error {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fieldErr(field, "unknown field: field names are case-sensitive; did you mean %q?", name)
		}
	}
	return fieldErr(field, "unknown field; see docs/api/openapi.yaml for the allowed fields")
}

// jsonFields returns the JSON names of the fields encoding/json decodes into
// in struct type t, with their types, including those promoted from embedded
// structs (a shallower field wins a name).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := make(map[string]reflect.Type)
	for level := []reflect.Type{t}; len(level) > 0; {
		var next []reflect.Type
		found := make(map[string]reflect.Type)
		for _, st := range level {
			for i := range st.NumField() {
				f := st.Field(i)
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				ft := f.Type
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
					next = append(next, ft)
					continue
				}
				if !f.IsExported() {
					continue
				}
				if name == "" {
					name = f.Name
				}
				if _, ok := fields[name]; !ok {
					found[name] = f.Type
				}
			}
		}
		maps.Copy(fields, found)
		level = next
	}
	return fields
}

func describeJSONError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && typeErr.Type == bytesType:
		// From Bytes.UnmarshalJSON: Value says what was sent and why it is
		// not a size; encoding/json has filled in the field.
		return &FieldError{Field: typeErr.Field, Message: "must be a size: a number of bytes, or a string with a binary unit such as \"256M\" or \"1.5G\"; got " + typeErr.Value}
	case errors.As(err, &typeErr):
		return &FieldError{Field: typeErr.Field, Message: fmt.Sprintf("must be %s, got JSON %s", typeErr.Type, typeErr.Value)}
	case errors.As(err, &syntaxErr):
		return &FieldError{Message: fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &FieldError{Message: "malformed JSON: the body ends early"}
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return &FieldError{Field: strings.Trim(f, `"`), Message: "unknown field; see docs/api/openapi.yaml for the allowed fields"}
	}
	// Any other error from an UnmarshalJSON method comes through here.
	return &FieldError{Message: strings.TrimPrefix(msg, "json: ")}
}

// ValidateOwner checks a customer name (an instance's owner): at most 128
// bytes, no control characters. It may be empty.
func ValidateOwner(field, owner string) error {
	if len(owner) > maxOwnerLen {
		return fieldErr(field, "is %d characters long; at most %d are allowed", len(owner), maxOwnerLen)
	}
	if strings.ContainsFunc(owner, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fieldErr(field, "must not contain control characters")
	}
	return nil
}
