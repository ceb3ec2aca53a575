package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/ferrycluster/ferry/internal/api"
)

// Error codes the server puts in APIError.Code (docs/routes.md).
const (
	CodeInvalid       = "invalid"
	CodeUnauthorized  = "unauthorized"
	CodeForbidden     = "forbidden"
	CodeNotFound      = "not_found"
	CodeConflict      = "conflict"
	CodeAlreadyExists = "already_exists"
	CodeTooLarge      = "too_large"
	CodeInternal      = "internal"
	CodeUnavailable   = "unavailable"
)

// ErrStreamClosed is returned by [Client.WatchEvents] when the server ends
// the event stream, which it never does on purpose (a restart, a proxy).
var ErrStreamClosed = errors.New("client: event stream closed by the server")

// APIError is a non-2xx answer of the server. Code, Message and Field come
// from the JSON error body; when the body is not one (a proxy's error page),
// Code is derived from Status and Message from the body's first line.
type APIError struct {
	// Status is the HTTP status code, e.g. 404.
	Status int
	// Code is the machine-readable error code, one of the Code constants.
	Code string
	// Message says what went wrong, for people.
	Message string
	// Field names the offending field of the request, if one is to blame
	// (e.g. "spec.memory").
	Field string
}

// Error reads like "spec.memory: must be between 16M and 16T (invalid)".
func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	return msg
}

// IsNotFound reports whether err is, or wraps, an [*APIError] saying the
// object does not exist (404).
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && (e.Status == http.StatusNotFound || e.Code == CodeNotFound)
}

// IsConflict reports whether err is, or wraps, an [*APIError] saying the
// write conflicts with the stored object (409): a stale resourceVersion, or
// a name that already exists.
func IsConflict(err error) bool {
	var e *APIError
	return errors.As(err, &e) && (e.Status == http.StatusConflict || e.Code == CodeConflict || e.Code == CodeAlreadyExists)
}

// IsExists reports whether err is, or wraps, an [*APIError] saying an
// object of that name already exists (409 already_exists).
func IsExists(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == CodeAlreadyExists
}

// IsUnauthorized reports whether err is, or wraps, an [*APIError] saying the
// token is missing or was rejected (401).
func IsUnauthorized(err error) bool {
	var e *APIError
	return errors.As(err, &e) && (e.Status == http.StatusUnauthorized || e.Code == CodeUnauthorized)
}

// codeForStatus is the error code the server would have sent with status.
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalid
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusServiceUnavailable:
		return CodeUnavailable
	}
	if status >= 500 {
		return CodeInternal
	}
	return ""
}

// maxErrorSnippet caps how much of a non-JSON error body goes into Message.
const maxErrorSnippet = 200

// newAPIError builds the error for a non-2xx answer from its body.
func newAPIError(status int, body []byte) *APIError {
	var eb api.ErrorBody
	if err := json.Unmarshal(body, &eb); err == nil && (eb.Error.Code != "" || eb.Error.Message != "") {
		e := &APIError{Status: status, Code: eb.Error.Code, Message: eb.Error.Message, Field: eb.Error.Field}
		if e.Code == "" {
			e.Code = codeForStatus(status)
		}
		return e
	}
	e := &APIError{Status: status, Code: codeForStatus(status)}
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	line = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(line))
	if len(line) > maxErrorSnippet {
		line = line[:maxErrorSnippet]
		for !utf8.ValidString(line) {
			line = line[:len(line)-1]
		}
		line += "..."
	}
	e.Message = fmt.Sprintf("server answered %d %s", status, http.StatusText(status))
	if line != "" {
		e.Message += ": " + line
	}
	return e
}
