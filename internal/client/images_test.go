package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrycluster/ferry/internal/api"
)

// patternReader yields n bytes of a fixed pattern without holding them,
// and counts how far it has been read.
type patternReader struct {
	n, off int64
	// gate, if not nil, blocks reads past gateAt until it is closed: the
	// server must have received data before the rest is produced.
	gate   <-chan struct{}
	gateAt int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	if r.gate != nil && r.off >= r.gateAt {
		select {
		case <-r.gate:
			r.gate = nil
		case <-time.After(10 * time.Second):
			return 0, errors.New("the server received nothing while the body was being read: the upload is not streamed")
		}
	}
	if rest := r.n - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	if r.gate != nil {
		if rest := r.gateAt - r.off; int64(len(p)) > rest {
			p = p[:rest]
		}
	}
	for i := 0; i < len(p); {
		i += copy(p[i:], pattern[(r.off+int64(i))%251:])
	}
	r.off += int64(len(p))
	return len(p), nil
}

// pattern holds the bytes 0..250 repeated; any 251-aligned window of it
// continues the sequence.
var pattern = func() []byte {
	b := make([]byte, 251*256)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

func patternSHA256(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, &patternReader{n: n})
	return hex.EncodeToString(h.Sum(nil))
}

// upload is what the test server saw of an upload.
type upload struct {
	method, path, contentType string
	contentLength             int64
	header                    string // the Content-Length header as sent
	received                  int64
	sha256                    string
}

func TestUploadImage(t *testing.T) {
	t.Parallel()
	const size = 4<<20 + 12345 // not a multiple of any buffer
	tests := []struct {
		name     string
		size     int64 // what the client claims
		reader   func(gate <-chan struct{}) io.Reader
		status   int    // the server's answer; 0 means it stores the data
		respBody string // sent with status
		// readFirst is how much the server reads before opening the gate.
		readFirst int64
		wantErr   string
		wantAuth  bool // the error is IsUnauthorized
		wantSent  bool // the server must have received the whole body
	}{
		{
			name:     "streams the whole file",
			size:     size,
			reader:   func(<-chan struct{}) io.Reader { return &patternReader{n: size} },
			wantSent: true,
		},
		{
			name: "server receives data before the reader is drained",
			size: size,
			reader: func(gate <-chan struct{}) io.Reader {
				return &patternReader{n: size, gate: gate, gateAt: 1 << 20}
			},
			readFirst: 64 << 10,
			wantSent:  true,
		},
		{
			name: "bytes past size are not sent",
			size: 1000,
			reader: func(<-chan struct{}) io.Reader {
				return io.MultiReader(&patternReader{n: 1000}, strings.NewReader("trailing junk"))
			},
			wantSent: true,
		},
		{
			name:    "file shorter than size",
			size:    4096,
			reader:  func(<-chan struct{}) io.Reader { return &patternReader{n: 1000} },
			wantErr: "image data ended after 1000 of 4096 bytes",
		},
		{
			name:     "server refuses the image",
			size:     size,
			reader:   func(<-chan struct{}) io.Reader { return &patternReader{n: size} },
			status:   http.StatusBadRequest,
			respBody: `{"error":{"code":"invalid","message":"not an ext4 disk: no /boot/vmlinuz"}}`,
			wantErr:  "not an ext4 disk: no /boot/vmlinuz (invalid)",
		},
		{
			name:     "bad token",
			size:     size,
			reader:   func(<-chan struct{}) io.Reader { return &patternReader{n: size} },
			status:   http.StatusUnauthorized,
			respBody: `{"error":{"code":"unauthorized","message":"bad token"}}`,
			wantErr:  "bad token",
			wantAuth: true,
		},
		{
			name:    "size zero",
			size:    0,
			reader:  func(<-chan struct{}) io.Reader { return strings.NewReader("") },
			wantErr: "size must be positive",
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
				gate := make(chan struct{})
				seen := make(chan upload, 1)
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					u := upload{
						method: r.Method, path: r.URL.EscapedPath(), contentType: r.Header.Get("Content-Type"),
						contentLength: r.ContentLength, header: r.Header.Get("Content-Length"),
					}
					if h2 {
						u.header = strconv.FormatInt(r.ContentLength, 10) // HTTP/2 has no such header, only the frame length
					}
					if tc.status != 0 {
						seen <- u
						w.Header().Set("Content-Type", "application/json")
						w.WriteHeader(tc.status)
						_, _ = io.WriteString(w, tc.respBody)
						return
					}
					h := sha256.New()
					n, err := io.CopyN(h, r.Body, tc.readFirst)
					if err == nil {
						close(gate)
						var m int64
						m, err = io.Copy(h, r.Body)
						n += m
					}
					u.received, u.sha256 = n, hex.EncodeToString(h.Sum(nil))
					seen <- u
					if err != nil {
						return
					}
					writeJSON(w, http.StatusOK, api.Image{Meta: api.Meta{Name: "demo"}, Source: "upload", Size: api.Bytes(n), SHA256: u.sha256, Ready: true})
				}))
				srv.EnableHTTP2 = h2
				srv.StartTLS()
				defer srv.Close()
				c, err := New(Config{Server: srv.URL, Token: testToken, CAPEM: certPEM(srv)})
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseIdleConnections()

				var (
					mu    sync.Mutex
					calls []int64
				)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				im, err := c.UploadImage(ctx, "demo", tc.reader(gate), tc.size, func(sent int64) {
					mu.Lock()
					calls = append(calls, sent)
					mu.Unlock()
				})
				mu.Lock()
				progress := append([]int64(nil), calls...)
				mu.Unlock()

				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("UploadImage error = %v, want containing %q", err, tc.wantErr)
					}
					if got := IsUnauthorized(err); got != tc.wantAuth {
						t.Errorf("IsUnauthorized(%v) = %v, want %v", err, got, tc.wantAuth)
					}
					return
				}
				if err != nil {
					t.Fatalf("UploadImage: %v", err)
				}
				u := <-seen
				want := upload{
					method: "PUT", path: "/v1/images/demo", contentType: "application/octet-stream",
					contentLength: tc.size, header: strconv.FormatInt(tc.size, 10),
					received: tc.size, sha256: patternSHA256(tc.size),
				}
				if u != want {
					t.Errorf("server saw %+v, want %+v", u, want)
				}
				if !im.Ready || int64(im.Size) != tc.size || im.SHA256 != want.sha256 {
					t.Errorf("UploadImage = %+v, want ready, size %d, sha256 %s", im, tc.size, want.sha256)
				}
				checkProgress(t, progress, tc.size)
				if tc.size > 1<<20 && len(progress) < 8 {
					t.Errorf("progress called %d times for %d bytes, want it called as the body goes out", len(progress), tc.size)
				}
			})
		}
	}
}

// checkProgress checks that progress grew strictly and ended at size.
func checkProgress(t *testing.T, calls []int64, size int64) {
	t.Helper()
	if len(calls) == 0 {
		t.Fatal("progress was never called")
	}
	for i := 1; i < len(calls); i++ {
		if calls[i] <= calls[i-1] {
			t.Fatalf("progress went from %d to %d (call %d)", calls[i-1], calls[i], i)
		}
	}
	if last := calls[len(calls)-1]; last != size {
		t.Errorf("last progress = %d, want %d", last, size)
	}
}

// TestUploadBodyStop checks that progress is not reported once the upload
// has returned, even if the transport goes on reading.
func TestUploadBodyStop(t *testing.T) {
	t.Parallel()
	var calls []int64
	b := &uploadBody{r: &patternReader{n: 100}, size: 100, progress: func(n int64) { calls = append(calls, n) }}
	buf := make([]byte, 40)
	if _, err := b.Read(buf); err != nil {
		t.Fatal(err)
	}
	b.stop()
	for {
		if _, err := b.Read(buf); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("Read after stop: %v", err)
			}
			break
		}
	}
	if fmt.Sprint(calls) != "[40]" {
		t.Errorf("progress calls = %v, want [40]", calls)
	}
	if b.sent != 100 {
		t.Errorf("sent = %d, want 100", b.sent)
	}
}
