//go:build integration

package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// need fails the test loudly when the machine lacks what the lab needs, unless
// MIG2_ALLOW_SKIP=1.
func need(t *testing.T) {
	t.Helper()
	if err := preflight(); err != nil {
		if os.Getenv("MIG2_ALLOW_SKIP") == "1" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
}

// labDir is a short directory for the lab (unix socket paths inside it stay short).
func labDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/var/tmp", "mig2-lab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// up brings a lab up for the test and tears it down at its end, checking nothing is left.
func up(t *testing.T) *Lab {
	t.Helper()
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	l, err := Up(ctx, labDir(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab up in %v: %s=%s (PID 1 %d), %s=%s (PID 1 %d)", time.Since(start).Round(time.Millisecond),
		l.Hosts[0].Name, l.Hosts[0].IP, l.Hosts[0].initPID, l.Hosts[1].Name, l.Hosts[1].IP, l.Hosts[1].initPID)
	t.Cleanup(func() { down(t, l) })
	return l
}

// down stops the lab and checks that no process of it survives and its directory is gone.
func down(t *testing.T, l *Lab) {
	t.Helper()
	var nss []string
	for _, h := range l.Hosts {
		nss = append(nss, h.PIDNamespace())
	}
	start := time.Now()
	if err := l.Down(); err != nil {
		t.Errorf("Down: %v", err)
	}
	t.Logf("lab down in %v", time.Since(start).Round(time.Millisecond))
	if left := processesIn(nss, l.Dir); len(left) > 0 {
		t.Errorf("processes left after Down: %s", strings.Join(left, "; "))
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Down (%v)", l.Dir, err)
	}
	if err := l.Down(); err != nil {
		t.Errorf("a second Down: %v", err)
	}
}

// processesIn lists the machine's processes that are in one of the PID namespaces nss or name
// dir on their command line (the lab's unshare). Other labs (other tests) are not counted.
func processesIn(nss []string, dir string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		ns, err := os.Readlink(p + "/ns/pid")
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(p + "/cmdline")
		c := strings.ReplaceAll(string(cmd), "\x00", " ")
		mine := strings.Contains(c, dir)
		for _, n := range nss {
			mine = mine || n != "" && ns == n
		}
		if mine {
			out = append(out, fmt.Sprintf("%s %q", filepath.Base(p), c))
		}
	}
	return out
}

// TestLabUpDown: two hosts, each reaching the other's libvirtd over qemu+tcp and qemu+tls,
// with distinct names and host UUIDs, and nothing left after Down.
func TestLabUpDown(t *testing.T) {
	l := up(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	uuids := map[string]bool{}
	for i, h := range l.Hosts {
		peer := l.Hosts[1-i]
		for _, uri := range []string{peer.URI, peer.TLSURI} {
			out, err := h.Exec(ctx, "virsh", "-c", uri, "version")
			if err != nil {
				t.Fatalf("%s: virsh -c %s version: %v", h.Name, uri, err)
			}
			if !strings.Contains(string(out), "Running hypervisor: QEMU") {
				t.Errorf("%s: virsh -c %s version:\n%s", h.Name, uri, out)
			}
		}
		out, err := h.Exec(ctx, "virsh", "-c", peer.URI, "hostname")
		if got := strings.TrimSpace(string(out)); err != nil || got != peer.FQDN {
			t.Errorf("%s: the peer's hostname is %q (%v); want %q", h.Name, got, err, peer.FQDN)
		}
		out, err = h.Exec(ctx, "bash", "-c", "virsh capabilities | sed -n 's:.*<uuid>\\(.*\\)</uuid>.*:\\1:p' | head -1")
		if err != nil || len(strings.TrimSpace(string(out))) != 36 {
			t.Fatalf("%s: host uuid %q, %v", h.Name, out, err)
		}
		uuids[strings.TrimSpace(string(out))] = true
		// Isolation: the lab host sees only its own lab link and loopback.
		out, err = h.Exec(ctx, "ip", "-o", "link")
		if err != nil || strings.Count(string(out), "\n") != 2 || !strings.Contains(string(out), "lab0") {
			t.Errorf("%s: links:\n%s (%v)", h.Name, out, err)
		}
	}
	if len(uuids) != 2 {
		t.Errorf("the two hosts share a host UUID: %v", uuids)
	}
	// The machine's own network namespace has no lab link.
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), "lab0") {
		t.Errorf("the lab's link shows in the machine's network namespace:\n%s", out)
	}
}

// TestLabMigrate: the lab is fit for what the libvirt tests need: a small diskless guest
// migrates live from hosta to hostb over qemu+tls, peer to peer, with TLS and parallel
// connections on the migration stream, and back over qemu+tcp.
func TestLabMigrate(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if os.Getenv("MIG2_ALLOW_SKIP") == "1" {
			t.Skip("qemu-system-x86_64 is not installed")
		}
		t.Fatal("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
	}
	l := up(t)
	a, b := l.Hosts[0], l.Hosts[1]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	xml := `<domain type='qemu'>
  <name>lab1</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <console type='pty'/>
    <memballoon model='none'/>
  </devices>
</domain>`
	xmlPath := filepath.Join(a.Dir, "lab1.xml")
	if err := os.WriteFile(xmlPath, []byte(xml), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "virsh", "create", xmlPath); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := a.Exec(ctx, "virsh", "migrate", "--live", "--p2p", "--tls", "--parallel", "--parallel-connections", "2", "lab1", b.TLSURI); err != nil {
		t.Fatal(err)
	}
	t.Logf("hosta → hostb (p2p, tls, parallel 2) in %v", time.Since(start).Round(time.Millisecond))
	if out, err := b.Exec(ctx, "virsh", "domstate", "lab1"); err != nil || strings.TrimSpace(string(out)) != "running" {
		t.Fatalf("lab1 on hostb: %q, %v", out, err)
	}
	if out, _ := a.Exec(ctx, "virsh", "list", "--all", "--name"); strings.TrimSpace(string(out)) != "" {
		t.Errorf("lab1 still on hosta: %q", out)
	}
	start = time.Now()
	if _, err := b.Exec(ctx, "virsh", "migrate", "--live", "lab1", a.URI); err != nil {
		t.Fatal(err)
	}
	t.Logf("hostb → hosta (tcp) in %v", time.Since(start).Round(time.Millisecond))
	if out, err := a.Exec(ctx, "virsh", "domstate", "lab1"); err != nil || strings.TrimSpace(string(out)) != "running" {
		t.Fatalf("lab1 back on hosta: %q, %v", out, err)
	}
	// Down with a guest still running: it must leave no QEMU behind (checked by down).
}
