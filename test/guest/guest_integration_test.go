//go:build integration

package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// bootTimeout bounds how long any guest may take to become ready here;
// timing assertions are separate and looser than the figures we expect.
const bootTimeout = 90 * time.Second

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// bootAndWait starts a guest and waits for it to be ready; it returns the
// wall time from Start to "QB ready".
func bootAndWait(t *testing.T, opts Options) (*QEMU, Ready, time.Duration) {
	t.Helper()
	t0 := time.Now()
	q := StartTest(t, opts)
	r, err := q.Console().WaitReady(ctxFor(t, bootTimeout))
	if err != nil {
		t.Fatalf("guest %s not ready: %v", opts.Name, err)
	}
	return q, r, time.Since(t0)
}

func TestIntegrationBootAndVerify(t *testing.T) {
	q, r, boot := bootAndWait(t, Options{Name: "boot", MemMiB: 512, TouchMiB: 256, Fill: "rand"})
	t.Logf("boot to ready (512 MiB RAM, 256 MiB touched, rand): %v wall, guest /init reports t=%gs", boot.Round(time.Millisecond), r.T)
	ctx := ctxFor(t, time.Minute)
	c := q.Console()
	if r.TouchedMiB != 256 {
		t.Errorf("ready touched_mib = %d, want 256", r.TouchedMiB)
	}
	if s, err := c.WaitStart(ctxFor(t, time.Second)); err != nil || s.MemMiB != 256 || s.Rate != 0 || s.Fill != "rand" {
		t.Errorf("start line = %+v, %v", s, err)
	}
	hb1, err := c.WaitHeartbeat(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	hb2, err := c.WaitHeartbeat(ctx, hb1.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if hb2.Seq != hb1.Seq+1 || hb2.T <= hb1.T {
		t.Errorf("heartbeats do not advance: %+v then %+v", hb1, hb2)
	}
	t0 := time.Now()
	v, err := c.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verify of 256 MiB: %v: %+v", time.Since(t0).Round(time.Millisecond), v)
	if v.Bad != 0 || v.FirstBad != -1 || v.Pages != 256*256 || v.Req <= 0 {
		t.Errorf("verify = %+v, want bad=0 first_bad=-1 pages=65536", v)
	}
	// A second request gets its own answer.
	v2, err := c.Verify(ctx)
	if err != nil || v2.Req == v.Req || v2.Bad != 0 {
		t.Errorf("second verify = %+v, %v", v2, err)
	}
}

func TestIntegrationDemoSizeBootTime(t *testing.T) {
	q, r, boot := bootAndWait(t, Options{Name: "demo", MemMiB: 2048, TouchMiB: 1024})
	t.Logf("boot to ready (2048 MiB RAM, 1024 MiB touched, rand): %v wall, guest /init reports t=%gs (target < 10s)", boot.Round(time.Millisecond), r.T)
	if boot > 30*time.Second {
		t.Errorf("demo-size guest took %v to be ready, want < 30s (target 10s)", boot)
	} else if boot > 10*time.Second {
		t.Logf("NOTE: above the 10 s target (machine busy?)")
	}
	t0 := time.Now()
	v, err := q.Console().Verify(ctxFor(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verify of 1024 MiB: %v: %+v", time.Since(t0).Round(time.Millisecond), v)
	if v.Bad != 0 || v.Pages != 1024*256 {
		t.Errorf("verify = %+v, want bad=0 pages=262144", v)
	}
}

func TestIntegrationCorruptionDetected(t *testing.T) {
	q, _, _ := bootAndWait(t, Options{Name: "corrupt", MemMiB: 512, TouchMiB: 256, CorruptAfter: 2 * time.Second})
	ctx := ctxFor(t, time.Minute)
	c := q.Console()
	p, err := c.WaitCorrupted(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("corrupted page %d; verify: %+v", p.Page, v)
	if v.Bad < 1 || v.FirstBad != p.Page {
		t.Errorf("verify = %+v, want bad>=1 and first_bad=%d", v, p.Page)
	}
}

func TestIntegrationDirtyingVerifiesClean(t *testing.T) {
	q, _, _ := bootAndWait(t, Options{Name: "dirty", MemMiB: 512, TouchMiB: 256, DirtyMiBps: 50})
	ctx := ctxFor(t, time.Minute)
	c := q.Console()
	first, err := c.WaitHeartbeat(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	last, err := c.WaitHeartbeat(ctx, first.Seq+2)
	if err != nil {
		t.Fatal(err)
	}
	rate := (last.DirtiedMiB - first.DirtiedMiB) / (last.T - first.T)
	t.Logf("dirtying: %+v -> %+v: %.1f MiB/s", first, last, rate)
	if rate < 25 || rate > 60 {
		t.Errorf("guest dirtied %.1f MiB/s, want ~50", rate)
	}
	for i := 0; i < 2; i++ {
		v, err := c.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v.Bad != 0 {
			t.Errorf("verify of a dirtying guest = %+v, want bad=0", v)
		}
	}
	hb, err := c.WaitHeartbeat(ctx, last.Seq)
	if err != nil || hb.DirtiedMiB <= last.DirtiedMiB {
		t.Errorf("dirtying did not resume after verify: %+v, %v", hb, err)
	}
}

// TestIntegrationMigrateDirtyingGuest migrates a dirtying text-filled guest
// over a unix socket with plain QMP and checks that the destination console
// picks up the guest and that the guest's memory arrived intact (pti=on).
// The dirty rate is the other migration tests' 20 MiB/s: QEMU 7.2's TCG
// dirty-bitmap race (FACTS.md) is narrowed by pti=on, not closed, and once
// crashed the destination guest's runtime at 50 MiB/s here.
func TestIntegrationMigrateDirtyingGuest(t *testing.T) {
	opts := Options{MemMiB: 512, TouchMiB: 256, DirtyMiBps: 20, Fill: "text"}
	srcOpts := opts
	srcOpts.Name = "src"
	src, _, _ := bootAndWait(t, srcOpts)
	dstOpts := opts
	dstOpts.Name, dstOpts.Incoming, dstOpts.Dir = "dst", true, filepath.Dir(src.QMPSocket)
	dst := StartTest(t, dstOpts)
	ctx := ctxFor(t, 2*time.Minute)

	before, err := src.Console().WaitHeartbeat(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	smon, err := dialQMP(ctx, src.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer smon.Close()
	dmon, err := dialQMP(ctx, dst.QMPSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer dmon.Close()
	uri := "unix:" + filepath.Join(filepath.Dir(src.QMPSocket), "mig.sock")
	if _, err := dmon.run(ctx, "migrate-incoming", map[string]any{"uri": uri}); err != nil {
		t.Fatal(err)
	}
	if _, err := smon.run(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(8) << 30}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := smon.run(ctx, "migrate", map[string]any{"uri": uri}); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Status    string `json:"status"`
		ErrorDesc string `json:"error-desc"`
	}
	for {
		raw, err := smon.run(ctx, "query-migrate", nil)
		if err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(raw, &st)
		if st.Status == "completed" || st.Status == "failed" || st.Status == "cancelled" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Status != "completed" {
		t.Fatalf("migration %s: %s", st.Status, st.ErrorDesc)
	}
	t.Logf("migration completed in %v", time.Since(t0).Round(time.Millisecond))
	last, _ := src.Console().LastHeartbeat()
	src.Kill()

	hb, err := dst.Console().WaitHeartbeat(ctx, 0)
	if err != nil {
		t.Fatalf("destination console: %v", err)
	}
	if hb.Seq <= before.Seq || hb.Seq < last.Seq {
		t.Errorf("destination heartbeat %+v does not continue the source's %+v", hb, last)
	}
	v, err := dst.Console().Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("destination: %+v; verify %+v", hb, v)
	if v.Bad != 0 || v.Pages != 256*256 {
		t.Errorf("verify after migration = %+v, want bad=0 pages=65536", v)
	}
	if hb2, err := dst.Console().WaitHeartbeat(ctx, hb.Seq); err != nil || hb2.DirtiedMiB <= hb.DirtiedMiB {
		t.Errorf("guest does not dirty on the destination: %+v, %v", hb2, err)
	}
}

// qmpConn is a minimal QMP client for this test only (the project's own
// client lives in package qmp; this package must not depend on it).
type qmpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialQMP(ctx context.Context, path string) (*qmpConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	q := &qmpConn{conn: conn, r: bufio.NewReader(conn)}
	if _, err := q.r.ReadBytes('\n'); err != nil { // greeting
		conn.Close()
		return nil, err
	}
	if _, err := q.run(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) Close() error { return q.conn.Close() }

func (q *qmpConn) run(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	if dl, ok := ctx.Deadline(); ok {
		q.conn.SetDeadline(dl)
	}
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	if err := json.NewEncoder(q.conn).Encode(req); err != nil {
		return nil, err
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class, Desc string
			} `json:"error"`
			Event string `json:"event"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("%s: %w", cmd, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return nil, fmt.Errorf("%s: %s: %s", cmd, resp.Error.Class, resp.Error.Desc)
		default:
			return resp.Return, nil
		}
	}
}
