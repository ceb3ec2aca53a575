package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/ferrycluster/ferry/internal/api"
)

// UploadImage stores size bytes read from r as the data of image name,
// creating the image or replacing its data, and returns the image record
// (Ready, Size, SHA256) once the server has stored and checked it. The
// server refuses (400) a file that is not an ext4 disk with /boot/vmlinuz
// and /boot/initrd.img.
//
// The data is streamed: r is read in small pieces as the request is sent,
// never as a whole. size must be r's exact length; if r ends early the
// upload fails, and bytes past size are not sent. UploadImage does not
// close r.
//
// progress, if not nil, is called with the number of bytes handed to the
// connection so far, each time it grows. It is called from another
// goroutine, but never concurrently with itself and never after
// UploadImage returns.
//
// Cancelling ctx aborts the upload; an upload of many gigabytes takes a
// while, so ctx should not carry a short deadline.
func (c *Client) UploadImage(ctx context.Context, name string, r io.Reader, size int64, progress func(sent int64)) (*api.Image, error) {
	p, err := objectPath("image", "/v1/images", name)
	if err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("client: upload of image %q: size must be positive, got %d", name, size)
	}
	body := &uploadBody{r: r, size: size, progress: progress}
	defer body.stop()
	req, err := c.newRequest(ctx, http.MethodPut, p, nil, body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	// Let the server refuse (bad token, bad name) before gigabytes go out.
	req.Header.Set("Expect", "100-continue")
	resp, err := roundTrip(c.hc, req)
	if err != nil {
		return nil, err
	}
	if resp, err = check(resp); err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var im api.Image
	if err := decode(resp, http.MethodPut, p, &im); err != nil {
		return nil, err
	}
	return &im, nil
}

// uploadBody is the body of an upload: exactly size bytes of r, counted
// as the transport reads them.
type uploadBody struct {
	r    io.Reader
	size int64
	sent int64 // read only by Read, which the transport never calls concurrently

	mu       sync.Mutex
	progress func(int64) // nil once stopped
}

func (b *uploadBody) Read(p []byte) (int, error) {
	rest := b.size - b.sent
	if rest <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.r.Read(p)
	b.sent += int64(n)
	if errors.Is(err, io.EOF) && b.sent < b.size {
		err = fmt.Errorf("image data ended after %d of %d bytes: %w", b.sent, b.size, io.ErrUnexpectedEOF)
	}
	if n > 0 {
		b.mu.Lock()
		if b.progress != nil {
			b.progress(b.sent)
		}
		b.mu.Unlock()
	}
	return n, err
}

// stop ends progress reports: the transport may still read the body after
// the response is in.
func (b *uploadBody) stop() {
	b.mu.Lock()
	b.progress = nil
	b.mu.Unlock()
}

// DeleteImage removes an image and its data. An image that an instance
// still uses is kept, with an error for which [IsConflict] is true.
func (c *Client) DeleteImage(ctx context.Context, name string) error {
	p, err := objectPath("image", "/v1/images", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodDelete, p, nil, nil, nil)
	return err
}
