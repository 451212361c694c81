package v2proto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
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

// listenLoopback starts a listener on a free loopback port with the given refusal window.
func listenLoopback(t *testing.T, cfg *Config, window time.Duration) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := newListener(ln, cfg, window)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// accepted is what acceptLoop collected.
type accepted struct {
	mu   sync.Mutex
	errs []error
	done chan struct{}
}

func (a *accepted) snapshot() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]error(nil), a.errs...)
}

// acceptLoop runs Accept until the listener closes and collects the failures it reports.
func acceptLoop(ctx context.Context, l *Listener) *accepted {
	a := &accepted{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for {
			c, err := l.Accept(ctx)
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return
			}
			if err != nil {
				a.mu.Lock()
				a.errs = append(a.errs, err)
				a.mu.Unlock()
				continue
			}
			if d, err := c.Destination(); err == nil {
				d.Close()
			}
		}
	}()
	return a
}

// refusalTally counts reported refusals by kind, those inside summaries included.
type refusalTally struct{ busy, stalled, other, reports, summaries int }

func tallyRefusals(errs []error) refusalTally {
	var t refusalTally
	for _, e := range errs {
		t.reports++
		var s *RefusalSummary
		if errors.As(e, &s) {
			t.summaries++
			for reason, n := range s.Reasons {
				switch reason {
				case "busy":
					t.busy += n
				case "timeout", ErrNotMig2.Error():
					t.stalled += n
				default:
					t.other += n
				}
			}
			continue
		}
		switch {
		case IsBusy(e):
			t.busy++
		case IsTimeout(e) || errors.Is(e, ErrNotMig2):
			t.stalled++
		default:
			t.other++
		}
	}
	return t
}

func (t refusalTally) total() int { return t.busy + t.stalled + t.other }

// waitTally waits until the refusals reported add up to want.
func waitTally(t *testing.T, a *accepted, want int, within time.Duration) refusalTally {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := tallyRefusals(a.snapshot())
		if got.total() >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
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
		l := listenLoopback(t, cfg, 300*time.Millisecond)
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
		// One busy refusal, two stalls: the first is reported at once, the others (from the
		// same host within the window) in a summary.
		got := waitTally(t, errs, 3, 3*time.Second)
		l.Close()
		<-errs.done
		if got.busy != 1 || got.stalled != 2 || got.other != 0 {
			t.Errorf("tls=%v: listener reported %d busy, %d stalled, %d other: %v", tlsOn, got.busy, got.stalled, got.other, errs.snapshot())
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

// TestEvictionForAnotherHost: with every slot held by stalled handshakes from other
// addresses, a client from an address holding fewer slots takes the oldest stalled one's slot
// and gets in at once; the evicted connection is reported as busy. A client from an address
// holding as many slots as any other is refused as busy.
func TestEvictionForAnotherHost(t *testing.T) {
	creds, _ := testCreds(t)
	cfg := testConfig(creds)
	cfg.MaxConcurrentHandshakes = 3
	cfg.MaxHandshakesPerHost = 0
	cfg.HandshakeTimeout = 20 * time.Second // the stalls must outlive the test
	l := listenLoopback(t, cfg, 10*time.Second)
	defer l.Close()
	ctx := testCtx(t)
	errs := acceptLoop(ctx, l)
	addr := l.Addr().String()
	oldest := stall(t, addr, "127.0.0.2")
	time.Sleep(20 * time.Millisecond)
	stall(t, addr, "127.0.0.2")
	stall(t, addr, "127.0.0.3")
	time.Sleep(50 * time.Millisecond) // let the listener admit them

	start := time.Now()
	c, err := DialConn(ctx, addr, RoleSource, testConfig(creds))
	if err != nil {
		t.Fatalf("a client from an address without a slot, every slot held by stalls: %v", err)
	}
	c.Close()
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("the client got in after %v", el)
	}
	_ = oldest.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := oldest.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the oldest stall of the busiest address was not closed: %v", err)
	}
	got := waitTally(t, errs, 1, 2*time.Second)
	if got.busy != 1 {
		t.Errorf("want the eviction reported as busy, got %v", errs.snapshot())
	}

	// Now 127.0.0.2 and 127.0.0.3 hold one slot each and the honest client's slot is free:
	// one more stall from 127.0.0.3 fills the listener. A client from 127.0.0.3 (2 slots)
	// finds no busier address and is refused as busy.
	slots := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.slots)
	}
	for deadline := time.Now().Add(2 * time.Second); slots() != 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // the honest client's slot is freed once Accept has it
	}
	stall(t, addr, "127.0.0.3")
	time.Sleep(50 * time.Millisecond)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err = Client(ctx, nc, RoleSource, "127.0.0.1", testConfig(creds))
	if c != nil {
		c.Close()
	}
	if !IsBusy(err) {
		t.Fatalf("a client from the busiest address with every slot taken: want busy, got %v", err)
	}
}

func TestEvictVictim(t *testing.T) {
	t0 := time.Unix(0, 0)
	a1 := &slot{host: "a", start: t0.Add(1)}
	a2 := &slot{host: "a", start: t0.Add(2)}
	b1 := &slot{host: "b", start: t0}
	c1 := &slot{host: "c", start: t0.Add(3)}
	all := []*slot{a2, b1, a1, c1}
	per := map[string]int{"a": 2, "b": 1, "c": 1}
	for _, tc := range []struct {
		host string
		want *slot
	}{
		{"new", a1}, // the busiest address's oldest handshake, not the oldest overall
		{"b", a1},   // b holds 1 < 2
		{"a", nil},  // nobody holds more than a
	} {
		if got := evictVictim(all, per, tc.host); got != tc.want {
			t.Errorf("evictVictim for %s = %v, want %v", tc.host, got, tc.want)
		}
	}
	per = map[string]int{"b": 1, "c": 1}
	if got := evictVictim([]*slot{c1, b1}, per, "new"); got != b1 {
		t.Errorf("equal addresses: got %v, want the oldest (b)", got)
	}
	if got := evictVictim([]*slot{c1, b1}, per, "c"); got != nil {
		t.Errorf("an address holding as many as any other evicted %v", got)
	}
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

// TestRefusalFlood: hundreds of refused connections from one host are reported as one refusal
// and summaries that account for every one of them; another host's first refusal is still
// reported at once (SPEC §10).
func TestRefusalFlood(t *testing.T) {
	cfg := testConfig(nil)
	cfg.HandshakeTimeout = 400 * time.Millisecond
	const window = 500 * time.Millisecond
	l := listenLoopback(t, cfg, window)
	defer l.Close()
	ctx := testCtx(t)
	errs := acceptLoop(ctx, l)
	addr := l.Addr().String()

	const flood = 300
	var conns []net.Conn
	for range flood {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
		if _, err := nc.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for _, nc := range conns {
		nc.Close()
	}
	got := waitTally(t, errs, flood, 5*time.Second)
	if got.total() < flood {
		t.Fatalf("refusals accounted %d, want %d (%+v)", got.total(), flood, got)
	}
	// One report at once, then one summary per window while the flood lasts.
	if maxReports := 1 + int(time.Since(start)/window) + 2; got.reports > maxReports {
		t.Errorf("%d reports for %d refusals, want at most %d", got.reports, flood, maxReports)
	}
	if got.summaries == 0 {
		t.Errorf("no summary: %v", errs.snapshot())
	}
	for _, e := range errs.snapshot() {
		var s *RefusalSummary
		var ce *ConnError
		if errors.As(e, &s) && (!errors.As(e, &ce) || ce.Peer != "127.0.0.1" || !strings.Contains(e.Error(), "more connection")) {
			t.Errorf("summary %q does not unwrap to a *ConnError for 127.0.0.1", e)
		}
	}

	// Another host: its first refusal is reported at once, not folded into the flood's.
	before := len(errs.snapshot())
	nc, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot bind 127.0.0.2 here: %v", err)
	}
	nc.Write([]byte("garbage\n"))
	defer nc.Close()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range errs.snapshot()[before:] {
			var ce *ConnError
			var s *RefusalSummary
			if errors.As(e, &ce) && !errors.As(e, &s) && strings.HasPrefix(ce.Peer, "127.0.0.2:") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the refusal from 127.0.0.2 was not reported at once: %v", errs.snapshot()[before:])
}

// TestRefusalLog: which refusals are reported at once, and what the summaries say.
func TestRefusalLog(t *testing.T) {
	const w = 10 * time.Second
	t0 := time.Unix(1000, 0)
	busy := &ConnError{Op: "accept", Peer: "192.0.2.1:1000", Reason: ErrBusy}
	stall := &ConnError{Op: "accept", Peer: "192.0.2.1:1001", Reason: ErrTimeout}
	r := newRefusalLog(w)
	if !r.note("192.0.2.1", busy, t0) {
		t.Fatal("the first refusal from a host was not reported")
	}
	for i := range 5 {
		if r.note("192.0.2.1", busy, t0.Add(time.Duration(i)*time.Second)) {
			t.Fatal("a refusal inside the window was reported")
		}
	}
	if r.note("192.0.2.1", stall, t0.Add(6*time.Second)) {
		t.Fatal("a refusal inside the window was reported")
	}
	if !r.note("198.51.100.1", stall, t0.Add(time.Second)) {
		t.Fatal("another host's first refusal was not reported")
	}
	if got := r.due(t0.Add(w-time.Millisecond), false); len(got) != 0 {
		t.Fatalf("summary before the window ended: %v", got)
	}
	got := r.due(t0.Add(w), false)
	if len(got) != 1 || got[0].Host != "192.0.2.1" || got[0].Count != 6 || got[0].Reasons["busy"] != 5 || got[0].Reasons["timeout"] != 1 {
		t.Fatalf("summary = %+v", got)
	}
	if want := "v2proto: accept 192.0.2.1: 6 more connections refused in the last 10s (busy: 5, timeout: 1), not reported one by one"; got[0].Error() != want {
		t.Errorf("summary text\n got %q\nwant %q", got[0].Error(), want)
	}
	if !IsTimeout(got[0]) {
		t.Errorf("summary does not match the last refusal's reason: %v", got[0])
	}
	// The host keeps at it: the next window only summarises.
	if r.note("192.0.2.1", busy, t0.Add(w+time.Second)) {
		t.Fatal("a host that had a summary was reported one by one again within the next window")
	}
	// The quiet host is forgotten when its window ends; the busy one gets a summary.
	got = r.due(t0.Add(2*w), false)
	if len(got) != 1 || got[0].Count != 1 {
		t.Fatalf("second summary = %+v", got)
	}
	if !r.note("198.51.100.1", stall, t0.Add(2*w)) {
		t.Fatal("a host whose window ended quietly was not reported at once again")
	}
	// A window with nothing to summarise forgets the host too.
	if got := r.due(t0.Add(3*w), false); len(got) != 0 {
		t.Fatalf("summaries without refusals: %v", got)
	}
	if !r.note("192.0.2.1", busy, t0.Add(3*w)) {
		t.Fatal("a host whose window ended quietly was not reported at once again")
	}

	// Many hosts: a few are reported one by one per window, the others share one summary.
	r = newRefusalLog(w)
	reported := 0
	const hosts = 300
	for i := range hosts {
		host := fmt.Sprintf("10.0.%d.%d", i/256, i%256)
		if r.note(host, busy, t0) {
			reported++
		}
		r.note(host, busy, t0) // a second refusal from each
	}
	if reported != maxReportedHosts {
		t.Fatalf("%d hosts reported at once, want %d", reported, maxReportedHosts)
	}
	got = r.due(t0.Add(w), false)
	if len(got) != maxReportedHosts+1 {
		t.Fatalf("%d summaries, want %d: %v", len(got), maxReportedHosts+1, got)
	}
	total := maxReportedHosts
	for _, s := range got {
		total += s.Count
	}
	if last := got[len(got)-1]; last.Host != otherHosts || total != 2*hosts {
		t.Fatalf("summaries %v account for %d refusals, want %d with %q last", got, total, 2*hosts, otherHosts)
	}
	// While the first hosts keep at it, a new host is only summarised...
	for i := range maxReportedHosts {
		r.note(fmt.Sprintf("10.0.%d.%d", i/256, i%256), busy, t0.Add(w+time.Second))
	}
	if r.note("192.0.2.99", busy, t0.Add(w+time.Second)) {
		t.Fatal("a new host was reported one by one while the table was full")
	}
	// ...and once they have been quiet for a window, new hosts are reported one by one again.
	r.due(t0.Add(2*w), false)
	r.due(t0.Add(3*w), false)
	if !r.note("192.0.2.99", busy, t0.Add(3*w)) {
		t.Fatal("a new host was not reported after the others went quiet")
	}
}

// TestListenerCloseLogsSummary: refusals still unreported at Close go to the Logger, summarised.
func TestListenerCloseLogsSummary(t *testing.T) {
	var buf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&buf)
	cfg := testConfig(nil)
	cfg.Logger = log
	l, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	errs := acceptLoop(testCtx(t), l)
	for range 3 {
		nc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		nc.Write([]byte("garbage\n"))
		nc.Close()
	}
	got := waitTally(t, errs, 1, 2*time.Second)
	time.Sleep(200 * time.Millisecond) // the other two are refused meanwhile
	l.Close()
	if got.reports != 1 || !strings.Contains(buf.String(), "2 more connections refused") {
		t.Fatalf("reported %+v; log:\n%s", got, buf.String())
	}
}

// TestStalledTLSHandshake: a client that starts a TLS handshake and stalls is cut at the
// handshake deadline and reported as a timeout, like one that stalls before its preamble.
func TestStalledTLSHandshake(t *testing.T) {
	creds, _ := testCreds(t)
	cfg := testConfig(creds)
	cfg.HandshakeTimeout = 300 * time.Millisecond
	l, err := Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	errs := acceptLoop(testCtx(t), l)
	nc := stall(t, l.Addr().String(), "")
	if _, err := nc.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}); err != nil { // a ClientHello that never comes
		t.Fatal(err)
	}
	got := waitTally(t, errs, 1, 3*time.Second)
	if got.stalled != 1 {
		t.Fatalf("reported %+v: %v", got, errs.snapshot())
	}
	if e := errs.snapshot()[0]; !IsTimeout(e) || !strings.Contains(e.Error(), "did not finish its handshake in time") {
		t.Fatalf("a stalled TLS handshake was reported as %v", e)
	}
}
