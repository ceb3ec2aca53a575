package client

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

var errStop = errors.New("stop here")

func TestWatchEvents(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := func(id, typ string) api.Event {
		return api.Event{ID: id, Time: t0, Kind: api.KindInstance, Name: "web-1", Type: typ, Node: "n1"}
	}
	line := func(e api.Event) string { return mustJSON(e) + "\n" }
	long := `{"id":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}` + "\n"

	tests := []struct {
		name   string
		limit  int
		chunks []string // written and flushed one by one
		hold   bool     // after the chunks, keep the stream open until the client goes
		status int
		// stopAfter makes fn return errStop (stopWith "fn") or cancel the
		// context (stopWith "cancel") once it has seen that many events.
		stopAfter int
		stopWith  string
		wantQuery string
		want      []api.Event
		wantErr   error
		wantMsg   string
	}{
		{
			name:  "partial lines, blank lines and pings, then cancel",
			limit: 3,
			chunks: []string{
				line(ev("1", "Created"))[:10],
				line(ev("1", "Created"))[10:] + "\n\n",
				`{"type":"ping"}` + "\n",
				line(ev("2", "Scheduled")) + line(ev("3", "Running"))[:5],
				line(ev("3", "Running"))[5:],
			},
			hold:      true,
			stopAfter: 3,
			stopWith:  "cancel",
			wantQuery: "limit=3&watch=true",
			want:      []api.Event{ev("1", "Created"), ev("2", "Scheduled"), ev("3", "Running")},
			wantErr:   context.Canceled,
		},
		{
			name:      "cancel while idle",
			chunks:    []string{line(ev("1", "Created"))},
			hold:      true,
			stopAfter: 1,
			stopWith:  "cancel",
			wantQuery: "watch=true",
			want:      []api.Event{ev("1", "Created")},
			wantErr:   context.Canceled,
		},
		{
			name:      "fn error ends the watch",
			chunks:    []string{line(ev("1", "Created")) + line(ev("2", "Running"))},
			hold:      true,
			stopAfter: 1,
			stopWith:  "fn",
			wantQuery: "watch=true",
			want:      []api.Event{ev("1", "Created")},
			wantErr:   errStop,
		},
		{
			name:      "server closes the stream",
			chunks:    []string{line(ev("1", "Created"))},
			wantQuery: "watch=true",
			want:      []api.Event{ev("1", "Created")},
			wantErr:   ErrStreamClosed,
		},
		{
			name:      "truncated last line is dropped",
			chunks:    []string{line(ev("1", "Created")), line(ev("2", "Running"))[:20]},
			wantQuery: "watch=true",
			want:      []api.Event{ev("1", "Created")},
			wantErr:   ErrStreamClosed,
		},
		{
			name:      "malformed line",
			chunks:    []string{"{not json}\n"},
			hold:      true,
			wantQuery: "watch=true",
			wantMsg:   "decoding event stream",
		},
		{
			name:      "line too long",
			chunks:    []string{long},
			hold:      true,
			wantQuery: "watch=true",
			wantMsg:   "event line longer than",
		},
		{
			name:      "API error",
			status:    http.StatusUnauthorized,
			chunks:    []string{`{"error":{"code":"unauthorized","message":"bad token"}}`},
			wantQuery: "watch=true",
			wantMsg:   "bad token (unauthorized)",
		},
	}
	for _, h2 := range []bool{false, true} {
		proto := "HTTP/1.1"
		if h2 {
			proto = "HTTP/2"
		}
		for _, tc := range tests {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				queries := make(chan string, 1)
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					queries <- r.URL.RawQuery
					if r.Header.Get("Authorization") != "Bearer "+testToken {
						w.WriteHeader(http.StatusUnauthorized)
						return
					}
					if tc.status != 0 {
						w.WriteHeader(tc.status)
					}
					rc := http.NewResponseController(w)
					for _, c := range tc.chunks {
						_, _ = io.WriteString(w, c)
						_ = rc.Flush()
						time.Sleep(5 * time.Millisecond)
					}
					if tc.hold {
						<-r.Context().Done()
					}
				}))
				srv.EnableHTTP2 = h2
				srv.StartTLS()
				defer srv.Close()
				c, err := New(Config{Server: srv.URL, Token: testToken, CAPEM: certPEM(srv)})
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseIdleConnections()

				var got []api.Event
				err = c.WatchEvents(ctx, tc.limit, func(e api.Event) error {
					got = append(got, e)
					if len(got) == tc.stopAfter {
						switch tc.stopWith {
						case "cancel":
							cancel()
						case "fn":
							return errStop
						}
					}
					return nil
				})
				if q := <-queries; q != tc.wantQuery {
					t.Errorf("query = %q, want %q", q, tc.wantQuery)
				}
				switch {
				case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
					t.Errorf("WatchEvents error = %v, want %v", err, tc.wantErr)
				case tc.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantMsg)):
					t.Errorf("WatchEvents error = %v, want containing %q", err, tc.wantMsg)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("events = %+v, want %+v", got, tc.want)
				}
			})
		}
	}
}

func TestReadLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		max     int
		want    []string
		wantErr string
	}{
		{name: "lines", in: "a\nbb\n", max: 10, want: []string{"a\n", "bb\n"}, wantErr: "EOF"},
		{name: "last line cut", in: "a\nbb", max: 10, want: []string{"a\n", "bb"}, wantErr: "EOF"},
		{name: "exactly max", in: "abc\n", max: 4, want: []string{"abc\n"}, wantErr: "EOF"},
		{name: "too long", in: "abcd\n", max: 4, wantErr: "longer than 4 bytes"},
		{name: "longer than the buffer", in: strings.Repeat("x", 100) + "\n", max: 200, want: []string{strings.Repeat("x", 100) + "\n"}, wantErr: "EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newSmallReader(tc.in)
			var got []string
			for {
				l, err := readLine(r, tc.max)
				if len(l) > 0 {
					got = append(got, string(l))
				}
				if err != nil {
					if !strings.Contains(err.Error(), tc.wantErr) {
						t.Errorf("readLine(%q) error = %v, want containing %q", tc.in, err, tc.wantErr)
					}
					break
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("readLine(%q) lines = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// newSmallReader returns a bufio.Reader with the smallest buffer, so that
// long lines take several ReadSlice calls.
func newSmallReader(s string) *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(s), 16) }
