package testcluster

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestRelayDelaysAndKeepsOrder sends numbered bytes through a relay with
// jitter: they arrive in order, each no sooner than the delay less the
// jitter.
func TestRelayDelaysAndKeepsOrder(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	r, err := StartRelay("127.0.0.1:0", echo.Addr().String(), 100*time.Millisecond, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	for i := 0; i < 20; i++ {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // separate chunks, so jitter could reorder them
	}
	got := make([]byte, 20)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	for i, b := range got {
		if int(b) != i {
			t.Fatalf("byte %d is %d: order not kept (%v)", i, b, got)
		}
	}
	// Two legs (there and back), each at least delay - jitter.
	if took := time.Since(start); took < 160*time.Millisecond {
		t.Fatalf("round trip through the relay took %s, want at least 160ms", took)
	}
	if _, err := StartRelay("127.0.0.1:0", echo.Addr().String(), time.Millisecond, time.Second); err == nil {
		t.Fatal("a jitter above the delay was accepted")
	}
}
