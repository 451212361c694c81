package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mig2/mig2/test/guest"
	"github.com/mig2/mig2/test/integration/lab"
)

// labEnv is the two-host libvirt lab (test/integration/lab) with the guest image where
// libvirt's QEMU can read it.
type labEnv struct {
	l    *lab.Lab
	base string
	dir  string // world-writable: images, domain XML, serial sockets
	img  guest.Image
	logs string // where virsh's job statistics are kept (the bench's working directory)
	warm int    // bytes of host memory warmed before each migration (Config.WarmMiB)
}

func upLab(ctx context.Context, img guest.Image, logs string, warm int) (*labEnv, error) {
	for _, bin := range []string{"libvirtd", "virsh", "nsenter", "certtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("bench: %s is not installed (make deps installs libvirt-daemon-system, libvirt-clients, gnutls-bin), or run with BENCH_LIBVIRT=0", bin)
		}
	}
	base, err := os.MkdirTemp("/var/tmp", "m2bench")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	e := &labEnv{base: base, dir: filepath.Join(base, "vm"), logs: logs, warm: warm}
	uctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	if e.l, err = lab.Up(uctx, filepath.Join(base, "lab")); err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("bench: libvirt lab: %w", err)
	}
	if err := e.copyImage(img); err != nil {
		e.down()
		return nil, err
	}
	logf("libvirt lab up in %s: %s (%s), %s (%s)", time.Since(t0).Round(100*time.Millisecond),
		e.l.Hosts[0].FQDN, e.l.Hosts[0].IP, e.l.Hosts[1].FQDN, e.l.Hosts[1].IP)
	return e, nil
}

// copyImage gives libvirt's QEMU (user libvirt-qemu) a readable copy of the guest.
func (e *labEnv) copyImage(img guest.Image) error {
	if err := os.MkdirAll(e.dir, 0o777); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	os.Chmod(e.base, 0o755)
	os.Chmod(e.dir, 0o1777)
	for src, dst := range map[string]*string{img.Kernel: &e.img.Kernel, img.Initrd: &e.img.Initrd} {
		*dst = filepath.Join(e.dir, filepath.Base(src))
		if out, err := exec.Command("cp", src, *dst).CombinedOutput(); err != nil {
			return fmt.Errorf("bench: copy %s: %v %s", src, err, out)
		}
		os.Chmod(*dst, 0o644)
	}
	return nil
}

func (e *labEnv) down() {
	if e == nil {
		return
	}
	if e.l != nil {
		if err := e.l.Down(); err != nil {
			logf("bench: lab down: %v", err)
		}
	}
	os.RemoveAll(e.base)
}

// libvirtVersion is libvirtd's version as the lab's virsh reports it.
func (e *labEnv) libvirtVersion(ctx context.Context, fallback string) string {
	out, err := e.l.Hosts[0].Exec(ctx, "virsh", "-q", "version", "--daemon")
	if err != nil {
		return fallback
	}
	var parts []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "libvirt") || strings.Contains(l, "hypervisor") {
			parts = append(parts, strings.TrimSpace(l))
		}
	}
	if len(parts) == 0 {
		return fallback
	}
	return strings.Join(parts, "; ")
}

// labGuest is one case's guest as a libvirt domain moving between the lab's two hosts.
type labGuest struct {
	e      *labEnv
	c      Case
	name   string
	host   int       // where it runs
	serial [2]string // its serial socket on each host (one file system)
	xml    [2]string // its migratable XML with that host's serial socket
	con    *guest.Console
}

// domainXML is the test guest as a libvirt domain (TCG: type='qemu').
func (e *labEnv) domainXML(name, serial string, opts guest.Options) string {
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>%d</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>%s</kernel><initrd>%s</initrd><cmdline>%s</cmdline></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='unix'><source mode='bind' path='%s'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`, name, opts.MemMiB, e.img.Kernel, e.img.Initrd, opts.KernelCmdline(), serial)
}

// boot creates the case's domain on hosta and waits until the guest dirties its memory.
func (e *labEnv) boot(ctx context.Context, c Case, memMiB, touchMiB int) (*labGuest, error) {
	g := &labGuest{e: e, c: c, name: "bench"}
	for i, h := range e.l.Hosts {
		g.serial[i] = filepath.Join(e.dir, "serial-"+h.Name+".sock")
		os.Remove(g.serial[i])
	}
	opts := guest.Options{MemMiB: memMiB, TouchMiB: touchMiB, DirtyMiBps: c.Dirty, Fill: c.Fill, Heartbeat: 500 * time.Millisecond}
	file := filepath.Join(e.dir, "domain.xml")
	if err := os.WriteFile(file, []byte(e.domainXML(g.name, g.serial[0], opts)), 0o644); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	a := e.l.Hosts[0]
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if _, err := a.Exec(bctx, "virsh", "create", file); err != nil {
		return nil, fmt.Errorf("bench: lab guest: %w", err)
	}
	var err error
	if g.con, err = dialConsole(bctx, g.serial[0]); err == nil {
		if _, err = g.con.WaitReady(bctx); err == nil {
			_, err = g.con.WaitHeartbeat(bctx, 0)
		}
	}
	if err != nil {
		g.destroy()
		return nil, fmt.Errorf("bench: lab guest did not boot: %w", err)
	}
	out, err := a.Exec(bctx, "virsh", "dumpxml", "--migratable", g.name)
	if err != nil {
		g.destroy()
		return nil, err
	}
	for i, h := range e.l.Hosts {
		g.xml[i] = filepath.Join(e.dir, "migrate-to-"+h.Name+".xml")
		x := strings.ReplaceAll(string(out), g.serial[0], g.serial[i])
		if err := os.WriteFile(g.xml[i], []byte(x), 0o644); err != nil {
			g.destroy()
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	return g, nil
}

// dialConsole connects to a serial socket libvirt's QEMU may not have created yet.
func dialConsole(ctx context.Context, path string) (*guest.Console, error) {
	for {
		c, err := guest.DialConsole(ctx, path, nil)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (g *labGuest) destroy() {
	if g == nil {
		return
	}
	if g.con != nil {
		g.con.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range g.e.l.Hosts {
		_, _ = h.Exec(ctx, "bash", "-c", "virsh -q domstate "+g.name+" >/dev/null 2>&1 && virsh -q destroy "+g.name+" >/dev/null 2>&1; true")
	}
}

// suspend and resume pause the lab guest's vCPUs while the local contenders run.
func (g *labGuest) suspend(ctx context.Context) error {
	_, err := g.e.l.Hosts[g.host].Exec(ctx, "virsh", "-q", "suspend", g.name)
	return err
}

func (g *labGuest) resume(ctx context.Context) error {
	last, _ := g.con.LastHeartbeat()
	if _, err := g.e.l.Hosts[g.host].Exec(ctx, "virsh", "-q", "resume", g.name); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := g.con.WaitHeartbeat(wctx, last.Seq)
	return err
}

// virshArgs is the contender's command line on the source host.
func virshArgs(contender, xml, name, destURI string) []string {
	args := []string{"virsh", "migrate", "--live"}
	if contender == cVirshPar8 {
		args = append(args, "--parallel", "--parallel-connections", "8")
	}
	return append(args, "--xml", xml, name, destURI)
}

// migrate moves the lab guest to the other host with virsh. Total is virsh's wall time
// (libvirt starts the destination QEMU within it); the figures come from libvirt's completed
// job statistics. An error means the guest is lost.
func (g *labGuest) migrate(ctx context.Context, contender string, limit time.Duration) (Run, error) {
	src, dst := g.e.l.Hosts[g.host], g.e.l.Hosts[1-g.host]
	if g.e.warm > 0 {
		warmHostMemory(g.e.warm) // outside the clock, as for the local runs
	}
	r := Run{Case: g.c.String(), Contender: contender, Direction: src.Name + "->" + dst.Name, Started: time.Now()}
	last, _ := g.con.LastHeartbeat()
	vctx, cancelVirsh := context.WithCancel(ctx)
	defer cancelVirsh()
	cmd := src.Command(vctx, virshArgs(contender, g.xml[1-g.host], g.name, dst.URI)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.Status, r.Error = statusFailed, err.Error()
		return r, nil
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	capped := false
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case werr = <-done:
	case <-timer.C:
		capped = true
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, aerr := src.Exec(actx, "virsh", "-q", "domjobabort", g.name)
		cancel()
		select {
		case werr = <-done:
		case <-time.After(60 * time.Second):
			cancelVirsh() // kills virsh's process group
			werr = <-done
		}
		if aerr != nil {
			r.addNote("domjobabort: " + aerr.Error())
		}
	case <-ctx.Done():
		cancelVirsh()
		<-done
		return r, ctx.Err()
	}
	r.Total = time.Since(start)
	switch {
	case werr == nil:
		r.Status = statusCompleted
	case capped:
		r.Status, r.Error = statusNotConverged, fmt.Sprintf("not converged after %s: virsh domjobabort", limit.Round(time.Second))
	default:
		r.Status, r.Error = statusFailed, fmt.Sprintf("virsh migrate: %v: %s", werr, lastLine(out.String()))
	}
	// libvirt keeps the completed job's statistics on the destination after a success, on the
	// source after a failure.
	statsHost := src
	if r.Converged() {
		statsHost = dst
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if js, err := statsHost.Exec(sctx, "virsh", "domjobinfo", "--completed", "--rawstats", g.name); err == nil {
		fillJobStats(&r, parseJobStats(string(js)))
		_ = os.WriteFile(filepath.Join(g.e.logs, fmt.Sprintf("jobinfo-%s-%s.txt", contender, r.Started.Format("150405"))), js, 0o644)
	} else {
		r.addNote("no job statistics: " + err.Error())
	}
	return r, g.settle(ctx, &r, last)
}

// settle confirms where the lab guest runs after a run, by its heartbeat.
func (g *labGuest) settle(ctx context.Context, r *Run, last guest.Heartbeat) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if r.Converged() {
		con, err := dialConsole(wctx, g.serial[1-g.host])
		if err == nil {
			if _, err = con.WaitHeartbeat(wctx, last.Seq); err == nil {
				g.con.Close()
				g.con, g.host = con, 1-g.host
				return nil
			}
			con.Close()
		}
		r.Status, r.Error = statusFailed, "virsh reported success, but the destination guest does not run: "+err.Error()
	}
	src := g.e.l.Hosts[g.host]
	out, _ := src.Exec(wctx, "virsh", "-q", "domstate", g.name)
	if st := strings.TrimSpace(string(out)); st != "running" {
		r.addNote("source left " + st + "; the bench resumed it")
		if _, err := src.Exec(wctx, "virsh", "-q", "resume", g.name); err != nil {
			return fmt.Errorf("%w: the lab guest is %q on %s after %s: %v", errGuestLost, st, src.Name, r.Contender, err)
		}
	}
	if _, err := g.con.WaitHeartbeat(wctx, last.Seq); err != nil {
		return fmt.Errorf("%w: the lab guest does not run on %s after %s: %v", errGuestLost, src.Name, r.Contender, err)
	}
	return nil
}

// parseJobStats reads `virsh domjobinfo --rawstats`: "name=value" lines (older virsh prints
// "name: value" with units; both are accepted, units dropped).
func parseJobStats(text string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			if k, v, ok = strings.Cut(line, ":"); !ok {
				continue
			}
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}

// fillJobStats copies libvirt's job statistics (typed parameter names, as in
// virDomainGetJobStats) into the run.
func fillJobStats(r *Run, m map[string]string) {
	num := func(keys ...string) (int64, bool) {
		for _, k := range keys {
			if v, ok := m[k]; ok {
				f := strings.Fields(v)
				if len(f) == 0 {
					continue
				}
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n, true
				}
			}
		}
		return 0, false
	}
	if v, ok := num("time_elapsed"); ok {
		r.Migration = time.Duration(v) * time.Millisecond
	}
	if v, ok := num("downtime"); ok {
		r.Downtime = time.Duration(v) * time.Millisecond
	}
	if v, ok := num("setup_time"); ok {
		r.Setup = time.Duration(v) * time.Millisecond
	}
	if v, ok := num("memory_processed", "data_processed"); ok {
		r.Transferred = uint64(v)
	}
	r.Throughput = throughputOf(r.Transferred, r.Migration)
}

var (
	errNoLab   = errors.New("bench: no libvirt lab")
	errLabLost = errors.New("bench: lab guest lost")
)
