//go:build integration

package integration

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mig2/mig2/qmp"
)

// Exit codes of mig2 (cmd/mig2/exitcodes.go).
const (
	exitIncompatible = 3
	exitConnect      = 4
	exitFailed       = 5
	exitCancelled    = 6
)

// TestMigrateSuccess: an agent started with nothing but --listen, --tls-dir and --guest (the
// destination is told nothing about the migration); the source asks for more channels than
// the destination can take; TLS on the control channel and on both QEMUs' stream; the guest's
// memory verified on the destination; the stale source shut down.
func TestMigrateSuccess(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	// The agent runs on one core: the destination host "allows" one channel.
	agent := startAgentWrapped(t, dir, []string{"taskset", "-c", "0"}, "--tls-dir", certs, "--guest", "demo="+dst.QMPSocket)

	// Watch both QEMUs' migration parameters while the migration runs.
	var mu sync.Mutex
	tlsSeen := map[string]string{}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for name, v := range map[string]*vm{"source": src, "destination": dst} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for watchCtx.Err() == nil {
				if p, err := qmp.QueryMigrateParameters(watchCtx, v.mon); err == nil && p.TLSCreds != nil && *p.TLSCreds != "" {
					mu.Lock()
					tlsSeen[name] = *p.TLSCreds
					mu.Unlock()
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	r := mig2(t, ctxT(t, 3*time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", certs,
		"--parallel", "--parallel-connections", "8", "--bandwidth", "100", "demo", agent.uri())
	stopWatch()
	wg.Wait()
	if r.code != 0 {
		t.Fatalf("mig2 migrate exit %d: %s", r.code, r.stderr)
	}
	if r.summary == nil || r.progress == 0 {
		t.Fatalf("no summary or no progress in the output:\n%s", r.stdout)
	}
	adj := adjustment(r.summary, "multifd-channels")
	if adj == nil || adj["asked"] != "8" || adj["agreed"] != "1" || adj["reason"] != "destination-cores" {
		t.Fatalf("multifd-channels adjustment = %v, want asked 8, agreed 1, reason destination-cores", adj)
	}
	if r.summary["dest_status"] != "running" {
		t.Fatalf("summary dest_status %v", r.summary["dest_status"])
	}
	if tlsSeen["source"] == "" || tlsSeen["destination"] == "" {
		t.Fatalf("tls-creds not seen on both QEMUs during the migration: %v", tlsSeen)
	}
	assertRunning(t, dst)
	assertIntact(t, dst)
	waitExited(t, src, 10*time.Second) // the stale source was shut down
	// The agent cleaned up after itself: no mig2 object and no TLS parameters remain.
	p, err := qmp.QueryMigrateParameters(ctxT(t, 5*time.Second), dst.mon)
	if err != nil {
		t.Fatal(err)
	}
	if p.TLSCreds != nil && *p.TLSCreds != "" {
		t.Fatalf("destination still has tls-creds %q after the migration", *p.TLSCreds)
	}
}

// TestMigrateKeepSource: with --keep-source the stale source stays paused, and mig2 refuses
// to migrate it again.
func TestMigrateKeepSource(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	agent := startAgent(t, dir, "--tls-dir", certs, "--guest", "demo="+dst.QMPSocket)
	r := mig2(t, ctxT(t, 3*time.Minute), "migrate", "--json", "--keep-source", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	assertIntact(t, dst)
	st, err := qmp.QueryStatus(ctxT(t, 5*time.Second), src.mon)
	if err != nil {
		t.Fatal(err)
	}
	if st.Running || st.Status != qmp.RunStatePostMigrate {
		t.Fatalf("kept source is %s (running %v), want paused in postmigrate", st.Status, st.Running)
	}
	again := mig2(t, ctxT(t, time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	if again.code != exitIncompatible || !strings.Contains(again.stderr, "already migrated away") {
		t.Fatalf("migrating the stale source again: exit %d, stderr %q; want exit %d and a refusal", again.code, again.stderr, exitIncompatible)
	}
}

// TestDeviceMismatch: every kind of difference is refused before any RAM moves, the source
// keeps running untouched, and the diff names what differs.
func TestDeviceMismatch(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	rng := []string{"-device", "virtio-rng-pci,id=rng0"}
	src := startVM(t, dir, "src", vmOpts{extra: rng})
	cases := []struct {
		name string
		dst  vmOpts
		want []string // in mig2's error output
	}{
		{"extra device on destination", vmOpts{extra: append(append([]string{}, rng...), "-device", "virtio-balloon-pci,id=balloon0")}, []string{"balloon0", "virtio-balloon-pci"}},
		{"device missing on destination", vmOpts{}, []string{"rng0", "virtio-rng-pci"}},
		{"different RAM size", vmOpts{memMiB: 768, extra: rng}, []string{"RAM"}},
		{"different machine type", vmOpts{machine: "pc", extra: rng}, []string{"machine type", "pc-i440fx", "pc-q35"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.dst.incoming = true
			dst := startVM(t, dir, "dst"+string(rune('a'+i)), tc.dst)
			agent := startAgent(t, dir, "--tls-dir", certs, "--guest", "demo="+dst.QMPSocket)
			r := mig2(t, ctxT(t, time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
			if r.code != exitIncompatible {
				t.Fatalf("exit %d, want %d (incompatible)", r.code, exitIncompatible)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("the refusal does not mention %q:\n%s", w, r.stderr)
				}
			}
			assertNothingMoved(t, src)
			assertRunning(t, src)
			// The destination QEMU was not touched either: it still waits for a migration.
			st, err := qmp.QueryStatus(ctxT(t, 5*time.Second), dst.mon)
			if err != nil || st.Status != qmp.RunStateInMigrate {
				t.Fatalf("destination after the refusal: %v %v, want inmigrate", st.Status, err)
			}
			// mig2 check reports the same, with the diff, without migrating.
			c := mig2(t, ctxT(t, time.Minute), "check", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
			if c.code != exitIncompatible || !strings.Contains(c.stdout, "NOT compatible") || !strings.Contains(c.stdout, tc.want[0]) {
				t.Fatalf("mig2 check: exit %d, stdout:\n%s", c.code, c.stdout)
			}
		})
	}
	assertIntact(t, src)
}

// TestTLSMismatch: a TLS source refuses a plaintext agent and the reverse, at once, saying why.
func TestTLSMismatch(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	plain := startAgent(t, dir, "--insecure", "--guest", "demo="+dst.QMPSocket)
	r := mig2(t, ctxT(t, time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", plain.uri())
	if r.code != exitConnect || !strings.Contains(strings.ToLower(r.stderr), "plaintext") {
		t.Fatalf("TLS source → plaintext agent: exit %d, stderr %q; want exit %d naming plaintext", r.code, r.stderr, exitConnect)
	}
	tlsAgent := startAgent(t, dir, "--tls-dir", certs, "--guest", "demo="+dst.QMPSocket)
	r = mig2(t, ctxT(t, time.Minute), "migrate", "--json", "--insecure", "--qmp", src.QMPSocket, "demo", tlsAgent.uri())
	if r.code != exitConnect || !strings.Contains(r.stderr, "requires TLS") {
		t.Fatalf("plaintext source → TLS agent: exit %d, stderr %q; want exit %d saying the agent requires TLS", r.code, r.stderr, exitConnect)
	}
	assertNothingMoved(t, src)
	assertRunning(t, src)
}

// TestCancel: SIGINT to mig2 migrate mid-migration; the source keeps running with its memory
// intact, the destination is cleaned up, and the agent takes the next migration.
func TestCancel(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	agent := startAgent(t, dir, "--tls-dir", certs, "--guest", "demo="+dst.QMPSocket)

	cmd := exec.Command(mig2Bin, "migrate", "--json", "--bandwidth", "10", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitMigrating(t, src)
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if code := exitOf(err); code != exitCancelled {
		t.Fatalf("after SIGINT mig2 exited %d, want %d; stderr:\n%s", code, exitCancelled, stderr.String())
	}
	if !strings.Contains(stderr.String(), "source guest is running") {
		t.Fatalf("the error does not say the source runs:\n%s", stderr.String())
	}
	assertRunning(t, src)
	assertIntact(t, src)
	// The destination QEMU that waited for this migration is gone (it can never receive it now).
	waitExited(t, dst, 15*time.Second)
	// A fresh destination QEMU at the same socket: the same agent takes the next migration.
	dst2 := startVM(t, dir, "dst", vmOpts{incoming: true})
	r := mig2(t, ctxT(t, 3*time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	if r.code != 0 {
		t.Fatalf("the next migration failed: exit %d", r.code)
	}
	assertIntact(t, dst2)
}

// TestDestinationKilled: the destination QEMU dies mid-migration; the source keeps running and
// the error on the source carries the destination's cause.
func TestDestinationKilled(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	agent := startAgent(t, dir, "--tls-dir", certs, "--guest", "demo="+dst.QMPSocket)
	done := make(chan run, 1)
	go func() {
		done <- mig2(t, ctxT(t, 3*time.Minute), "migrate", "--json", "--bandwidth", "10", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	}()
	waitMigrating(t, src)
	if err := dst.Kill(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != exitFailed {
		t.Fatalf("exit %d, want %d (failed, source running)", r.code, exitFailed)
	}
	if !strings.Contains(r.stderr, "destination QEMU exited") {
		t.Fatalf("the error does not carry the destination's cause:\n%s", r.stderr)
	}
	assertRunning(t, src)
	assertIntact(t, src)
}

// TestSkipDeviceCheck: with the device check off on purpose, a source-only device without a
// RAM block makes plain QEMU send all RAM and then fail at device load on the destination
// (where plain QEMU 7.2 can report "completed" with the guest lost). Under mig2 the source
// keeps running and the error names the device section the destination refused.
func TestSkipDeviceCheck(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{extra: []string{"-device", "virtio-rng-pci,id=rng0"}})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	agent := startAgent(t, dir, "--tls-dir", certs, "--allow-skip-device-check", "--guest", "demo="+dst.QMPSocket)
	r := mig2(t, ctxT(t, 3*time.Minute), "migrate", "--json", "--skip-device-check", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	if r.code != exitFailed {
		t.Fatalf("exit %d, want %d", r.code, exitFailed)
	}
	if !strings.Contains(r.stderr, "virtio-rng") || !strings.Contains(r.stderr, "destination QEMU said") {
		t.Fatalf("the error does not name the section the destination refused:\n%s", r.stderr)
	}
	assertRunning(t, src)
	assertIntact(t, src)
	// Without the agent's consent, skipping the check is refused.
	dst2 := startVM(t, dir, "dst2", vmOpts{incoming: true})
	strict := startAgent(t, dir, "--tls-dir", certs, "--guest", "demo="+dst2.QMPSocket)
	r = mig2(t, ctxT(t, time.Minute), "migrate", "--json", "--skip-device-check", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", strict.uri())
	if r.code != exitIncompatible || !strings.Contains(r.stderr, "device-tree") {
		t.Fatalf("skip without the agent's consent: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestUnreachableAgent: nothing listening, or a port that is not an agent: a clear error in
// under 5 s.
func TestUnreachableAgent(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{dirty: -1})
	// A port where something listens that never speaks (not an agent).
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, dest := range []string{"mig2://" + freePort(t), "mig2://" + silent.Addr().String()} {
		r := mig2(t, ctxT(t, time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", dest)
		if r.code != exitConnect || !strings.Contains(r.stderr, "cannot reach the mig2 agent") {
			t.Errorf("%s: exit %d, stderr %q; want exit %d", dest, r.code, r.stderr, exitConnect)
		}
		if r.elapsed > 5*time.Second {
			t.Errorf("%s: took %s, want < 5 s", dest, r.elapsed)
		}
	}
	assertRunning(t, src)
}

// TestTwoGuestsAtOnce: one agent receives two guests at the same time.
func TestTwoGuestsAtOnce(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	srcA := startVM(t, dir, "srca", vmOpts{})
	srcB := startVM(t, dir, "srcb", vmOpts{})
	dstA := startVM(t, dir, "dsta", vmOpts{incoming: true})
	dstB := startVM(t, dir, "dstb", vmOpts{incoming: true})
	agent := startAgent(t, dir, "--tls-dir", certs, "--guest", "a="+dstA.QMPSocket, "--guest", "b="+dstB.QMPSocket)
	var wg sync.WaitGroup
	results := make([]run, 2)
	for i, src := range []*vm{srcA, srcB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = mig2(t, ctxT(t, 4*time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", certs, string(rune('a'+i)), agent.uri())
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("migration %d: exit %d", i, r.code)
		}
	}
	assertIntact(t, dstA)
	assertIntact(t, dstB)
}

// waitMigrating waits until the source QEMU is actively sending RAM.
func waitMigrating(t *testing.T, v *vm) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	for {
		mi, err := qmp.QueryMigrate(ctx, v.mon)
		if err != nil {
			t.Fatal(err)
		}
		if mi.Status == qmp.MigrationActive && mi.RAM != nil && mi.RAM.Transferred > 1<<20 {
			return
		}
		if mi.Status.Terminal() {
			t.Fatalf("migration ended (%s) before the test could interrupt it", mi.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func exitOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}
