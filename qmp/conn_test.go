package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	goqemu "github.com/digitalocean/go-qemu/qmp"
)

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestGreetingAndCapabilities(t *testing.T) {
	c, f := startFake(t, nil)
	g := c.Greeting()
	if g.Version.String() != "7.2.0" || g.Version.Package != "fake" || !g.HasCapability("oob") {
		t.Fatalf("greeting = %+v", g)
	}
	req := <-f.caps
	if len(req.Arguments) != 0 {
		t.Fatalf("qmp_capabilities without WithOOB sent arguments %s", req.Arguments)
	}
	if c.OOB() {
		t.Fatal("OOB enabled without WithOOB")
	}
	if err := c.ExecuteOOB(ctxTimeout(t, time.Second), "query-status", nil, nil); !errors.Is(err, ErrOOBDisabled) {
		t.Fatalf("ExecuteOOB without OOB = %v, want ErrOOBDisabled", err)
	}
}

func TestOOB(t *testing.T) {
	got := make(chan fakeRequest, 1)
	c, f := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		got <- req
		f.reply(req, struct{}{})
	}, WithOOB())
	req := <-f.caps
	if string(req.Arguments) != `{"enable":["oob"]}` {
		t.Fatalf("qmp_capabilities arguments = %s, want enable oob", req.Arguments)
	}
	if !c.OOB() {
		t.Fatal("OOB not enabled")
	}
	if err := c.ExecuteOOB(ctxTimeout(t, 2*time.Second), "migrate-pause", nil, nil); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.ExecOOB != "migrate-pause" || r.Execute != "" || len(r.ID) == 0 {
		t.Fatalf("sent %+v, want exec-oob with an id", r)
	}
}

func TestExecuteResult(t *testing.T) {
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		if req.Execute != "query-status" || len(req.ID) == 0 {
			f.replyError(req, ClassGenericError, "unexpected")
			return
		}
		f.reply(req, map[string]any{"status": "running", "running": true, "singlestep": false, "new-in-qemu-42": 1})
	})
	st, err := QueryStatus(ctxTimeout(t, 2*time.Second), c)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != RunStateRunning || !st.Running {
		t.Fatalf("status = %+v", st)
	}
	if string(st.Extra["new-in-qemu-42"]) != "1" || string(st.Extra["singlestep"]) != "false" {
		t.Fatalf("unknown members not kept: %v", st.Extra)
	}
}

// Every QMP error class is kept (go-qemu keeps only desc), an empty desc is
// still an error, and errors.Is works with the class sentinels.
func TestErrorClasses(t *testing.T) {
	classes := []struct {
		class    string
		sentinel error
	}{
		{ClassGenericError, ErrGenericError},
		{ClassCommandNotFound, ErrCommandNotFound},
		{ClassDeviceNotActive, ErrDeviceNotActive},
		{ClassDeviceNotFound, ErrDeviceNotFound},
		{ClassKVMMissingCap, ErrKVMMissingCap},
	}
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		var a struct{ Class, Desc string }
		json.Unmarshal(req.Arguments, &a)
		f.replyError(req, a.Class, a.Desc)
	})
	for _, tc := range classes {
		for _, desc := range []string{"something failed", ""} {
			err := c.Execute(ctxTimeout(t, 2*time.Second), "fail-"+tc.class, map[string]string{"class": tc.class, "desc": desc}, nil)
			var qe *Error
			if !errors.As(err, &qe) {
				t.Fatalf("%s %q: err = %v, want *Error", tc.class, desc, err)
			}
			if qe.Class != tc.class || qe.Desc != desc || qe.Command != "fail-"+tc.class {
				t.Fatalf("error = %+v", qe)
			}
			if !errors.Is(err, tc.sentinel) || ErrorClass(err) != tc.class {
				t.Fatalf("errors.Is(%v, %v) false", err, tc.sentinel)
			}
			for _, other := range classes {
				if other.class != tc.class && errors.Is(err, other.sentinel) {
					t.Fatalf("%v matches %v", err, other.sentinel)
				}
			}
			if !strings.HasPrefix(err.Error(), "qmp: fail-"+tc.class+": "+tc.class) {
				t.Fatalf("message = %q", err)
			}
		}
	}
	if !IsCommandNotFound(&Error{Class: ClassCommandNotFound, Desc: "x"}) {
		t.Fatal("IsCommandNotFound")
	}
}

// A 2 MiB reply arrives whole (go-qemu's scanner dies above 64 KiB), and the
// connection keeps working afterwards.
func TestLargeReply(t *testing.T) {
	big := strings.Repeat("x", 2<<20)
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		switch req.Execute {
		case "big":
			f.reply(req, map[string]string{"blob": big})
		default:
			f.reply(req, map[string]int{"n": 1})
		}
	})
	ctx := ctxTimeout(t, 10*time.Second)
	var r struct{ Blob string }
	if err := c.Execute(ctx, "big", nil, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Blob) != len(big) {
		t.Fatalf("got %d bytes, want %d", len(r.Blob), len(big))
	}
	var n struct{ N int }
	if err := c.Execute(ctx, "small", nil, &n); err != nil || n.N != 1 {
		t.Fatalf("after a big reply: %v %+v", err, n)
	}
}

// A QEMU that reads commands but never answers: Execute returns within its
// deadline with an error wrapping context.DeadlineExceeded, and the Conn
// stays usable (the late reply is discarded).
func TestNoReplyDeadline(t *testing.T) {
	var mu sync.Mutex
	var held []fakeRequest
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		if req.Execute == "hang" {
			mu.Lock()
			held = append(held, req)
			mu.Unlock()
			return
		}
		mu.Lock()
		for _, h := range held { // late replies first
			f.reply(h, map[string]string{"late": "yes"})
		}
		held = nil
		mu.Unlock()
		f.reply(req, map[string]string{"late": "no"})
	})
	const deadline = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err := c.Execute(ctx, "hang", nil, nil)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if took > deadline+150*time.Millisecond {
		t.Fatalf("returned after %v, deadline %v", took, deadline)
	}
	if !strings.Contains(err.Error(), "hang") {
		t.Fatalf("error does not name the command: %v", err)
	}
	var r struct{ Late string }
	if err := c.Execute(ctxTimeout(t, 2*time.Second), "next", nil, &r); err != nil || r.Late != "no" {
		t.Fatalf("next command: %v %+v (a late reply was taken for it?)", err, r)
	}

	// Cancellation works the same way.
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel2)
	if err := c.Execute(ctx2, "hang", nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
}

// A QEMU that stops reading commands (its main loop is stuck): the write
// itself honours the deadline.
func TestPeerNotReading(t *testing.T) {
	cli, srv := net.Pipe()
	f := newFakeQEMU(t, srv, nil)
	stuck := make(chan struct{})
	f.handler = func(f *fakeQEMU, req fakeRequest) { <-stuck } // stops reading
	f.start()
	t.Cleanup(func() { close(stuck) })
	c, err := NewConn(ctxTimeout(t, 2*time.Second), cli)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The first command is read (and never answered); the second cannot even
	// be written on a synchronous pipe.
	go c.Execute(ctxTimeout(t, 300*time.Millisecond), "first", nil, nil)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	err = c.Execute(ctxTimeout(t, 200*time.Millisecond), "second", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 400*time.Millisecond {
		t.Fatalf("took %v", took)
	}
}

// Replies are matched by id: answers in reverse order reach the right
// callers.
func TestRepliesMatchedByID(t *testing.T) {
	const n = 8
	var mu sync.Mutex
	var reqs []fakeRequest
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		mu.Lock()
		reqs = append(reqs, req)
		if len(reqs) < n {
			mu.Unlock()
			return
		}
		all := reqs
		mu.Unlock()
		for i := len(all) - 1; i >= 0; i-- {
			var a struct{ I int }
			json.Unmarshal(all[i].Arguments, &a)
			f.reply(all[i], map[string]int{"i": a.I})
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r struct{ I int }
			if err := c.Execute(ctxTimeout(t, 5*time.Second), "echo", map[string]int{"i": i}, &r); err != nil {
				errs <- err
				return
			}
			if r.I != i {
				errs <- errors.New("reply for another command")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A subscription nobody drains never blocks commands: its buffer fills,
// later events are dropped and counted.
func TestUndrainedSubscriptionDoesNotBlock(t *testing.T) {
	const events = 200
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		for i := 0; i < events; i++ {
			f.event(EventMigrationPass, map[string]int{"pass": i})
		}
		f.reply(req, struct{}{})
	})
	sub := c.Subscribe(4)
	defer sub.Close()
	// Also a go-qemu style channel that nobody reads.
	if _, err := c.Events(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := c.Execute(ctxTimeout(t, 2*time.Second), "noisy", nil, nil); err != nil {
			t.Fatalf("command %d blocked by an undrained subscription: %v", i, err)
		}
	}
	if got := sub.Dropped(); got != 3*events-4 {
		t.Fatalf("dropped = %d, want %d", got, 3*events-4)
	}
	if got := len(sub.Events()); got != 4 {
		t.Fatalf("buffered = %d, want 4", got)
	}
	e := <-sub.Events()
	if p, err := DecodeMigrationPassEvent(e); err != nil || p.Pass != 0 {
		t.Fatalf("first event = %+v %v", p, err)
	}
}

// Events interleaved with replies reach every subscriber in order, with data
// and timestamps, and the replies still reach their commands.
func TestEventsInterleaved(t *testing.T) {
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		switch req.Execute {
		case "stop":
			f.event(EventStop, nil)
			f.reply(req, struct{}{})
		case "cont":
			f.reply(req, struct{}{})
			f.event(EventResume, nil)
		case "migrate":
			f.event(EventMigration, map[string]string{"status": "setup"})
			f.reply(req, struct{}{})
			f.event(EventMigration, map[string]string{"status": "active"})
			f.event(EventMigrationPass, map[string]int{"pass": 1})
			f.event(EventMigration, map[string]string{"status": "completed"})
		}
	})
	a, b := c.Subscribe(16), c.Subscribe(16)
	ctx := ctxTimeout(t, 5*time.Second)
	for _, cmd := range []string{"stop", "cont"} {
		if err := c.Execute(ctx, cmd, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := Migrate(ctx, c, "unix:/x"); err != nil {
		t.Fatal(err)
	}
	want := []string{"STOP", "RESUME", "MIGRATION setup", "MIGRATION active", "MIGRATION_PASS", "MIGRATION completed"}
	for _, sub := range []*Subscription{a, b} {
		for i, w := range want {
			var e Event
			select {
			case e = <-sub.Events():
			case <-ctx.Done():
				t.Fatalf("event %d (%s) never came", i, w)
			}
			got := e.Name
			if e.Name == EventMigration {
				m, err := DecodeMigrationEvent(e)
				if err != nil {
					t.Fatal(err)
				}
				got += " " + string(m.Status)
			}
			if got != w {
				t.Fatalf("event %d = %s, want %s", i, got, w)
			}
			if !e.Timestamp.Equal(time.Unix(1700000000, 123456000)) {
				t.Fatalf("timestamp = %v", e.Timestamp)
			}
		}
		if sub.Dropped() != 0 {
			t.Fatalf("dropped %d", sub.Dropped())
		}
	}
	a.Close()
	a.Close() // idempotent
	if _, ok := <-a.Events(); ok {
		t.Fatal("closed subscription still delivers")
	}
}

// go-qemu's Events: events sent before the first call are kept (go-qemu's
// SocketMonitor drops them), and the channel closes with ctx.
func TestGoQEMUEventsBacklog(t *testing.T) {
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		f.event(EventShutdown, map[string]any{"guest": true, "reason": "guest-shutdown"})
		f.reply(req, struct{}{})
	})
	var mon goqemu.Monitor = c
	if err := c.Execute(ctxTimeout(t, 2*time.Second), "quit", nil, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := mon.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-ch:
		if e.Event != EventShutdown || e.Data["reason"] != "guest-shutdown" || e.Timestamp.Seconds != 1700000000 || e.Timestamp.Microseconds != 123456 {
			t.Fatalf("event = %+v", e)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("event sent before Events() was lost")
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("unexpected event")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("channel not closed when ctx ended")
	}
}

func TestGoQEMURun(t *testing.T) {
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		switch req.Execute {
		case "query-version":
			f.reply(req, map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 0}, "package": ""})
		default:
			f.replyError(req, ClassCommandNotFound, "The command "+req.Execute+" has not been found")
		}
	})
	var mon goqemu.Monitor = c
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	out, err := mon.Run([]byte(`{"execute":"query-version","id":"mine"}`))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Return VersionInfo `json:"return"`
		ID     string      `json:"id"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.ID != "mine" || r.Return.String() != "7.2.0" {
		t.Fatalf("Run = %s (%v)", out, err)
	}
	_, err = mon.Run([]byte(`{"execute":"nope"}`))
	if !errors.Is(err, ErrCommandNotFound) {
		t.Fatalf("Run error = %v, want CommandNotFound", err)
	}
	if _, err := mon.Run([]byte(`not json`)); err == nil {
		t.Fatal("Run accepted garbage")
	}
	if err := mon.Disconnect(); err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Connect after Disconnect = %v", err)
	}
}

// QEMU going away: pending and later commands fail with ErrClosed and the
// cause, subscriptions close.
func TestPeerCloses(t *testing.T) {
	c, f := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		f.nc.Close() // QEMU dies while the command is pending
	})
	sub := c.Subscribe(1)
	err := c.Execute(ctxTimeout(t, 2*time.Second), "quit", nil, nil)
	if !errors.Is(err, ErrClosed) || !errors.Is(err, io.EOF) || !errors.Is(err, ErrQEMUClosed) {
		t.Fatalf("err = %v, want ErrClosed wrapping ErrQEMUClosed and EOF", err)
	}
	if !strings.Contains(err.Error(), "QEMU closed the monitor") {
		t.Fatalf("message %q does not say QEMU closed the monitor", err)
	}
	<-f.done
	err = c.Execute(ctxTimeout(t, time.Second), "query-status", nil, nil)
	if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrQEMUClosed) || !strings.Contains(err.Error(), "query-status") {
		t.Fatalf("later command: %v", err)
	}
	select {
	case _, ok := <-sub.Events():
		if ok {
			t.Fatal("event after close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("subscription not closed when the connection ended")
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err() = %v", c.Err())
	}
}

func TestMalformedStreamClosesConn(t *testing.T) {
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		f.sendRaw([]byte(`{"return": {}, "id": `)) // then garbage
		f.sendRaw([]byte(`]]]`))
	})
	err := c.Execute(ctxTimeout(t, 2*time.Second), "x", nil, nil)
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "malformed JSON") {
		t.Fatalf("err = %v", err)
	}
}

// A valid JSON message that is not QMP is skipped, not fatal.
func TestUnknownMessageSkipped(t *testing.T) {
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		f.sendRaw([]byte(`{"hello": "world"}`))
		f.sendRaw([]byte(`[1,2,3]`))
		f.reply(req, 5)
	})
	var n int
	if err := c.Execute(ctxTimeout(t, 2*time.Second), "x", nil, &n); err != nil || n != 5 {
		t.Fatalf("%v %d", err, n)
	}
}

// connGoroutinesGone waits up to 2 s for goroutines running Conn code to
// finish (one that just signalled its WaitGroup may still be unwinding) and
// returns those left.
func connGoroutinesGone() []string {
	deadline := time.Now().Add(2 * time.Second)
	for {
		g := connGoroutines()
		if len(g) == 0 || time.Now().After(deadline) {
			return g
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connGoroutines lists goroutines running Conn code.
func connGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "mig2/qmp.(*Conn)") || strings.Contains(g, "mig2/qmp.(*EventHub)") {
			out = append(out, g)
		}
	}
	return out
}

// Close ends every goroutine the Conn started, before it returns, even with
// a command pending, an undrained subscription and a go-qemu Events channel.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	if g := connGoroutinesGone(); len(g) != 0 {
		t.Fatalf("goroutines before the test: %v", g)
	}
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		f.event(EventStop, nil)
		f.event(EventStop, nil)
	})
	c.Subscribe(1)
	if _, err := c.Events(context.Background()); err != nil {
		t.Fatal(err)
	}
	pending := make(chan error, 1)
	go func() { pending <- c.Execute(context.Background(), "hang", nil, nil) }()
	time.Sleep(50 * time.Millisecond)
	if len(connGoroutines()) == 0 {
		t.Fatal("test is broken: no Conn goroutine seen while open")
	}
	c.Close()
	if err := <-pending; !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "closed by the client") {
		t.Fatalf("pending command: %v", err)
	}
	if g := connGoroutinesGone(); len(g) != 0 {
		t.Fatalf("goroutines left after Close:\n%s", strings.Join(g, "\n\n"))
	}
	c.Close() // idempotent
}

// No greeting (QEMU serves one client per socket; a second one waits):
// Dial gives up after the connect timeout instead of hanging.
func TestDialNoGreeting(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, err := l.Accept()
		if err == nil {
			accepted <- nc
		}
		close(accepted)
	}()
	start := time.Now()
	_, err = Dial(context.Background(), sock, WithConnectTimeout(200*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "greeting") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("took %v", took)
	}
	if nc := <-accepted; nc != nil {
		nc.Close()
	}

	// ctx bounds it too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	go func() {
		if nc, err := l.Accept(); err == nil {
			defer nc.Close()
			time.Sleep(time.Second)
		}
	}()
	if _, err := Dial(ctx, sock); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
}

func TestDialUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		nc, err := l.Accept()
		if err != nil {
			return
		}
		f := newFakeQEMU(t, nc, func(f *fakeQEMU, req fakeRequest) { f.reply(req, map[string]string{"status": "paused"}) })
		f.serve()
	}()
	c, err := Dial(ctxTimeout(t, 2*time.Second), sock)
	if err != nil {
		t.Fatal(err)
	}
	st, err := QueryStatus(ctxTimeout(t, 2*time.Second), c)
	if err != nil || st.Status != RunStatePaused {
		t.Fatalf("%v %+v", err, st)
	}
	c.Close()
	<-served

	if _, err := Dial(ctxTimeout(t, time.Second), filepath.Join(t.TempDir(), "none.sock")); err == nil || !strings.HasPrefix(err.Error(), "qmp: dial") {
		t.Fatalf("dial of a missing socket: %v", err)
	}
}

func TestGreetingErrors(t *testing.T) {
	for name, greet := range map[string]string{
		"not a greeting": `{"return": {}}`,
		"garbage":        `]`,
	} {
		t.Run(name, func(t *testing.T) {
			cli, srv := net.Pipe()
			f := newFakeQEMU(t, srv, nil)
			f.greeting = []byte(greet)
			f.start()
			if _, err := NewConn(ctxTimeout(t, time.Second), cli); err == nil || !strings.Contains(err.Error(), "greeting") {
				t.Fatalf("err = %v", err)
			}
		})
	}
	// QEMU closes before greeting.
	cli, srv := net.Pipe()
	srv.Close()
	if _, err := NewConn(ctxTimeout(t, time.Second), cli); !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v", err)
	}
}

func TestTrace(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) { f.reply(req, 1) }, WithTrace(func(d TraceDirection, m []byte) {
		mu.Lock()
		lines = append(lines, string(d)+" "+string(m))
		mu.Unlock()
	}))
	if err := c.Execute(ctxTimeout(t, time.Second), "x", nil, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 5 || !strings.HasPrefix(lines[0], `<- {"QMP"`) || !strings.HasPrefix(lines[1], `-> {"execute":"qmp_capabilities"`) || !strings.HasPrefix(lines[3], `-> {"execute":"x"`) {
		t.Fatalf("trace = %q", lines)
	}
}

// ExecuteInOrder sends its commands in order before any reply, every command runs even after
// one failed, and the first error in command order is returned.
func TestExecuteInOrder(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	held := make(chan fakeRequest, 3)
	c, _ := startFake(t, func(f *fakeQEMU, req fakeRequest) {
		mu.Lock()
		seen = append(seen, req.Execute)
		mu.Unlock()
		held <- req
		if len(held) < 3 { // reply only once all three arrived: they were pipelined
			return
		}
		for range 3 {
			r := <-held
			switch r.Execute {
			case "migrate-incoming":
				f.replyError(r, ClassGenericError, "port in use")
			case "query-migrate":
				f.reply(r, map[string]any{"status": "setup"})
			default:
				f.reply(r, map[string]any{})
			}
		}
	})
	var mi MigrationInfo
	errs := InOrder(ctxTimeout(t, 2*time.Second), c,
		Command{Name: "migrate-set-capabilities", Args: map[string]any{"capabilities": []any{}}},
		Command{Name: "migrate-incoming", Args: map[string]string{"uri": "tcp:127.0.0.1:0"}},
		Command{Name: "query-migrate", Result: &mi})
	var qe *Error
	if len(errs) != 3 || errs[0] != nil || !errors.As(errs[1], &qe) || qe.Command != "migrate-incoming" || errs[2] != nil {
		t.Fatalf("errs = %v, want only migrate-incoming's", errs)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "migrate-set-capabilities,migrate-incoming,query-migrate" {
		t.Fatalf("order %v", seen)
	}
	if mi.Status != MigrationSetup {
		t.Fatalf("the command after the failed one did not run to its end: %+v", mi)
	}
}

// recordingExecutor runs nothing: it records command names and fails the one named fail.
type recordingExecutor struct {
	fail string
	ran  []string
}

func (r *recordingExecutor) Execute(_ context.Context, cmd string, _, _ any) error {
	r.ran = append(r.ran, cmd)
	if cmd == r.fail {
		return &Error{Class: ClassGenericError, Desc: "no", Command: cmd}
	}
	return nil
}

// An Executor that cannot pipeline runs the commands one by one and stops at the first error.
func TestInOrderSequentialFallback(t *testing.T) {
	r := &recordingExecutor{fail: "b"}
	errs := InOrder(context.Background(), r, Command{Name: "a"}, Command{Name: "b"}, Command{Name: "c"})
	if strings.Join(r.ran, ",") != "a,b" || errs[0] != nil || errs[1] == nil || !errors.Is(errs[2], ErrNotRun) {
		t.Fatalf("errs %v, ran %v: want b's error after a,b and c not run", errs, r.ran)
	}
}
