package v2proto

import (
	"context"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"
)

// stall opens a TCP connection that never sends anything.
func stall(t *testing.T, addr string, local string) net.Conn {
	t.Helper()
	d := net.Dialer{}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// acceptLoop runs Accept until the listener closes and counts what it got.
func acceptLoop(ctx context.Context, l *Listener) <-chan []error {
	out := make(chan []error, 1)
	go func() {
		var errs []error
		for {
			c, err := l.Accept(ctx)
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				out <- errs
				return
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if d, err := c.Destination(); err == nil {
				d.Close()
			}
		}
	}()
	return out
}

// TestHandshakeCap: connections over MaxConcurrentHandshakes are refused at once with "busy"
// (over TLS too, without a TLS handshake); once the stalled ones hit their deadline, an honest
// client gets in.
func TestHandshakeCap(t *testing.T) {
	creds, _ := testCreds(t)
	for _, tlsOn := range []bool{false, true} {
		var cr *TLSCredentials
		if tlsOn {
			cr = creds
		}
		cfg := testConfig(cr)
		cfg.MaxConcurrentHandshakes = 2
		cfg.MaxHandshakesPerHost = 0
		cfg.HandshakeTimeout = 700 * time.Millisecond
		l, err := Listen("127.0.0.1:0", cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := testCtx(t)
		errs := acceptLoop(ctx, l)
		addr := l.Addr().String()
		stall(t, addr, "")
		stall(t, addr, "")
		time.Sleep(50 * time.Millisecond) // let the listener admit them

		start := time.Now()
		c, err := DialConn(ctx, addr, RoleSource, testConfig(cr))
		if c != nil {
			c.Close()
		}
		if !IsBusy(err) {
			t.Fatalf("tls=%v: third connection: want busy, got %v", tlsOn, err)
		}
		if el := time.Since(start); el > 300*time.Millisecond {
			t.Errorf("tls=%v: busy refusal took %v", tlsOn, el)
		}

		time.Sleep(cfg.HandshakeTimeout + 200*time.Millisecond) // the stalled ones expire
		c, err = DialConn(ctx, addr, RoleSource, testConfig(cr))
		if err != nil {
			t.Fatalf("tls=%v: honest client after the stalls expired: %v", tlsOn, err)
		}
		c.Close()
		l.Close()
		got := <-errs
		var busy, timeouts int
		for _, e := range got {
			switch {
			case IsBusy(e):
				busy++
			case IsTimeout(e) || errors.Is(e, ErrNotMig2):
				timeouts++
			}
		}
		if busy != 1 || timeouts != 2 {
			t.Errorf("tls=%v: listener reported %d busy, %d stalled: %v", tlsOn, busy, timeouts, got)
		}
	}
}

// TestPerHostCap: one host cannot take every slot; another host still gets in at once.
func TestPerHostCap(t *testing.T) {
	cfg := testConfig(nil)
	cfg.MaxConcurrentHandshakes = 8
	cfg.MaxHandshakesPerHost = 2
	l, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := testCtx(t)
	acceptLoop(ctx, l)
	addr := l.Addr().String()
	stall(t, addr, "127.0.0.1")
	stall(t, addr, "127.0.0.1")
	time.Sleep(50 * time.Millisecond)
	if c, err := DialConn(ctx, addr, RoleSource, cfg); !IsBusy(err) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("third connection from 127.0.0.1: want busy, got %v", err)
	}
	nc, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2 here: %v", err)
	}
	c, err := Client(ctx, nc, RoleSource, "", cfg)
	if err != nil {
		t.Fatalf("another host was starved: %v", err)
	}
	c.Close()
}

// TestListenerClose: Close aborts handshakes in progress, returns ErrClosed from Accept, and
// leaves no goroutine behind.
func TestListenerClose(t *testing.T) {
	before := runtime.NumGoroutine()
	cfg := testConfig(nil)
	l, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	stall(t, l.Addr().String(), "")
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() { _, err := l.Accept(context.Background()); done <- err }()
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %v", el)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := l.Accept(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines before, %d after Close", before, n)
	}
}

// TestAcceptDestination skips failed handshakes and returns the first source's session.
func TestAcceptDestination(t *testing.T) {
	cfg := testConfig(nil)
	cfg.HandshakeTimeout = 300 * time.Millisecond
	l, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := testCtx(t)
	stall(t, l.Addr().String(), "")
	var reported []error
	type res struct {
		d   *Destination
		err error
	}
	ch := make(chan res, 1)
	go func() {
		d, err := l.AcceptDestination(ctx, func(err error) { reported = append(reported, err) })
		ch <- res{d, err}
	}()
	time.Sleep(400 * time.Millisecond)
	src, err := Dial(ctx, l.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.d.Close()
	if len(reported) != 1 {
		t.Errorf("reported %v", reported)
	}
}
