//go:build soak

package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mig2/mig2/test/guest"
	"github.com/mig2/mig2/test/integration/lab"
	"github.com/mig2/mig2/v2proto/testcerts"
)

// Results is the JSON the soak writes (SOAK_OUT); test/tools/reliability reads it.
type Results struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Host     string    `json:"host"`
	Runs     []*Run    `json:"runs"`
}

// Run is one series of migrations back and forth.
type Run struct {
	Name              string    `json:"name"` // "plain" (two QEMUs) or "lab" (two libvirt hosts)
	Requested         int       `json:"requested"`
	Migrations        int       `json:"migrations"` // attempted
	MigrationFailures int       `json:"migration_failures"`
	IntegrityFailures int       `json:"integrity_failures"`
	Seconds           float64   `json:"seconds"`
	Samples           []*Sample `json:"samples"`
}

// Sample is one migration and the receiving agent's figures right after it.
type Sample struct {
	N          int     `json:"n"`
	From       string  `json:"from"`
	To         string  `json:"to"`
	Exit       int     `json:"exit"`
	Intact     bool    `json:"intact"`
	Pages      int     `json:"pages"`
	BadPages   int     `json:"bad_pages"`
	Seconds    float64 `json:"seconds"` // mig2 migrate, start to exit
	Agent      string  `json:"agent"`   // the receiving agent
	RSSKiB     int64   `json:"rss_kib"` // its VmRSS from /proc/PID/status
	Goroutines int     `json:"goroutines"`
	GoHeapKiB  int64   `json:"go_heap_kib"` // its Go heap in use (the rest of RSS is C and runtime)
	Error      string  `json:"error,omitempty"`
}

var mig2Bin string

func TestMain(m *testing.M) {
	mig2Bin = os.Getenv("MIG2_BIN")
	if mig2Bin == "" {
		dir, err := os.MkdirTemp("", "mig2-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		mig2Bin = filepath.Join(dir, "mig2")
		if out, err := exec.Command("go", "build", "-o", mig2Bin, "github.com/mig2/mig2/cmd/mig2").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build mig2: %v\n%s", err, out)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a count", name, v)
	}
	return n
}

// TestSoak runs SOAK_PLAIN migrations between two plain QEMUs, then SOAK_LAB in the libvirt
// lab, and writes the results file even when a run fails.
func TestSoak(t *testing.T) {
	res := &Results{Started: time.Now().UTC()}
	res.Host, _ = os.Hostname()
	out := os.Getenv("SOAK_OUT")
	if out == "" {
		out = "results.json"
	}
	defer func() {
		res.Finished = time.Now().UTC()
		b, err := json.MarshalIndent(res, "", "  ")
		if err == nil {
			err = os.WriteFile(out, append(b, '\n'), 0o644)
		}
		if err != nil {
			t.Errorf("write %s: %v", out, err)
		}
		t.Logf("results written to %s", out)
	}()
	if n := envInt(t, "SOAK_PLAIN", 100); n > 0 {
		r := &Run{Name: "plain", Requested: n}
		res.Runs = append(res.Runs, r)
		t.Run("plain", func(t *testing.T) { soakPlain(t, r) })
	}
	if n := envInt(t, "SOAK_LAB", 40); n > 0 {
		r := &Run{Name: "lab", Requested: n}
		res.Runs = append(res.Runs, r)
		t.Run("lab", func(t *testing.T) { soakLab(t, r) })
	}
}

// finish logs the run's figures and fails the test on any failed or corrupted migration.
func (r *Run) finish(t *testing.T, start time.Time) {
	r.Seconds = time.Since(start).Seconds()
	for _, agent := range r.agents() {
		var rss, heap, gor []string
		for _, s := range r.Samples {
			if s.Agent == agent {
				rss = append(rss, strconv.FormatInt(s.RSSKiB, 10))
				heap = append(heap, strconv.FormatInt(s.GoHeapKiB, 10))
				gor = append(gor, strconv.Itoa(s.Goroutines))
			}
		}
		t.Logf("%s: rss_kib %s", agent, strings.Join(rss, " "))
		t.Logf("%s: go_heap_kib %s", agent, strings.Join(heap, " "))
		t.Logf("%s: goroutines %s", agent, strings.Join(gor, " "))
	}
	t.Logf("%s: %d migrations in %.0f s, %d failed, %d integrity failures", r.Name, r.Migrations, r.Seconds, r.MigrationFailures, r.IntegrityFailures)
	if r.IntegrityFailures > 0 || r.MigrationFailures > 0 || r.Migrations != r.Requested {
		t.Errorf("%s: %d of %d migrations done, %d failed, %d integrity failures", r.Name, r.Migrations, r.Requested, r.MigrationFailures, r.IntegrityFailures)
	}
}

func (r *Run) agents() []string {
	var names []string
	seen := map[string]bool{}
	for _, s := range r.Samples {
		if !seen[s.Agent] {
			seen[s.Agent] = true
			names = append(names, s.Agent)
		}
	}
	return names
}

// record adds one migration's sample, counting its failures.
func (r *Run) record(t *testing.T, s *Sample) {
	r.Migrations++
	r.Samples = append(r.Samples, s)
	if s.Exit != 0 {
		r.MigrationFailures++
	}
	if !s.Intact {
		r.IntegrityFailures++
	}
	t.Logf("#%d %s→%s exit %d in %.1fs, intact %v (%d pages, %d bad), %s rss_kib=%d go_heap_kib=%d goroutines=%d %s",
		s.N, s.From, s.To, s.Exit, s.Seconds, s.Intact, s.Pages, s.BadPages, s.Agent, s.RSSKiB, s.GoHeapKiB, s.Goroutines, s.Error)
}

// verify asks the guest on console c for a full verify and fills in the sample.
func verify(c *guest.Console, s *Sample) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := c.Verify(ctx)
	if err != nil {
		s.Error = strings.TrimSpace(s.Error + " verify: " + err.Error())
		return
	}
	s.Pages, s.BadPages = v.Pages, v.Bad
	s.Intact = v.OK() && v.Pages > 0
}

// soakPlain: guest "soak" between sides a and b, each with a long-lived agent that serves the
// QMP socket where a fresh incoming QEMU waits before each migration to it.
func soakPlain(t *testing.T, r *Run) {
	start := time.Now()
	defer func() { r.finish(t, start) }()
	dir, err := os.MkdirTemp("", "m2soak")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	certs := filepath.Join(dir, "pki")
	if err := testcerts.Write(certs, []string{"127.0.0.1", "localhost"}, "CN=mig2-soak,O=mig2 tests"); err != nil {
		t.Fatal(err)
	}
	sides := [2]string{"a", "b"}
	opts := func(side string, incoming bool) guest.Options {
		return guest.Options{Name: side, Dir: dir, MemMiB: 512, TouchMiB: 256, DirtyMiBps: 20, Incoming: incoming}
	}
	var agents [2]*agent
	for i, side := range sides {
		agents[i] = startPlainAgent(t, dir, "agent-"+side, "--tls-dir", certs, "--guest", "soak="+filepath.Join(dir, side+".qmp"))
	}
	cur := guest.StartTest(t, opts(sides[0], false))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	_, err = cur.Console().WaitReady(ctx)
	cancel()
	if err != nil {
		t.Fatalf("the guest did not boot: %v", err)
	}
	at := 0
	for n := 1; n <= r.Requested; n++ {
		to := 1 - at
		dst := guest.StartTest(t, opts(sides[to], true))
		s := &Sample{N: n, From: sides[at], To: sides[to], Agent: agents[to].name}
		code, elapsed, stderr := runMig2(5*time.Minute, "migrate", "--json", "--qmp", cur.QMPSocket, "--tls-dir", certs, "soak", "mig2://"+agents[to].addr)
		s.Exit, s.Seconds = code, elapsed.Seconds()
		if code == 0 {
			verify(dst.Console(), s)
			// The stale source is shut down by mig2.
			select {
			case <-cur.Exited():
			case <-time.After(15 * time.Second):
				s.Error += " the stale source still runs 15 s after the migration"
			}
			_ = cur.Kill()
			cur, at = dst, to
		} else {
			s.Error = lastLine(stderr)
			_ = dst.Kill()
			verify(cur.Console(), s) // the source must still be intact
		}
		if err := agents[to].stats(s); err != nil {
			s.Error += " stats: " + err.Error()
		}
		r.record(t, s)
	}
}

// soakLab: domain "soak" between the lab's two libvirt hosts, an agent --libvirt on each.
func soakLab(t *testing.T, r *Run) {
	start := time.Now()
	defer func() { r.finish(t, start) }()
	img := guest.Require(t, guest.Options{})
	base, err := os.MkdirTemp("/var/tmp", "m2soak")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	l, err := lab.Up(ctx, filepath.Join(base, "lab"))
	cancel()
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	// QEMU runs as libvirt-qemu: a world-readable copy of the guest, sockets in a sticky dir.
	dir := filepath.Join(base, "vm")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o755)
	os.Chmod(dir, 0o1777)
	kernel, initrd := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
	for src, dst := range map[string]string{img.Kernel: kernel, img.Initrd: initrd} {
		if out, err := exec.Command("cp", src, dst).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v %s", src, err, out)
		}
		os.Chmod(dst, 0o644)
	}
	serial := func(h *lab.Host) string { return filepath.Join(dir, "soak-"+h.Name+".sock") }
	var agents [2]*agent
	for i, h := range l.Hosts {
		agents[i] = startLabAgent(t, h, filepath.Join(dir, "agent-"+h.Name+".log"))
	}
	a := l.Hosts[0]
	xmlPath := filepath.Join(dir, "soak.xml")
	if err := os.WriteFile(xmlPath, []byte(domainXML(kernel, initrd, serial(a))), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := a.Exec(ctxFor(t, time.Minute), "virsh", "create", xmlPath); err != nil {
		t.Fatalf("virsh create: %v %s", err, out)
	}
	con := dialConsole(t, serial(a))
	bootCtx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	_, err = con.WaitReady(bootCtx)
	cancel()
	if err != nil {
		t.Fatalf("the guest did not boot: %v", err)
	}
	defer func() { con.Close() }()
	at := 0
	for n := 1; n <= r.Requested; n++ {
		from, to := l.Hosts[at], l.Hosts[1-at]
		s := &Sample{N: n, From: from.Name, To: to.Name, Agent: agents[1-at].name}
		x, err := from.Exec(ctxFor(t, 30*time.Second), "virsh", "dumpxml", "--migratable", "soak")
		if err != nil {
			t.Fatal(err)
		}
		destXML := filepath.Join(dir, "soak-to-"+to.Name+".xml")
		if err := os.WriteFile(destXML, []byte(strings.ReplaceAll(string(x), serial(from), serial(to))), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := from.Command(ctxFor(t, 5*time.Minute), mig2Bin, "migrate", "--json", "--live", "--parallel", "--xml", destXML, "soak", to.TLSURI)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		t0 := time.Now()
		s.Exit = exitOf(cmd.Run())
		s.Seconds = time.Since(t0).Seconds()
		if s.Exit == 0 {
			con.Close()
			con = dialConsole(t, serial(to))
			at = 1 - at
		} else {
			s.Error = lastLine(stderr.String())
		}
		verify(con, s)
		if err := statsOf(s, agents); err != nil {
			s.Error += " stats: " + err.Error()
		}
		r.record(t, s)
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// domainXML is the test guest as a libvirt domain (as test/integration's lab tests build it).
func domainXML(kernel, initrd, serial string) string {
	opts := guest.Options{TouchMiB: 128, DirtyMiBps: 10}
	return fmt.Sprintf(`<domain type='qemu'>
  <name>soak</name>
  <memory unit='MiB'>384</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>%s</kernel><initrd>%s</initrd><cmdline>%s</cmdline></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='unix'><source mode='bind' path='%s'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>`, kernel, initrd, opts.KernelCmdline(), serial)
}

func dialConsole(t *testing.T, path string) *guest.Console {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		c, err := guest.DialConsole(ctx, path, nil)
		if err == nil {
			return c
		}
		if ctx.Err() != nil {
			t.Fatalf("console %s: %v", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runMig2 runs mig2 to completion and returns its exit code, run time and stderr.
func runMig2(limit time.Duration, args ...string) (int, time.Duration, string) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, mig2Bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	return exitOf(err), time.Since(t0), stderr.String()
}

func exitOf(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// agent is a `mig2 agent` the soak samples: pid is the agent itself (inside the lab, the child
// of nsenter).
type agent struct {
	name, addr, log string
	cmd             *exec.Cmd
	pid             int
	exited          chan struct{}
}

// startPlainAgent runs `mig2 agent --listen 127.0.0.1:PORT args...` until the test ends.
func startPlainAgent(t *testing.T, dir, name string, args ...string) *agent {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	a := &agent{name: name, addr: addr, log: filepath.Join(dir, name+".log")}
	a.cmd = exec.Command(mig2Bin, append([]string{"agent", "--listen", addr}, args...)...)
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	a.start(t, a.cmd)
	a.pid = a.cmd.Process.Pid
	a.waitListening(t)
	return a
}

// startLabAgent runs `mig2 agent --libvirt` inside lab host h until the test ends.
func startLabAgent(t *testing.T, h *lab.Host, log string) *agent {
	t.Helper()
	a := &agent{name: "agent-" + h.Name, addr: h.IP + ":16520", log: log}
	cmd := h.Command(context.Background(), mig2Bin, "agent", "--listen", a.addr, "--tls-dir", "/etc/pki/qemu", "--libvirt", "qemu:///system")
	a.start(t, cmd)
	for i := 0; i < 100 && a.pid == 0; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			a.pid, _ = strconv.Atoi(f[0])
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if a.pid == 0 {
		t.Fatalf("the agent on %s did not start", h.Name)
	}
	a.waitListening(t)
	return a
}

func (a *agent) start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	logf, err := os.Create(a.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	a.cmd, a.exited = cmd, make(chan struct{})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); logf.Close(); close(a.exited) }()
	t.Cleanup(func() {
		if a.pid > 0 {
			_ = syscall.Kill(a.pid, syscall.SIGTERM)
		}
		select {
		case <-a.exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-a.exited
			t.Errorf("%s did not stop within 15 s of SIGTERM", a.name)
		}
		if t.Failed() {
			b, _ := os.ReadFile(a.log)
			t.Logf("%s log (last lines):\n%s", a.name, tail(string(b), 30))
		}
	})
}

func (a *agent) waitListening(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(a.logText(), "mig2 agent listening") {
		select {
		case <-a.exited:
			t.Fatalf("%s exited at start:\n%s", a.name, a.logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen after 20 s:\n%s", a.name, a.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (a *agent) logText() string {
	b, _ := os.ReadFile(a.log)
	return string(b)
}

var statsLine = regexp.MustCompile(`agent: stats goroutines=(\d+) rss_kib=(-?\d+)(?: go_heap_kib=(\d+))?`)

// stats reads the agent's VmRSS from /proc and asks it (SIGUSR1) for its goroutine count and Go
// heap, into s.
func (a *agent) stats(s *Sample) error {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.pid))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.RSSKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	before := len(statsLine.FindAllString(a.logText(), -1))
	if err := syscall.Kill(a.pid, syscall.SIGUSR1); err != nil {
		return err
	}
	for i := 0; i < 100; i++ {
		if m := statsLine.FindAllStringSubmatch(a.logText(), -1); len(m) > before {
			last := m[len(m)-1]
			s.Goroutines, _ = strconv.Atoi(last[1])
			s.GoHeapKiB, _ = strconv.ParseInt(last[3], 10, 64)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("no stats line within 5 s of SIGUSR1")
}

// statsOf samples the agent named s.Agent among agents, into s.
func statsOf(s *Sample, agents [2]*agent) error {
	for _, x := range agents {
		if x.name == s.Agent {
			return x.stats(s)
		}
	}
	return fmt.Errorf("no agent %s", s.Agent)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
