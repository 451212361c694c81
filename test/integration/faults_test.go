//go:build integration

package integration

// Faults during a migration (issue 9, plain QEMU; docs/FAULTS.md): the network to the
// destination cut, the agent killed, the destination QEMU killed, mig2 migrate itself
// interrupted or killed, a destination whose log disk is full, a certificate that expires
// between `mig2 check` and `mig2 migrate`. Every test runs the guest under dirtying load and
// checks afterwards that the guest runs with its memory intact, that the destination is clean,
// and that it takes the next migration.

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mig2/mig2/qmp"
	"github.com/mig2/mig2/test/guest"
	"github.com/mig2/mig2/v2proto/testcerts"
)

// startVMWith is startVM with another QEMU binary (a wrapper that runs QEMU in a network
// namespace).
func startVMWith(t *testing.T, dir, name string, o vmOpts, qemuBin string) *vm {
	t.Helper()
	if o.memMiB == 0 {
		o.memMiB = 512
	}
	if o.dirty == 0 && !o.incoming {
		o.dirty = 20
	}
	monPath := filepath.Join(dir, name+".mon")
	extra := append([]string{"-qmp", "unix:" + monPath + ",server=on,wait=off"}, o.extra...)
	q := guest.StartTest(t, guest.Options{
		Name: name, Dir: dir, MemMiB: o.memMiB, TouchMiB: 256, DirtyMiBps: max(o.dirty, 0),
		Incoming: o.incoming, Machine: o.machine, ExtraArgs: extra, QEMUBinary: qemuBin,
	})
	ctx := ctxT(t, 10*time.Second)
	var mon *qmp.Conn
	for {
		var err error
		if mon, err = qmp.Dial(ctx, monPath); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("second monitor of %s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() { mon.Close() })
	if !o.incoming {
		if _, err := q.Console().WaitReady(ctxT(t, 60*time.Second)); err != nil {
			t.Fatalf("guest %s did not become ready: %v", name, err)
		}
	}
	return &vm{QEMU: q, mon: mon}
}

// faultAgent is a `mig2 agent` a test may kill, run in a namespace, or log to a full disk.
type faultAgent struct {
	cmd    *exec.Cmd
	addr   string
	log    string
	exited chan error
	killed bool
}

type agentSpec struct {
	wrapper []string // e.g. ip netns exec NS
	listen  string   // default 127.0.0.1 on a free port
	log     string   // default a new file in dir
}

func startFaultAgent(t *testing.T, dir string, spec agentSpec, args ...string) *faultAgent {
	t.Helper()
	if spec.listen == "" {
		spec.listen = freePort(t)
	}
	if spec.log == "" {
		spec.log = filepath.Join(dir, fmt.Sprintf("agent-%d.log", time.Now().UnixNano()))
	}
	a := &faultAgent{addr: spec.listen, log: spec.log, exited: make(chan error, 1)}
	logf, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append(append([]string{}, spec.wrapper...), mig2Bin, "agent", "--listen", spec.listen), args...)
	a.cmd = exec.Command(argv[0], argv[1:]...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.exited <- a.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		if !a.killed {
			_ = a.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-a.exited:
				if err != nil {
					t.Errorf("agent exited with %v on SIGTERM", err)
				}
			case <-time.After(15 * time.Second):
				_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
				<-a.exited
				t.Errorf("agent did not stop within 15 s of SIGTERM")
			}
		}
		if t.Failed() {
			t.Logf("agent log (%s):\n%s", a.log, lastLines(a.logText(), 60))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", a.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return a
		}
		select {
		case err := <-a.exited:
			a.killed = true
			t.Fatalf("agent exited at start (%v):\n%s", err, a.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not listening on %s after 10 s:\n%s", a.addr, a.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *faultAgent) uri() string { return "mig2://" + a.addr }

func (a *faultAgent) logText() string {
	b, _ := os.ReadFile(a.log)
	return string(b)
}

// kill sends SIGKILL to the agent, as the OOM killer would.
func (a *faultAgent) kill(t *testing.T) {
	t.Helper()
	a.killed = true
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("agent still running 10 s after SIGKILL")
	}
}

// netns is a network namespace joined to the host by a veth pair: the destination host.
type netns struct {
	name           string
	hostIf, nsIf   string
	hostIP, nsIP   string
	wrapperForQEMU string // runs qemu-system-x86_64 inside the namespace
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func randN(n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		panic(err)
	}
	return v.Int64()
}

// newNetns makes the namespace with a /30 in 10.x that no interface of the host uses yet.
func newNetns(t *testing.T, dir string) *netns {
	t.Helper()
	addrs, _ := exec.Command("ip", "-o", "-4", "addr").Output()
	var n *netns
	for range 50 {
		a, b := 100+randN(100), randN(250)
		prefix := fmt.Sprintf("10.%d.%d.", a, b)
		if bytes.Contains(addrs, []byte(prefix)) {
			continue
		}
		tag := fmt.Sprintf("%d%d", os.Getpid()%10000, randN(1000))
		n = &netns{name: "m2fault" + tag, hostIf: "m2h" + tag, nsIf: "m2n" + tag, hostIP: prefix + "1", nsIP: prefix + "2"}
		break
	}
	if n == nil {
		t.Fatal("no free 10.x subnet")
	}
	ipCmd(t, "netns", "add", n.name)
	t.Cleanup(func() {
		// Deleting the namespace also removes the veth pair. Processes in it were stopped by
		// their own cleanups, which run first.
		_ = exec.Command("ip", "link", "del", n.hostIf).Run()
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", n.name, err, out)
		}
	})
	ipCmd(t, "link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf)
	ipCmd(t, "link", "set", n.nsIf, "netns", n.name)
	ipCmd(t, "addr", "add", n.hostIP+"/30", "dev", n.hostIf)
	ipCmd(t, "link", "set", n.hostIf, "up")
	ipCmd(t, "-n", n.name, "addr", "add", n.nsIP+"/30", "dev", n.nsIf)
	ipCmd(t, "-n", n.name, "link", "set", n.nsIf, "up")
	ipCmd(t, "-n", n.name, "link", "set", "lo", "up")
	n.wrapperForQEMU = filepath.Join(dir, "qemu-in-"+n.name)
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", n.name, guest.QEMUBinary())
	if err := os.WriteFile(n.wrapperForQEMU, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return n // the agent's start-up probe, a TCP connect through the veth, proves the link
}

func (n *netns) linkDown(t *testing.T) { ipCmd(t, "link", "set", n.hostIf, "down") }
func (n *netns) linkUp(t *testing.T)   { ipCmd(t, "link", "set", n.hostIf, "up") }

// migrateAsync runs mig2 migrate in the background.
func migrateAsync(t *testing.T, d time.Duration, args ...string) <-chan run {
	done := make(chan run, 1)
	ctx := ctxT(t, d)
	go func() { done <- mig2(t, ctx, append([]string{"migrate", "--json"}, args...)...) }()
	return done
}

// waitNewMigration is waitMigrating for a source whose earlier migration ended: it waits for
// the next one to send RAM.
func waitNewMigration(t *testing.T, v *vm) {
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
		time.Sleep(50 * time.Millisecond)
	}
}

// assertSourceSettled checks that the source QEMU's migration is over (none, cancelled or
// failed): nothing runs on behalf of a migration that failed, and the next one can start.
func assertSourceSettled(t *testing.T, v *vm) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	for {
		mi, err := qmp.QueryMigrate(ctx, v.mon)
		if err != nil {
			t.Fatalf("%s: query-migrate: %v", v.Name, err)
		}
		switch mi.Status {
		case qmp.MigrationNone, qmp.MigrationCancelled, qmp.MigrationFailed:
			return
		case qmp.MigrationCompleted:
			t.Fatalf("%s: the failed migration shows completed on the source", v.Name)
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: the source QEMU's migration is still %s", v.Name, mi.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// assertNextMigration proves the destination clean: a fresh incoming QEMU (the old one can
// never receive this guest) takes a real migration through the same agent, and the guest runs
// there with its memory intact.
func assertNextMigration(t *testing.T, src *vm, startDst func() *vm, agentURI, certs, name string) *vm {
	t.Helper()
	dst := startDst()
	r := mig2(t, ctxT(t, 4*time.Minute), append(append([]string{"migrate", "--json", "--qmp", src.QMPSocket}, securityArgs(certs)...), name, agentURI)...)
	if r.code != 0 {
		t.Fatalf("the next migration after the fault failed: exit %d\n%s", r.code, r.stderr)
	}
	assertRunning(t, dst)
	assertIntact(t, dst)
	return dst
}

// guardPids lists the source guards running for a QMP socket.
func guardPids(qmpSocket string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		guard := len(args) > 1 && (args[1] == "__migrate-guard" || filepath.Base(args[0]) == "mig2-guard")
		if guard && strings.Contains(string(b), "\x00"+qmpSocket+"\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// assertNoGuard checks that no source guard outlives its migration; one that does is killed.
func assertNoGuard(t *testing.T, qmpSocket string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pids := guardPids(qmpSocket)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("source guard(s) %v still running 30 s after mig2 ended", pids)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// securityArgs are mig2's (and its agent's) options for TLS with certs, or plaintext ("").
func securityArgs(certs string) []string {
	if certs == "" {
		return []string{"--insecure"}
	}
	return []string{"--tls-dir", certs}
}

// TestFaultNetworkCut: the destination (agent and QEMU) sits in a network namespace behind a
// veth pair; the link goes down mid-migration. mig2 fails within its progress timeout with an
// error that points at the network, the source guest runs intact, and once the link is back
// the destination is clean and takes the next migration. Over TLS and in plaintext: with more
// than two multifd channels a cancel stuck on the dead link made QEMU 7.2's source abort when
// the link came back, unless mig2 yanks it (FAULTS.md).
func TestFaultNetworkCut(t *testing.T) {
	tlsOK := t.Run("NetworkCut/TLS", func(t *testing.T) { faultNetworkCut(t, true) })
	plainOK := t.Run("NetworkCut/plaintext", func(t *testing.T) { faultNetworkCut(t, false) })
	if tlsOK && plainOK {
		t.Logf("outcome: the network cut mid-migration, over TLS and in plaintext: mig2 failed after its progress timeout, the source resumed intact, the destination was cleaned up and took the next migration (details in the two sub-tests)")
	}
}

func faultNetworkCut(t *testing.T, tls bool) {
	dir := shortDir(t)
	ns := newNetns(t, dir)
	certs := filepath.Join(dir, "pki")
	if err := testcerts.Write(certs, []string{ns.nsIP}, "CN=mig2-test-source,O=mig2 tests"); err != nil {
		t.Fatal(err)
	}
	src := startVM(t, dir, "src", vmOpts{})
	startDst := func() *vm { return startVMWith(t, dir, "dst", vmOpts{incoming: true}, ns.wrapperForQEMU) }
	dst := startDst()
	if !tls {
		certs = ""
	}
	agent := startFaultAgent(t, dir, agentSpec{wrapper: []string{"ip", "netns", "exec", ns.name}, listen: net.JoinHostPort(ns.nsIP, "16520")},
		append(securityArgs(certs), "--guest", "demo="+dst.QMPSocket)...)

	// Longer than the agent's Progress period (5 s), so that its silence is telling.
	const progressTimeout = 8 * time.Second
	done := migrateAsync(t, 3*time.Minute, append(append([]string{"--bandwidth", "10", "--progress-timeout", progressTimeout.String(),
		"--qmp", src.QMPSocket}, securityArgs(certs)...), "demo", agent.uri())...)
	waitMigrating(t, src)
	ns.linkDown(t)
	cut := time.Now()
	r := <-done
	failedAfter := time.Since(cut)
	if r.code != exitFailed {
		t.Fatalf("exit %d, want %d (failed, source running)", r.code, exitFailed)
	}
	for _, want := range []string{"no progress for 8s", "nothing heard from the destination agent", "network", "source guest is running"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the error does not say %q:\n%s", want, r.stderr)
		}
	}
	// The progress timeout, plus the bounded wait for QEMU 7.2's cancel, which cannot finish
	// while its sending threads are blocked on the dead link.
	if failedAfter > progressTimeout+30*time.Second {
		t.Errorf("mig2 took %s after the cut to fail (progress timeout %s)", failedAfter.Round(time.Second), progressTimeout)
	}
	assertNoGuard(t, src.QMPSocket)
	// The guest runs on the source, intact, even while its QEMU may still be cancelling.
	assertRunning(t, src)
	assertIntact(t, src)

	ns.linkUp(t)
	// With the link back, the source QEMU's cancel completes, and the destination learns of
	// the failure (the source's Abort, or its own silence deadline) and shuts down the QEMU
	// that can never receive this guest.
	assertSourceSettled(t, src)
	waitExited(t, dst, 90*time.Second)
	assertNextMigration(t, src, startDst, agent.uri(), certs, "demo")
	t.Logf("outcome: %s: network cut %s into the migration: mig2 failed %s after the cut (exit %d), source resumed intact, destination cleaned up after the link returned and took the next migration",
		map[bool]string{true: "TLS", false: "plaintext"}[tls], r.elapsed.Round(time.Second)-failedAfter.Round(time.Second), failedAfter.Round(time.Second), r.code)
}

// TestFaultAgentKilled: SIGKILL to the destination agent mid-migration. The source cancels
// and keeps running; the destination QEMU that waited for the guest does not linger; a
// restarted agent takes the next migration.
func TestFaultAgentKilled(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	startDst := func() *vm { return startVM(t, dir, "dst", vmOpts{incoming: true}) }
	dst := startDst()
	agentArgs := []string{"--tls-dir", certs, "--guest", "demo=" + dst.QMPSocket}
	agent := startFaultAgent(t, dir, agentSpec{}, agentArgs...)
	done := migrateAsync(t, 3*time.Minute, "--bandwidth", "10", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	waitMigrating(t, src)
	agent.kill(t)
	r := <-done
	if r.code != exitFailed {
		t.Fatalf("exit %d, want %d", r.code, exitFailed)
	}
	if !strings.Contains(r.stderr, "closed the connection") || !strings.Contains(r.stderr, "source guest is running") {
		t.Errorf("the error does not say the destination went away and the source runs:\n%s", r.stderr)
	}
	assertRunning(t, src)
	assertIntact(t, src)
	assertSourceSettled(t, src)
	assertNoGuard(t, src.QMPSocket)
	// With its stream cancelled, the incoming QEMU fails its load and exits by itself.
	waitExited(t, dst, 30*time.Second)
	agent2 := startFaultAgent(t, dir, agentSpec{}, agentArgs...)
	assertNextMigration(t, src, startDst, agent2.uri(), certs, "demo")
	t.Logf("outcome: agent SIGKILLed mid-migration: mig2 failed in %s (exit %d), source resumed intact, the orphaned incoming QEMU exited, a restarted agent took the next migration",
		r.elapsed.Round(time.Second), r.code)
}

// TestFaultDestinationQEMUKilled: the destination QEMU is killed mid-migration (as in
// TestDestinationKilled), and the same agent then takes the next migration.
func TestFaultDestinationQEMUKilled(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	startDst := func() *vm { return startVM(t, dir, "dst", vmOpts{incoming: true}) }
	dst := startDst()
	agent := startFaultAgent(t, dir, agentSpec{}, "--tls-dir", certs, "--guest", "demo="+dst.QMPSocket)
	done := migrateAsync(t, 3*time.Minute, "--bandwidth", "10", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	waitMigrating(t, src)
	if err := dst.Kill(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.code != exitFailed || !strings.Contains(r.stderr, "destination QEMU exited") {
		t.Fatalf("exit %d, want %d with the destination's cause:\n%s", r.code, exitFailed, r.stderr)
	}
	assertRunning(t, src)
	assertIntact(t, src)
	assertSourceSettled(t, src)
	assertNoGuard(t, src.QMPSocket)
	assertNextMigration(t, src, startDst, agent.uri(), certs, "demo")
	t.Logf("outcome: destination QEMU killed mid-migration: mig2 failed in %s (exit %d) naming the destination's cause, source resumed intact, the same agent took the next migration",
		r.elapsed.Round(time.Second), r.code)
}

// TestFaultSourceKilled: mig2 migrate itself is interrupted (SIGTERM: a clean cancel) or
// killed (SIGKILL while RAM moves, and SIGKILL while the source QEMU waits at
// pre-switchover, where QEMU would keep the guest paused forever). The guest always runs on
// the source afterwards, the source QEMU has no migration left, no guard lingers, the
// destination QEMU is shut down by the agent, and the agent takes the next migration.
func TestFaultSourceKilled(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	src := startVM(t, dir, "src", vmOpts{})
	startDst := func() *vm { return startVM(t, dir, "dst", vmOpts{incoming: true}) }
	agent := startFaultAgent(t, dir, agentSpec{}, "--tls-dir", certs, "--guest", "demo="+filepath.Join(dir, "dst.qmp"))
	var outcomes []string

	start := func(t *testing.T, bandwidth string) (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(mig2Bin, "migrate", "--json", "--bandwidth", bandwidth, "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.WaitDelay = 2 * time.Minute // the guard inherits stderr; it must be gone by then
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		return cmd, &stderr
	}
	after := func(t *testing.T, dst *vm, what string) {
		assertRunning(t, src)
		assertIntact(t, src)
		assertSourceSettled(t, src)
		assertNoGuard(t, src.QMPSocket)
		waitExited(t, dst, 30*time.Second) // the agent shut down the QEMU that waited in vain
		outcomes = append(outcomes, what)
	}

	t.Run("SIGTERM", func(t *testing.T) {
		dst := startDst()
		cmd, stderr := start(t, "10")
		waitNewMigration(t, src)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		if code := exitOf(err); code != exitCancelled {
			t.Fatalf("after SIGTERM mig2 exited %d, want %d:\n%s", code, exitCancelled, stderr)
		}
		t.Logf("stderr:\n%s", lastLines(stderr.String(), 4))
		for _, want := range []string{"cancelled by SIGTERM", "source guest is running"} {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr does not say %q:\n%s", want, stderr)
			}
		}
		after(t, dst, "SIGTERM: exit 6, cancelled cleanly")
	})
	t.Run("SIGKILL while RAM moves", func(t *testing.T) {
		dst := startDst()
		cmd, stderr := start(t, "10")
		waitNewMigration(t, src)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait() // returns once the guard, which shares mig2's stderr, has finished
		t.Logf("stderr:\n%s", lastLines(stderr.String(), 10))
		// The guard cancels; or, when the agent was quicker to shut its QEMU down on seeing
		// mig2's connection drop, the stream broke and QEMU had failed the migration already.
		report := stderr.String()
		if !strings.Contains(report, "mig2: guard:") || !strings.Contains(report, "the source guest is running") ||
			!(strings.Contains(report, "the migration was active: cancelled it") || strings.Contains(report, "the migration had already failed")) {
			t.Fatalf("no report from the guard:\n%s", report)
		}
		what := "SIGKILL mid-RAM: the guard cancelled"
		if !strings.Contains(report, "cancelled it") {
			what = "SIGKILL mid-RAM: the agent shut its QEMU first, the source QEMU failed the migration, the guard found it failed"
		}
		after(t, dst, what)
	})
	t.Run("SIGKILL at pre-switchover", func(t *testing.T) {
		dst := startDst()
		cmd, stderr := start(t, "100")
		// Freeze mig2 as soon as the migration runs, so the source QEMU reaches pre-switchover
		// with nobody to let it continue, then kill mig2 there.
		ctx := ctxT(t, 2*time.Minute)
		for {
			mi, err := qmp.QueryMigrate(ctx, src.mon)
			if err != nil {
				t.Fatal(err)
			}
			if mi.Status == qmp.MigrationSetup || (mi.Status == qmp.MigrationActive && mi.RAM != nil && mi.RAM.Transferred < 64<<20) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		_ = cmd.Process.Signal(syscall.SIGSTOP)
		for {
			mi, err := qmp.QueryMigrate(ctx, src.mon)
			if err != nil {
				t.Fatal(err)
			}
			if mi.Status == qmp.MigrationPreSwitchover {
				break
			}
			if mi.Status.Terminal() || mi.Status == qmp.MigrationDevice {
				t.Fatalf("the migration went on to %s before mig2 was frozen: the test could not set up the fault", mi.Status)
			}
			time.Sleep(50 * time.Millisecond)
		}
		st, err := qmp.QueryStatus(ctx, src.mon)
		if err != nil || st.Running {
			t.Fatalf("at pre-switchover the source guest should be paused: %+v %v", st, err)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		t.Logf("stderr:\n%s", lastLines(stderr.String(), 10))
		if !strings.Contains(stderr.String(), "the migration was pre-switchover: cancelled it") {
			t.Fatalf("no report from the guard about pre-switchover:\n%s", stderr)
		}
		after(t, dst, "SIGKILL at pre-switchover (guest paused): the guard cancelled and the guest resumed")
	})
	if t.Failed() {
		return
	}
	assertNextMigration(t, src, startDst, agent.uri(), certs, "demo")
	t.Logf("outcome: mig2 migrate interrupted: %s; source intact each time, destination cleaned up, next migration succeeded", strings.Join(outcomes, "; "))
}

// TestFaultDestinationDiskFull: the destination QEMU's stderr and the agent's log live on a
// tmpfs of 64 KiB that is full. The migration succeeds or fails clearly, in bounded time, and
// the guest is never lost; the destination host then takes another migration.
func TestFaultDestinationDiskFull(t *testing.T) {
	dir := shortDir(t)
	certs := pki(t, dir)
	full := filepath.Join(dir, "full")
	if err := os.Mkdir(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "mig2-fault-full", full).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { // registered first: runs after the QEMUs and the agent are gone
		if out, err := exec.Command("umount", "-l", full).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", full, err, out)
		}
	})
	filler, err := os.Create(filepath.Join(full, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := filler.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	filler.Close()

	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, full, "dst", vmOpts{incoming: true})
	agent := startFaultAgent(t, dir, agentSpec{log: filepath.Join(full, "agent.log")},
		"--log-level", "debug", "--tls-dir", certs, "--guest", "demo="+dst.QMPSocket, "--guest", "demo2="+filepath.Join(full, "dst2.qmp"))
	if _, err := os.Stat(agent.log); err != nil {
		t.Fatal(err)
	}
	r := mig2(t, ctxT(t, 4*time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", certs, "demo", agent.uri())
	if r.elapsed > 3*time.Minute {
		t.Fatalf("the migration took %s: it must not hang on a full disk", r.elapsed)
	}
	if b, _ := os.ReadFile(agent.log); len(b) > 8<<10 {
		t.Fatalf("the agent wrote %d bytes of log to a full 64 KiB tmpfs: the disk was not full", len(b))
	}
	var next *vm // the guest to migrate next, wherever it runs now
	var outcome string
	switch r.code {
	case 0:
		assertRunning(t, dst)
		assertIntact(t, dst)
		waitExited(t, src, 10*time.Second)
		next, outcome = dst, "migration succeeded, guest intact on the destination"
	case exitFailed:
		if !strings.Contains(r.stderr, "source guest is running") {
			t.Fatalf("the failure does not say where the guest runs:\n%s", r.stderr)
		}
		assertRunning(t, src)
		assertIntact(t, src)
		next, outcome = src, "migration failed clearly (exit 5), source intact"
	default:
		t.Fatalf("exit %d: want success, or a clear failure with the source running:\n%s", r.code, r.stderr)
	}
	// The destination host (its logs still on the full disk) takes another guest.
	assertNextMigration(t, next, func() *vm { return startVM(t, full, "dst2", vmOpts{incoming: true}) }, agent.uri(), certs, "demo2")
	t.Logf("outcome: destination logs on a full tmpfs: %s in %s; the destination took the next migration", outcome, r.elapsed.Round(time.Second))
}

// TestFaultCertificateExpired: a server certificate and a client certificate valid for a few
// seconds. `mig2 check` passes while they are valid; once they expire `mig2 migrate` is
// refused at connection time, before any RAM moves, with an error that says the certificate
// expired and whose; the source is intact and the destination takes the next migration.
func TestFaultCertificateExpired(t *testing.T) {
	dir := shortDir(t)
	src := startVM(t, dir, "src", vmOpts{})
	dst := startVM(t, dir, "dst", vmOpts{incoming: true})
	ca, err := testcerts.NewCA("mig2 fault CA")
	if err != nil {
		t.Fatal(err)
	}
	const clientDN = "CN=mig2-test-source,O=mig2 tests"
	good, shortServer, shortClient := filepath.Join(dir, "pki"), filepath.Join(dir, "pki-srv"), filepath.Join(dir, "pki-cli")
	if err := testcerts.WriteWithOptions(good, ca, testcerts.WriteOptions{ClientDN: clientDN}); err != nil {
		t.Fatal(err)
	}
	// Valid for long enough to start an agent and run two checks on a busy machine.
	expires := time.Now().Add(25 * time.Second).Truncate(time.Second)
	if err := testcerts.WriteWithOptions(shortServer, ca, testcerts.WriteOptions{ClientDN: clientDN, ServerNotAfter: expires}); err != nil {
		t.Fatal(err)
	}
	if err := testcerts.WriteWithOptions(shortClient, ca, testcerts.WriteOptions{ClientDN: clientDN, ClientNotAfter: expires}); err != nil {
		t.Fatal(err)
	}
	guestArg := "demo=" + dst.QMPSocket
	expiringAgent := startFaultAgent(t, dir, agentSpec{}, "--tls-dir", shortServer, "--guest", guestArg)
	agent := startFaultAgent(t, dir, agentSpec{}, "--tls-dir", good, "--guest", guestArg)

	cases := []struct {
		name, tlsDir string
		agent        *faultAgent
		want         string
	}{
		{"server certificate", good, expiringAgent, "certificate has expired"},
		{"client certificate", shortClient, agent, "certificate has expired"},
	}
	for _, c := range cases {
		r := mig2(t, ctxT(t, time.Minute), "check", "--qmp", src.QMPSocket, "--tls-dir", c.tlsDir, "demo", c.agent.uri())
		if r.code != 0 {
			t.Fatalf("%s: mig2 check before expiry: exit %d\n%s%s", c.name, r.code, r.stdout, r.stderr)
		}
	}
	if time.Now().After(expires) {
		t.Fatalf("the checks ended after the certificates expired (%s): the machine is too slow for this test's timing", expires)
	}
	time.Sleep(time.Until(expires) + 1500*time.Millisecond)
	for _, c := range cases {
		r := mig2(t, ctxT(t, time.Minute), "migrate", "--json", "--qmp", src.QMPSocket, "--tls-dir", c.tlsDir, "demo", c.agent.uri())
		if r.code != exitConnect {
			t.Fatalf("%s expired: exit %d, want %d (connection/TLS refused)\n%s", c.name, r.code, exitConnect, r.stderr)
		}
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s expired: the error does not say %q:\n%s", c.name, c.want, r.stderr)
		}
		assertNothingMoved(t, src)
	}
	assertRunning(t, src)
	assertIntact(t, src)
	// The destination QEMU was never touched: it still waits, and takes the next migration.
	st, err := qmp.QueryStatus(ctxT(t, 5*time.Second), dst.mon)
	if err != nil || st.Status != qmp.RunStateInMigrate {
		t.Fatalf("destination after the refusals: %v %v, want inmigrate", st.Status, err)
	}
	assertNextMigration(t, src, func() *vm { return dst }, agent.uri(), good, "demo")
	t.Logf("outcome: certificates expired between check and migrate: both refused before any RAM moved (exit %d, \"certificate has expired\"), source intact, next migration succeeded", exitConnect)
}
