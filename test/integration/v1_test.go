//go:build integration

package integration

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mig2/mig2/qmp"
)

// tlsWatch records, while a migration runs, whether each QEMU had tls-creds set.
func tlsWatch(vms map[string]*vm) (stop func() map[string]string) {
	var mu sync.Mutex
	seen := map[string]string{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for name, v := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if p, err := qmp.QueryMigrateParameters(ctx, v.mon); err == nil && p.TLSCreds != nil && *p.TLSCreds != "" {
					mu.Lock()
					seen[name] = *p.TLSCreds
					mu.Unlock()
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	return func() map[string]string { cancel(); wg.Wait(); return seen }
}

// countingListener stands where an agent would be and counts who knocks.
func countingListener(t *testing.T) (string, *atomic.Int32) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return l.Addr().String(), &n
}

// TestV1PlainQEMU: the legacy single-stream path with the destination named by --dest-qmp:
// the guest arrives intact, TLS on both QEMUs, multifd off, and no agent is ever contacted.
func TestV1PlainQEMU(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	agentAddr, knocks := countingListener(t)
	watch := tlsWatch(map[string]*vm{"source": src, "destination": dst})
	r := mig2(t, ctxT(t, 3*time.Minute), "migrate", "--json", "--protocol", "v1", "--tls", "--tls-dir", certs, "--bandwidth", "100",
		"--agent", agentAddr, "--qmp", src.QMPSocket, "--dest-qmp", dst.QMPSocket, "demo", "tcp:"+freePort(t))
	seen := watch()
	if r.code != 0 || r.summary["protocol"] != "v1" {
		t.Fatalf("exit %d, summary %v", r.code, r.summary)
	}
	if seen["source"] == "" || seen["destination"] == "" {
		t.Fatalf("TLS not on both QEMUs during the v1 migration: %v", seen)
	}
	if n := knocks.Load(); n != 0 {
		t.Fatalf("the v1 migration connected %d time(s) to the agent address", n)
	}
	assertRunning(t, dst)
	assertIntact(t, dst)
	waitExited(t, src, 10*time.Second)
	// The same address is an agent address v2 would use: the listener does count.
	src2 := startVM(t, dir, "src2", vmOpts{dirty: -1})
	mig2(t, ctxT(t, time.Minute), "migrate", "--json", "--tls-dir", certs, "--qmp", src2.QMPSocket, "demo", "mig2://"+agentAddr)
	if knocks.Load() == 0 {
		t.Fatal("the control v2 attempt never reached the listener: the v1 check above proves nothing")
	}
}

// TestV1Fallback: no agent at the destination; with --fallback v1 mig2 warns that the device
// trees were not compared and migrates on v1, keeping TLS.
func TestV1Fallback(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	watch := tlsWatch(map[string]*vm{"source": src, "destination": dst})
	r := mig2(t, ctxT(t, 3*time.Minute), "migrate", "--json", "--fallback", "v1", "--tls-dir", certs, "--bandwidth", "100",
		"--qmp", src.QMPSocket, "--dest-qmp", dst.QMPSocket, "--migrateuri", "tcp:"+freePort(t), "demo", "mig2://"+freePort(t))
	seen := watch()
	if r.code != 0 || r.summary["protocol"] != "v1" {
		t.Fatalf("exit %d, summary %v", r.code, r.summary)
	}
	if !strings.Contains(r.stderr, "falling back to v1") || !strings.Contains(r.stderr, "NOT compared") {
		t.Fatalf("no fallback warning:\n%s", r.stderr)
	}
	if seen["source"] == "" || seen["destination"] == "" {
		t.Fatalf("the fallback dropped TLS: %v", seen)
	}
	assertIntact(t, dst)
}
