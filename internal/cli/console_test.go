package cli

import (
	"bytes"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// chunkReader returns its chunks one Read at a time, then err (io.EOF if
// nil).
type chunkReader struct {
	chunks []string
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset") }

var errRead = errors.New("read failed")

func TestCopyUntilDetach(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		chunks       []string
		readErr      error
		failWrite    bool
		want         string
		wantDetached bool
		wantErr      error
	}{
		{name: "empty", want: ""},
		{name: "no key", chunks: []string{"hello\r", "world\x03\x1b[A"}, want: "hello\rworld\x03\x1b[A"},
		{name: "key in the middle", chunks: []string{"ab\x1dcd"}, want: "ab", wantDetached: true},
		{name: "key first", chunks: []string{"\x1d", "never sent"}, want: "", wantDetached: true},
		{name: "key in a later read", chunks: []string{"abc", "de\x1df", "gh"}, want: "abcde", wantDetached: true},
		{name: "key last", chunks: []string{"exit\r\x1d"}, want: "exit\r", wantDetached: true},
		{name: "other control bytes pass", chunks: []string{"\x1c\x1e\x1f\x04"}, want: "\x1c\x1e\x1f\x04"},
		{name: "read error", chunks: []string{"abc"}, readErr: errRead, want: "abc", wantErr: errRead},
		{name: "write error", chunks: []string{"abc"}, failWrite: true, wantErr: errors.New("connection reset")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			var dst io.Writer = &buf
			if tc.failWrite {
				dst = failWriter{}
			}
			src := &chunkReader{chunks: append([]string(nil), tc.chunks...), err: tc.readErr}
			detached, err := copyUntilDetach(dst, src)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("copyUntilDetach(%q) error = %v, want none", tc.chunks, err)
			case tc.wantErr != nil && (err == nil || err.Error() != tc.wantErr.Error()):
				t.Fatalf("copyUntilDetach(%q) error = %v, want %v", tc.chunks, err, tc.wantErr)
			}
			if detached != tc.wantDetached {
				t.Errorf("copyUntilDetach(%q) detached = %v, want %v", tc.chunks, detached, tc.wantDetached)
			}
			if got := buf.String(); got != tc.want {
				t.Errorf("copyUntilDetach(%q) wrote %q, want %q", tc.chunks, got, tc.want)
			}
		})
	}
}

func TestAttach(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string // then EOF; "" with block: stdin never ends
		// block keeps stdin open (a pipe nobody writes to).
		block bool
		// server runs on the far end of the console stream.
		server  func(c net.Conn)
		done    bool // close done at once
		want    attachEnd
		wantOut string
	}{
		{
			name: "detach key",
			in:   "ls\r\x1dreboot\r",
			server: func(c net.Conn) {
				buf := make([]byte, 3)
				_, _ = io.ReadFull(c, buf)
				_, _ = c.Write(buf)
				_, _ = io.Copy(io.Discard, c)
			},
			want: endDetached,
		},
		{
			name:  "server closes",
			block: true,
			server: func(c net.Conn) {
				_, _ = io.WriteString(c, "login: ")
				c.Close()
			},
			want:    endClosed,
			wantOut: "login: ",
		},
		{
			name: "input ends, output goes quiet",
			in:   "uptime\r",
			server: func(c net.Conn) {
				buf := make([]byte, 7)
				_, _ = io.ReadFull(c, buf)
				for _, b := range buf {
					time.Sleep(5 * time.Millisecond) // slower than nothing, faster than linger
					_, _ = c.Write([]byte{b})
				}
				_, _ = io.Copy(io.Discard, c) // stays open
			},
			want:    endInput,
			wantOut: "uptime\r",
		},
		{
			name:   "done",
			block:  true,
			server: func(c net.Conn) { _, _ = io.Copy(io.Discard, c) },
			done:   true,
			want:   endDone,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, server := net.Pipe()
			defer client.Close()
			go func() {
				defer server.Close()
				tc.server(server)
			}()
			var in io.Reader = strings.NewReader(tc.in)
			if tc.block {
				pr, pw := io.Pipe()
				defer pw.Close()
				in = pr
			}
			done := make(chan struct{})
			if tc.done {
				close(done)
			}
			out := &lineWriter{} // written by attach's goroutine
			got, err := attach(client, in, out, 50*time.Millisecond, done)
			if err != nil {
				t.Fatalf("attach: %v", err)
			}
			if got != tc.want {
				t.Errorf("attach ended with %d, want %d", got, tc.want)
			}
			if s := out.String(); tc.wantOut != "" && s != tc.wantOut {
				t.Errorf("output = %q, want %q", s, tc.wantOut)
			}
		})
	}
}

func TestConsoleCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		stdin string
		block bool   // stdin stays open
		mode  string // fakeAPI.console
		// detach: the session may end before the banner is printed.
		detach  bool
		wantOut string // whole stdout
		wantIn  string // what the server read, if checked
		wantErr string
		// wantMsg are substrings of stderr.
		wantMsg []string
	}{
		{
			name:    "output after stdin ends is printed",
			args:    []string{"console", "web-1"},
			stdin:   "uptime\n",
			wantOut: "web-1 login: uptime\n 12:00:00 up 3 days\n",
			wantIn:  "uptime\n",
			wantMsg: []string{"Connected to web-1's console; Ctrl-] to detach\n"},
		},
		{
			name:    "detach key",
			args:    []string{"instance", "console", "web-1"},
			stdin:   "ls\n\x1dreboot\n",
			detach:  true,
			wantIn:  "ls\n",
			wantMsg: []string{"Ctrl-] to detach"},
		},
		{
			name:    "server ends the session",
			args:    []string{"console", "web-1"},
			block:   true,
			mode:    "close",
			wantOut: "web-1 login: ",
			wantMsg: []string{"The server closed web-1's console."},
		},
		{
			name:    "not running",
			args:    []string{"console", "db"},
			wantErr: `instance "db" is not running (Stopped) (conflict)`,
		},
		{
			name:    "missing",
			args:    []string{"console", "x"},
			wantErr: `instance "x" not found`,
		},
		{
			name:    "no name",
			args:    []string{"console"},
			wantErr: "missing the instance NAME",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			e.api.console = tc.mode
			var stdin io.Reader = strings.NewReader(tc.stdin)
			if tc.block {
				pr, pw := io.Pipe()
				defer pw.Close()
				stdin = pr
			}
			r := e.run(t, runOpts{stdin: stdin}, tc.args...)
			r.check(t, nil, tc.wantErr)
			if tc.wantErr != "" {
				return
			}
			if tc.wantOut != "" && r.stdout != tc.wantOut {
				t.Errorf("stdout = %q, want %q", r.stdout, tc.wantOut)
			}
			if !tc.detach && !strings.HasPrefix(r.stdout, "web-1 login: ") {
				t.Errorf("stdout = %q, want the banner sent with the 101 first", r.stdout)
			}
			if tc.wantIn != "" {
				if got := e.api.consoleInput(t); got != tc.wantIn {
					t.Errorf("server read %q, want %q", got, tc.wantIn)
				}
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(r.stderr, m) {
					t.Errorf("stderr lacks %q; stderr:\n%q", m, r.stderr)
				}
			}
		})
	}
}

func TestLogsCommand(t *testing.T) {
	t.Parallel()
	full := "Booting ferry demo\nweb-1 login: \x1b[0m\nline 3\n"
	tests := []struct {
		name     string
		args     []string
		want     string
		wantReqs []string
		wantErr  string
	}{
		{name: "all", args: []string{"logs", "web-1"}, want: full, wantReqs: []string{"GET /v1/instances/web-1/logs"}},
		{name: "tail", args: []string{"logs", "web-1", "--tail", "2"}, want: "web-1 login: \x1b[0m\nline 3\n", wantReqs: []string{"GET /v1/instances/web-1/logs?tail=2"}},
		{name: "instance logs", args: []string{"instance", "logs", "web-1", "--tail", "1"}, want: "line 3\n"},
		{name: "empty log", args: []string{"logs", "db"}, want: ""},
		{name: "missing", args: []string{"logs", "x"}, wantErr: `instance "x" not found`},
		{name: "negative tail", args: []string{"logs", "web-1", "--tail", "-1"}, wantErr: "--tail: must not be negative, got -1", wantReqs: []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t)
			seed(e.api)
			r := e.run(t, runOpts{}, tc.args...)
			r.check(t, nil, tc.wantErr)
			if tc.wantErr == "" && r.stdout != tc.want {
				t.Errorf("stdout = %q, want %q", r.stdout, tc.want)
			}
			if tc.wantReqs != nil {
				if got := e.api.requestLog(); !reflect.DeepEqual(got, tc.wantReqs) && !(len(got) == 0 && len(tc.wantReqs) == 0) {
					t.Errorf("requests = %q, want %q", got, tc.wantReqs)
				}
			}
		})
	}
}
