package hooks

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// startServer runs a Server on a fresh socket until the test ends, and waits for it.
func startServer(t *testing.T, h Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "hook.sock")
	ln, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Handler: h}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve returned %v; want context.Canceled", err)
		}
	})
	return sock
}

// rawAgent listens on a fresh socket and hands each connection to f (a misbehaving agent);
// testDone closes when the test ends, before rawAgent waits for its goroutines.
func rawAgent(t *testing.T, f func(c net.Conn, testDone <-chan struct{})) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	testDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); f(c, testDone) }()
		}
	}()
	t.Cleanup(func() { close(testDone); ln.Close(); wg.Wait() })
	return sock
}

func TestClientServer(t *testing.T) {
	var got Request
	var mu sync.Mutex
	sock := startServer(t, func(ctx context.Context, req Request) Response {
		mu.Lock()
		got = req
		mu.Unlock()
		if req.Domain == "ok" {
			return Response{Allow: true}
		}
		return Response{Allow: false, Reason: "not negotiated"}
	})
	c := &Client{Socket: sock, Timeout: 10 * time.Second} // protocol, not timing: TestClientAgentDown covers the timeout
	xml := strings.Repeat("<x/>", 100000)                 // 400 KB: more than a socket buffer
	resp, err := c.Ask(context.Background(), Request{Op: ReqMigrateBegin, Domain: "ok", UUID: "u", XML: xml})
	if err != nil || !resp.Allow {
		t.Fatalf("Ask = %+v, %v", resp, err)
	}
	mu.Lock()
	if got.Version != ProtocolVersion || got.XML != xml || got.UUID != "u" {
		t.Errorf("the agent got %+v (xml %d bytes)", got.Version, len(got.XML))
	}
	mu.Unlock()
	resp, err = c.Ask(context.Background(), Request{Op: ReqMigrateBegin, Domain: "other"})
	if err != nil || resp != (Response{Reason: "not negotiated"}) {
		t.Fatalf("Ask = %+v, %v", resp, err)
	}
}

// TestServerVersionAndGarbage: a newer hook is refused for migrate-begin (never waved through
// unread); a request that does not decode is answered with a refusal naming why.
func TestServerVersionAndGarbage(t *testing.T) {
	sock := startServer(t, func(ctx context.Context, req Request) Response { return Response{Allow: true} })
	c := &Client{Socket: sock}
	resp, err := c.Ask(context.Background(), Request{Version: ProtocolVersion + 1, Op: ReqMigrateBegin, Domain: "g"})
	if err != nil || resp.Allow || !strings.Contains(resp.Reason, "update the agent") {
		t.Errorf("newer version: %+v, %v", resp, err)
	}
	resp, err = c.Ask(context.Background(), Request{Version: ProtocolVersion + 1, Op: ReqRelease, Domain: "g"})
	if err != nil || !resp.Allow {
		t.Errorf("newer version, release: %+v, %v", resp, err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte(`{"op":`))
	conn.(*net.UnixConn).CloseWrite()
	buf := make([]byte, 4096)
	n, _ := conn.Read(buf)
	r, err := DecodeResponse(buf[:n])
	if err != nil || r.Allow || !strings.Contains(r.Reason, "bad request") {
		t.Errorf("garbage request answered %q", buf[:n])
	}
}

// TestClientAgentDown: every way the agent can fail is ErrAgentUnavailable, and none takes
// longer than the timeout.
func TestClientAgentDown(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody listens: ECONNREFUSED

	hung := rawAgent(t, func(c net.Conn, testDone <-chan struct{}) { <-testDone })
	silent := rawAgent(t, func(c net.Conn, _ <-chan struct{}) {})
	garbage := rawAgent(t, func(c net.Conn, _ <-chan struct{}) { io.ReadAll(c); c.Write([]byte("HTTP/1.1 400 Bad Request\r\n")) })
	huge := rawAgent(t, func(c net.Conn, _ <-chan struct{}) {
		io.ReadAll(c)
		c.Write([]byte(`{"allow":true,"reason":"` + strings.Repeat("x", MaxResponseSize) + `"}`))
	})
	// The failures that need no waiting must not wait for the timeout: with a 5 s timeout
	// they must end well before it (bounds generous enough for a loaded machine).
	const long, short = 5 * time.Second, 300 * time.Millisecond
	for _, tc := range []struct {
		name, sock, step string
		timeout, max     time.Duration
	}{
		{"no socket", filepath.Join(dir, "none.sock"), "connect", long, 2 * time.Second},
		{"stale socket", stale, "connect", long, 2 * time.Second},
		{"not a socket", "/etc/hostname", "connect", long, 2 * time.Second},
		{"hung agent", hung, "receive", short, short + 2*time.Second},
		// The agent may close before the request is written: either step is "no answer".
		{"closes without answer", silent, "send|receive", long, 2 * time.Second},
		{"answers garbage", garbage, "decode", long, 2 * time.Second},
		{"answers too much", huge, "decode", long, 2 * time.Second},
	} {
		start := time.Now()
		resp, err := (&Client{Socket: tc.sock, Timeout: tc.timeout}).Ask(context.Background(), Request{Op: ReqMigrateBegin, Domain: "g"})
		took := time.Since(start)
		var ae *AgentError
		if !errors.Is(err, ErrAgentUnavailable) || !errors.As(err, &ae) || !slices.Contains(strings.Split(tc.step, "|"), ae.Step) {
			t.Errorf("%s: Ask = %+v, %v; want ErrAgentUnavailable at step %s", tc.name, resp, err, tc.step)
		}
		if took > tc.max {
			t.Errorf("%s: Ask took %v; want at most %v", tc.name, took, tc.max)
		}
		if tc.sock == hung && (!errors.Is(err, context.DeadlineExceeded) || !strings.HasSuffix(err.Error(), "(receive: no answer within 300ms)")) {
			t.Errorf("%s: %v; want a timeout that says so", tc.name, err)
		}
	}
	// A cancelled context ends a wait on a hung agent at once.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err = (&Client{Socket: hung, Timeout: 5 * time.Second}).Ask(ctx, Request{Op: ReqMigrateBegin, Domain: "g"})
	if !errors.Is(err, ErrAgentUnavailable) || !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Errorf("cancelled Ask = %v after %v", err, time.Since(start))
	}
}

func TestListenUnix(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "mig2")
	sock := filepath.Join(dir, "hook.sock")
	ln, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := ListenUnix(sock); err == nil || !strings.Contains(err.Error(), "another agent is answering") {
		t.Errorf("second ListenUnix on a live socket = %v", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = ListenUnix(sock) // stale: replaced
	if err != nil {
		t.Fatalf("ListenUnix over a stale socket: %v", err)
	}
	ln.Close()
}

// TestServeStopsAndWaits: cancelling Serve closes the listener and waits for a connection in
// flight, whose handler sees its context end.
func TestServeStopsAndWaits(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	var handlerDone bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Server{Handler: func(ctx context.Context, req Request) Response {
			close(entered)
			<-ctx.Done()
			handlerDone = true
			return Response{}
		}}).Serve(ctx, ln)
	}()
	askDone := make(chan struct{})
	go func() {
		defer close(askDone)
		(&Client{Socket: sock, Timeout: 5 * time.Second}).Ask(context.Background(), Request{Op: ReqRelease, Domain: "g"})
	}()
	<-entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v", err)
	}
	if !handlerDone {
		t.Fatal("Serve returned before its connection finished")
	}
	<-askDone
	if _, err := net.Dial("unix", sock); err == nil {
		t.Fatal("the socket still accepts after Serve returned")
	}
}
