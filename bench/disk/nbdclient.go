package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// A minimal NBD client (fixed newstyle, NBD_OPT_GO, simple replies) for
// the crash test: it pipelines writes and reports each acknowledgement.
// Protocol constants from the NBD specification (doc/proto.md).
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic       = 0x49484156454F5054 // "IHAVEOPT"
	repMagic       = 0x3e889045565a9
	reqMagic       = 0x25609513
	simpleRepMagic = 0x67446698
	optGo          = 7
	repAck         = 1
	repInfo        = 3
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
)

type nbdClient struct {
	conn net.Conn
	w    *bufio.Writer
	wmu  sync.Mutex
	size uint64

	mu      sync.Mutex
	pending map[uint64]chan error
	next    uint64
	err     error
}

func dialNBD(sock string) (*nbdClient, error) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	c := &nbdClient{conn: conn, w: bufio.NewWriter(conn), pending: map[uint64]chan error{}}
	if err := c.handshake(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbd handshake: %w", err)
	}
	go c.readReplies()
	return c, nil
}

func (c *nbdClient) handshake() error {
	var hdr struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(c.conn, binary.BigEndian, &hdr); err != nil {
		return err
	}
	if hdr.Magic != nbdMagic || hdr.Opt != optMagic {
		return errors.New("not a newstyle NBD server")
	}
	// Fixed newstyle, no zeroes.
	if err := binary.Write(c.conn, binary.BigEndian, uint32(3)); err != nil {
		return err
	}
	// NBD_OPT_GO for the default export, no info requests.
	opt := []any{uint64(optMagic), uint32(optGo), uint32(6), uint32(0), uint16(0)}
	for _, v := range opt {
		if err := binary.Write(c.conn, binary.BigEndian, v); err != nil {
			return err
		}
	}
	for {
		var rep struct {
			Magic       uint64
			Opt, Typ, N uint32
		}
		if err := binary.Read(c.conn, binary.BigEndian, &rep); err != nil {
			return err
		}
		if rep.Magic != repMagic || rep.N > 1<<16 {
			return errors.New("bad option reply")
		}
		data := make([]byte, rep.N)
		if _, err := io.ReadFull(c.conn, data); err != nil {
			return err
		}
		switch {
		case rep.Typ&(1<<31) != 0:
			return fmt.Errorf("server refused NBD_OPT_GO: %#x %s", rep.Typ, data)
		case rep.Typ == repInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == 0:
			c.size = binary.BigEndian.Uint64(data[2:])
		case rep.Typ == repAck:
			return nil
		}
	}
}

func (c *nbdClient) readReplies() {
	for {
		var rep struct {
			Magic, Err uint32
			Handle     uint64
		}
		err := binary.Read(c.conn, binary.BigEndian, &rep)
		if err == nil && rep.Magic != simpleRepMagic {
			err = errors.New("bad reply magic")
		}
		c.mu.Lock()
		if err != nil {
			c.err = err
			for _, ch := range c.pending {
				ch <- err
			}
			c.pending = nil
			c.mu.Unlock()
			return
		}
		ch := c.pending[rep.Handle]
		delete(c.pending, rep.Handle)
		c.mu.Unlock()
		if ch != nil {
			if rep.Err != 0 {
				ch <- fmt.Errorf("nbd error %d", rep.Err)
			} else {
				ch <- nil
			}
		}
	}
}

// send issues a request; the returned channel gets its outcome.
func (c *nbdClient) send(cmd uint16, off uint64, data []byte, length uint32) <-chan error {
	ch := make(chan error, 1)
	c.mu.Lock()
	if c.pending == nil {
		c.mu.Unlock()
		ch <- c.err
		return ch
	}
	h := c.next
	c.next++
	c.pending[h] = ch
	c.mu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, v := range []any{uint32(reqMagic), uint16(0), cmd, h, off, length} {
		_ = binary.Write(c.w, binary.BigEndian, v)
	}
	c.w.Write(data)
	if err := c.w.Flush(); err != nil {
		// Answer it here only if the reader has not already failed it
		// (it empties pending when the connection dies): ch holds one.
		c.mu.Lock()
		_, mine := c.pending[h]
		delete(c.pending, h)
		c.mu.Unlock()
		if mine {
			ch <- err
		}
	}
	return ch
}

func (c *nbdClient) close() { c.conn.Close() }
