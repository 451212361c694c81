package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// loopbackTCP measures TCP throughput over 127.0.0.1 with streams concurrent connections for
// about d: bytes received per second, all streams together.
func loopbackTCP(ctx context.Context, streams int, d time.Duration) (float64, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: loopback: %w", err)
	}
	var received atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()  // last: every goroutine has returned
	defer ln.Close() // before it: unblocks Accept
	errs := make(chan error, 2*streams)
	wg.Add(1)
	go func() { // receivers: one per accepted connection
		defer wg.Done()
		for i := 0; i < streams; i++ {
			c, err := ln.Accept()
			if err != nil {
				errs <- err
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 1<<20)
				for {
					n, err := c.Read(buf)
					received.Add(int64(n))
					if err != nil {
						if !errors.Is(err, io.EOF) {
							errs <- err
						}
						return
					}
				}
			}()
		}
	}()
	var dialer net.Dialer
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < streams; i++ {
		c, err := dialer.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return 0, fmt.Errorf("bench: loopback: %w", err)
		}
		conns = append(conns, c)
	}
	time.Sleep(50 * time.Millisecond) // let the receivers start
	start := time.Now()
	deadline := start.Add(d)
	base := received.Load()
	var senders sync.WaitGroup
	for _, c := range conns {
		senders.Add(1)
		go func() {
			defer senders.Done()
			buf := make([]byte, 1<<20)
			c.SetWriteDeadline(deadline)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					return // the deadline
				}
			}
		}()
	}
	senders.Wait()
	elapsed := time.Since(start)
	got := received.Load() - base
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	if ctx.Err() != nil {
		return 0, fmt.Errorf("bench: loopback: %w", ctx.Err())
	}
	select {
	case err := <-errs:
		return 0, fmt.Errorf("bench: loopback: %w", err)
	default:
	}
	return float64(got) / elapsed.Seconds(), nil
}

// memcpyBandwidth measures one goroutine copying a buffer of size bytes (Go's copy, i.e.
// memmove; make it much larger than the caches) for about d: bytes copied per second.
func memcpyBandwidth(ctx context.Context, d time.Duration, size int) (float64, error) {
	src, dst := make([]byte, size), make([]byte, size)
	for i := range src { // touch both, so page faults are not measured
		src[i] = byte(i)
	}
	copy(dst, src)
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("bench: memcpy: %w", err)
		}
		copy(dst, src)
		n += int64(size)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// measureCeilings runs the three ceilings, ~2 s each for TCP and ~1 s for memory.
func measureCeilings(ctx context.Context, streams int) (Ceilings, error) {
	c := Ceilings{Streams: streams}
	var err error
	if c.TCP1, err = loopbackTCP(ctx, 1, 2*time.Second); err != nil {
		return c, err
	}
	if c.TCPN, err = loopbackTCP(ctx, streams, 2*time.Second); err != nil {
		return c, err
	}
	if c.Memcpy, err = memcpyBandwidth(ctx, time.Second, 256<<20); err != nil {
		return c, err
	}
	return c, nil
}
