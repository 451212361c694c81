//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mig2/mig2/test/guest"
	"github.com/mig2/mig2/test/integration/lab"
)

// libvirtLab is the two-host libvirt lab with the test guest image readable by QEMU there.
type libvirtLab struct {
	*lab.Lab
	a, b  *lab.Host
	dir   string // world-writable: QEMU (libvirt-qemu) binds the serial sockets here
	image guest.Image
}

func upLab(t *testing.T) *libvirtLab {
	t.Helper()
	img := guest.Require(t, guest.Options{})
	for _, bin := range []string{"libvirtd", "virsh", "nsenter", "certtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("MIG2_ALLOW_SKIP") == "1" {
				t.Skipf("%s is not installed", bin)
			}
			t.Fatalf("%s is not installed (make test installs libvirt-daemon-system, libvirt-clients, gnutls-bin)", bin)
		}
	}
	base, err := os.MkdirTemp("/var/tmp", "m2lab")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("MIG2_LAB_KEEP") == "1" { // for debugging: the hosts' libvirtd logs stay
		t.Logf("MIG2_LAB_KEEP=1: the lab stays in %s", base)
	} else {
		t.Cleanup(func() { os.RemoveAll(base) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, filepath.Join(base, "lab"))
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	dir := filepath.Join(base, "vm")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o755)
	os.Chmod(dir, 0o1777)
	ll := &libvirtLab{Lab: l, a: l.Hosts[0], b: l.Hosts[1], dir: dir}
	// QEMU runs as libvirt-qemu: give it a readable copy of the guest.
	for src, dst := range map[string]*string{img.Kernel: &ll.image.Kernel, img.Initrd: &ll.image.Initrd} {
		*dst = filepath.Join(dir, filepath.Base(src))
		if out, err := exec.Command("cp", src, *dst).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v %s", src, err, out)
		}
		os.Chmod(*dst, 0o644)
	}
	return ll
}

// domainXML is the test guest as a libvirt domain; extra goes inside <devices>, cmdline is a
// <qemu:commandline> -device argument ("" for none).
func (l *libvirtLab) domainXML(name, serial, extra, cmdline string) string {
	cl := ""
	if cmdline != "" {
		cl = "<qemu:commandline><qemu:arg value='-device'/><qemu:arg value='" + cmdline + "'/></qemu:commandline>"
	}
	opts := guest.Options{TouchMiB: 128, DirtyMiBps: 10}
	return fmt.Sprintf(`<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>%s</name>
  <memory unit='MiB'>384</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>%s</kernel><initrd>%s</initrd><cmdline>%s</cmdline></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='unix'><source mode='bind' path='%s'/><target port='0'/></serial>
    <memballoon model='none'/>
    %s
  </devices>
  %s
</domain>`, name, l.image.Kernel, l.image.Initrd, opts.KernelCmdline(), serial, extra, cl)
}

func (l *libvirtLab) write(t *testing.T, name, content string) string {
	p := filepath.Join(l.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startDomain creates a transient domain on host h and returns its console, once the guest runs.
func (l *libvirtLab) startDomain(t *testing.T, h *lab.Host, name, xml, serial string) *guest.Console {
	t.Helper()
	ctx := ctxT(t, 90*time.Second)
	if out, err := h.Exec(ctx, "virsh", "create", l.write(t, name+".xml", xml)); err != nil {
		t.Fatalf("virsh create %s: %v: %s", name, err, out)
	}
	c := l.console(t, serial)
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatalf("%s did not boot: %v\n%s", name, err, strings.Join(c.Lines(), "\n"))
	}
	return c
}

func (l *libvirtLab) console(t *testing.T, path string) *guest.Console {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	var c *guest.Console
	for {
		var err error
		if c, err = guest.DialConsole(ctx, path, nil); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("console %s: %v", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// inHost runs mig2 inside a lab host.
func inHost(t *testing.T, h *lab.Host, args ...string) run {
	t.Helper()
	cmd := h.Command(ctxT(t, 3*time.Minute), append([]string{mig2Bin}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := run{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start), code: exitOf(err)}
	r.parse()
	t.Logf("[%s] mig2 %s → exit %d in %s\nstdout:\n%s\nstderr:\n%s", h.Name, strings.Join(args, " "), r.code,
		r.elapsed.Round(time.Millisecond), lastLines(r.stdout, 5), lastLines(r.stderr, 15))
	return r
}

func domstate(t *testing.T, h *lab.Host, name string) string {
	out, _ := h.Exec(ctxT(t, 20*time.Second), "virsh", "domstate", name)
	return strings.TrimSpace(string(out))
}

// TestLibvirt runs mig2's libvirt path between two real libvirtd hosts with real TLS: the
// agent with --libvirt and the qemu hook (policy require-v2) on the destination.
func TestLibvirt(t *testing.T) {
	l := upLab(t)
	a, b := l.a, l.b

	// The destination: the hook first (libvirtd reads hooks at start), then the agent.
	if out, err := b.Exec(ctxT(t, 20*time.Second), mig2Bin, "hook", "install"); err != nil {
		t.Fatalf("hook install: %v %s", err, out)
	}
	if err := b.RestartLibvirtd(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	agentLog, err := os.Create(filepath.Join(l.dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	agentCtx, stopAgent := context.WithCancel(context.Background())
	agent := b.Command(agentCtx, mig2Bin, "agent", "--listen", b.IP+":16520", "--tls-dir", "/etc/pki/qemu", "--libvirt", "qemu:///system", "--allow-skip-device-check")
	agent.Stdout, agent.Stderr = agentLog, agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopAgent()
		agent.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(agentLog.Name())
			t.Logf("agent log:\n%s", b)
		}
	})
	waitFile(t, filepath.Join("/proc", fmt.Sprint(agent.Process.Pid)))
	time.Sleep(time.Second) // the agent connects to libvirtd and listens

	srcSerial := filepath.Join(l.dir, "web-a.sock")
	dstSerial := filepath.Join(l.dir, "web-b.sock")
	xml := l.domainXML("web", srcSerial, "", "")
	src := l.startDomain(t, a, "web", xml, srcSerial)
	// The destination's XML is the source's migratable XML with one host-side detail changed:
	// its serial socket's path (both hosts share this filesystem).
	webXML := migratableXML(t, a, "web")
	dstXML := l.write(t, "web-dst.xml", strings.ReplaceAll(webXML, srcSerial, dstSerial))

	t.Run("virsh compatibility", func(t *testing.T) {
		want, _ := a.Exec(ctxT(t, 20*time.Second), "virsh", "list", "--all")
		got := inHost(t, a, "list", "--all")
		if got.code != 0 || got.stdout != string(want) {
			t.Fatalf("mig2 list --all printed %q, virsh list --all %q", got.stdout, want)
		}
		vcmd := a.Command(ctxT(t, 20*time.Second), "virsh", "migrate", "--bogus", "web", b.TLSURI)
		var verr strings.Builder
		vcmd.Stderr = &verr
		vexit := exitOf(vcmd.Run())
		m := inHost(t, a, "migrate", "--bogus", "web", b.TLSURI)
		if m.code != vexit || m.stderr != verr.String() {
			t.Fatalf("mig2 migrate --bogus: exit %d %q; virsh: exit %d %q", m.code, m.stderr, vexit, verr.String())
		}
	})

	t.Run("plain virsh migrate is refused by require-v2", func(t *testing.T) {
		out, err := a.Exec(ctxT(t, 90*time.Second), "virsh", "migrate", "--live", "--p2p", "--tls", "--parallel", "--xml", dstXML, "web", b.TLSURI)
		if err == nil {
			t.Fatalf("plain virsh migrate went through:\n%s", out)
		}
		if !strings.Contains(string(out), "not negotiated") || !strings.Contains(string(out), "mig2 migrate") {
			t.Fatalf("the refusal does not carry mig2's message:\n%s", out)
		}
		if st := domstate(t, a, "web"); st != "running" {
			t.Fatalf("source after the refusal: %s", st)
		}
	})

	t.Run("device only on the source through qemu:commandline", func(t *testing.T) {
		// The source gets a device libvirt does not model; the destination's XML lacks it.
		qs := filepath.Join(l.dir, "q-a.sock")
		l.startDomain(t, a, "qcl", l.domainXML("qcl", qs, "", "virtio-rng-pci,id=qrng0,bus=pcie.0,addr=0x9"), qs)
		qxml := migratableXML(t, a, "qcl")
		i, j := strings.Index(qxml, "<qemu:commandline>"), strings.Index(qxml, "</qemu:commandline>")
		if i < 0 || j < 0 {
			t.Fatalf("no <qemu:commandline> in the source's XML:\n%s", qxml)
		}
		qxml = qxml[:i] + qxml[j+len("</qemu:commandline>"):]
		qdst := l.write(t, "qcl-dst.xml", strings.ReplaceAll(qxml, qs, filepath.Join(l.dir, "q-b.sock")))
		r := inHost(t, a, "migrate", "--live", "--parallel", "--xml", qdst, "qcl", b.TLSURI)
		if r.code != exitIncompatible || !strings.Contains(r.stderr, "qrng0") || !strings.Contains(r.stderr, "missing on the destination") {
			t.Fatalf("exit %d, want %d with a diff naming qrng0", r.code, exitIncompatible)
		}
		if st := domstate(t, a, "qcl"); st != "running" {
			t.Fatalf("source after the refusal: %s", st)
		}
		if out, _ := a.Exec(ctxT(t, 20*time.Second), "virsh", "domjobinfo", "--completed", "qcl"); strings.Contains(string(out), "Data processed") {
			t.Fatalf("a migration job ran:\n%s", out)
		}

		// With the check skipped on purpose (and allowed by the agent), libvirt copies the RAM
		// and the destination QEMU refuses the device state: the source keeps running and the
		// error carries the destination QEMU's own words from its libvirt log.
		r = inHost(t, a, "migrate", "--live", "--parallel", "--skip-device-check", "--xml", qdst, "qcl", b.TLSURI)
		if r.code != exitFailed || !strings.Contains(r.stderr, "virtio-rng") || !strings.Contains(r.stderr, "destination QEMU said") {
			t.Fatalf("exit %d, want %d with the destination's words about virtio-rng", r.code, exitFailed)
		}
		if st := domstate(t, a, "qcl"); st != "running" {
			t.Fatalf("source after the failed migration: %s", st)
		}

		// --deep: a device hot-plugged through QMP behind libvirt's back is in no XML; the QOM
		// tree read through QMP pass-through finds it before any RAM moves.
		if out, err := a.Exec(ctxT(t, 20*time.Second), "virsh", "qemu-monitor-command", "qcl",
			`{"execute":"device_add","arguments":{"driver":"usb-tablet","id":"hot0"}}`); err != nil || strings.Contains(string(out), "error") {
			t.Fatalf("hot-plug: %v %s", err, out)
		}
		full := l.write(t, "qcl-full.xml", strings.ReplaceAll(migratableXML(t, a, "qcl"), qs, filepath.Join(l.dir, "q-b.sock")))
		r = inHost(t, a, "migrate", "--deep", "--live", "--parallel", "--xml", full, "qcl", b.TLSURI)
		if r.code != exitIncompatible || !strings.Contains(r.stderr, "qom:hot0") {
			t.Fatalf("--deep: exit %d, want %d with a diff naming qom:hot0", r.code, exitIncompatible)
		}
	})

	t.Run("cancel mid-migration", func(t *testing.T) {
		cmd := a.Command(ctxT(t, 2*time.Minute), mig2Bin, "migrate", "--json", "--live", "--parallel", "--bandwidth", "4", "--xml", dstXML, "web", b.TLSURI)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, _ := a.Exec(ctxT(t, 10*time.Second), "virsh", "domjobinfo", "web")
			if strings.Contains(string(out), "Data processed") && !strings.Contains(string(out), "Data processed:   0") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the migration never started moving data:\n%s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// SIGINT to mig2 itself (nsenter's child), as a user's Ctrl-C would reach it.
		_ = syscall.Kill(childOf(t, cmd.Process.Pid), syscall.SIGINT)
		err := cmd.Wait()
		if code := exitOf(err); code != exitCancelled {
			t.Fatalf("after SIGINT: exit %d, want %d\n%s", code, exitCancelled, stderr.String())
		}
		if st := domstate(t, a, "web"); st != "running" {
			t.Fatalf("source after the cancel: %s", st)
		}
		if st := domstate(t, b, "web"); st == "running" {
			t.Fatal("the guest runs on both hosts")
		}
	})

	t.Run("mig2 check", func(t *testing.T) {
		ok := inHost(t, a, "check", "--xml", dstXML, "web", b.TLSURI)
		if ok.code != 0 || !strings.Contains(ok.stdout, "compatible") || strings.Contains(ok.stdout, "NOT compatible") {
			t.Fatalf("check of a compatible migration: exit %d\n%s", ok.code, ok.stdout)
		}
		x := strings.ReplaceAll(webXML, srcSerial, dstSerial)
		x = strings.Replace(x, "<domain ", "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' ", 1)
		x = strings.Replace(x, "</domain>", "<qemu:commandline><qemu:arg value='-device'/><qemu:arg value='virtio-balloon-pci,id=xcheck0,bus=pcie.0,addr=0x9'/></qemu:commandline></domain>", 1)
		bad := inHost(t, a, "check", "--xml", l.write(t, "web-check.xml", x), "web", b.TLSURI)
		if bad.code != exitIncompatible || !strings.Contains(bad.stdout, "NOT compatible") || !strings.Contains(bad.stdout, "xcheck0") {
			t.Fatalf("check of an incompatible migration: exit %d\n%s", bad.code, bad.stdout)
		}
		if st := domstate(t, a, "web"); st != "running" {
			t.Fatalf("web after mig2 check: %s", st)
		}
	})

	t.Run("extra device only on the destination", func(t *testing.T) {
		x := strings.ReplaceAll(webXML, srcSerial, dstSerial)
		if !strings.Contains(x, "xmlns:qemu=") {
			x = strings.Replace(x, "<domain ", "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' ", 1)
		}
		x = strings.Replace(x, "</domain>", "<qemu:commandline><qemu:arg value='-device'/><qemu:arg value='virtio-balloon-pci,id=xballoon0,bus=pcie.0,addr=0x9'/></qemu:commandline></domain>", 1)
		extra := l.write(t, "web-extra.xml", x)
		r := inHost(t, a, "migrate", "--live", "--parallel", "--xml", extra, "web", b.TLSURI)
		if r.code != exitIncompatible || !strings.Contains(r.stderr, "xballoon0") || !strings.Contains(r.stderr, "extra on the destination") {
			t.Fatalf("exit %d, want %d with a diff naming xballoon0", r.code, exitIncompatible)
		}
		if st := domstate(t, a, "web"); st != "running" {
			t.Fatalf("source after the refusal: %s", st)
		}
	})

	t.Run("mig2 migrate --live --parallel", func(t *testing.T) {
		r := inHost(t, a, "migrate", "--json", "--deep", "--live", "--parallel", "--parallel-connections", "4", "--xml", dstXML, "web", b.TLSURI)
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		agreed, _ := r.summary["agreed"].(map[string]any)
		if agreed == nil || agreed["channels"] == nil {
			t.Fatalf("no agreed set in the summary: %v", r.summary)
		}
		channels := fmt.Sprint(agreed["channels"])
		// libvirt set exactly the negotiated channels on the source QEMU (its own log of the job).
		logb, _ := a.Exec(ctxT(t, 20*time.Second), "cat", "/var/log/libvirt/libvirtd.log")
		if !strings.Contains(string(logb), `"multifd-channels":`+channels) {
			t.Fatalf("libvirt's log does not show multifd-channels %s", channels)
		}
		if st := domstate(t, b, "web"); st != "running" {
			t.Fatalf("web on the destination: %s", st)
		}
		dst := l.console(t, dstSerial)
		res, err := dst.Verify(ctxT(t, 60*time.Second))
		if err != nil || !res.OK() || res.Pages == 0 {
			t.Fatalf("destination memory: %+v %v", res, err)
		}
		t.Logf("web on hostb: memory verified intact, %d pages; %s channels agreed", res.Pages, channels)
		_ = src
	})

	t.Run("v1: libvirt's own single-stream flow, back to hosta", func(t *testing.T) {
		// hosta runs no agent and no hook: v1 needs neither.
		back := l.write(t, "web-back.xml", webXML)
		r := inHost(t, b, "migrate", "--json", "--protocol", "v1", "--live", "--p2p", "--tls", "--xml", back, "web", a.TLSURI)
		if r.code != 0 || r.summary["protocol"] != "v1" {
			t.Fatalf("exit %d, summary %v", r.code, r.summary)
		}
		if !strings.Contains(r.stderr, "NOT compared") {
			t.Fatalf("no warning that v1 compares nothing:\n%s", r.stderr)
		}
		if st := domstate(t, a, "web"); st != "running" {
			t.Fatalf("web on hosta: %s", st)
		}
		back2 := l.console(t, srcSerial)
		res, err := back2.Verify(ctxT(t, 60*time.Second))
		if err != nil || !res.OK() || res.Pages == 0 {
			t.Fatalf("memory after the v1 migration: %+v %v", res, err)
		}
	})
}

// migratableXML is `virsh dumpxml --migratable` of a domain on host h.
func migratableXML(t *testing.T, h *lab.Host, name string) string {
	t.Helper()
	out, err := h.Exec(ctxT(t, 20*time.Second), "virsh", "dumpxml", "--migratable", name)
	if err != nil {
		t.Fatalf("dumpxml %s: %v", name, err)
	}
	return string(out)
}

// childOf is the first child of pid (nsenter forks the command it runs into the namespaces).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			var c int
			fmt.Sscan(f[0], &c)
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("process %d has no child", pid)
	return 0
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
}
