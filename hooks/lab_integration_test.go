//go:build integration

package hooks_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mig2/mig2/hooks"
	"github.com/mig2/mig2/test/integration/lab"
)

// TestHookInRealLibvirt installs package hooks (internal/testhook, behind a wrapper script, as
// `mig2 hook install` will) as hostb's /etc/libvirt/hooks/qemu in a two-host lab and migrates a
// small guest from hosta with plain `virsh migrate`, answering the hook from this test:
// a refusal reaches the source user in mig2's words and the guest keeps running on hosta; an
// allowed migration goes through; with the agent down, each policy does what it says, fast.
func TestHookInRealLibvirt(t *testing.T) {
	for _, p := range []string{"unshare", "/usr/sbin/libvirtd", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(p); err != nil || os.Geteuid() != 0 {
			if os.Getenv("MIG2_ALLOW_SKIP") == "1" {
				t.Skipf("needs root and %s", p)
			}
			t.Fatalf("needs root and %s (%v)", p, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	bin := filepath.Join(t.TempDir(), "testhook")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./internal/testhook").CombinedOutput(); err != nil {
		t.Fatalf("build the test hook: %v\n%s", err, out)
	}
	dir, err := os.MkdirTemp("/var/tmp", "mig2-hooklab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := lab.Up(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	a, b := l.Hosts[0], l.Hosts[1]

	sock := filepath.Join(dir, "hook.sock")
	policy := filepath.Join(dir, "policy")
	setPolicy := func(p string) {
		if err := os.WriteFile(policy, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setPolicy("allow")
	wrapper := "#!/bin/sh\nexec " + bin + " --socket " + sock + ` --when-agent-down "$(cat ` + policy + `)" "$0" "$@"` + "\n"
	install := b.Command(ctx, "sh", "-c", "mkdir -p /etc/libvirt/hooks && cat > /etc/libvirt/hooks/qemu && chmod 755 /etc/libvirt/hooks/qemu")
	install.Stdin = strings.NewReader(wrapper)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("install the hook: %v: %s", err, out)
	}
	start := time.Now()
	if err := b.RestartLibvirtd(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("hostb's libvirtd restarted in %v", time.Since(start).Round(time.Millisecond))

	// The agent: answers from `answer`, records what it was asked.
	var mu sync.Mutex
	var asked []hooks.Request
	answer := hooks.Response{}
	agent := func(t *testing.T) (stop func()) {
		ln, err := hooks.ListenUnix(sock)
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- (&hooks.Server{Handler: func(ctx context.Context, req hooks.Request) hooks.Response {
				mu.Lock()
				defer mu.Unlock()
				asked = append(asked, req)
				return answer
			}}).Serve(sctx, ln)
		}()
		return func() {
			scancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("agent: %v", err)
			}
		}
	}

	xml := filepath.Join(a.Dir, "lab1.xml")
	if err := os.WriteFile(xml, []byte(`<domain type='qemu'>
  <name>lab1</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <memballoon model='none'/>
  </devices>
</domain>`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "virsh", "create", xml); err != nil {
		t.Fatal(err)
	}
	migrate := func() (string, time.Duration, error) {
		start := time.Now()
		out, err := a.Exec(ctx, "virsh", "migrate", "--live", "--p2p", "lab1", b.TLSURI)
		return string(out), time.Since(start), err
	}
	state := func(h *lab.Host) string {
		out, _ := h.Exec(ctx, "virsh", "domstate", "lab1")
		return strings.TrimSpace(string(out))
	}
	back := func() {
		if _, err := b.Exec(ctx, "virsh", "migrate", "--live", "--p2p", "lab1", a.URI); err != nil {
			t.Fatalf("migrate back to hosta: %v", err)
		}
	}

	t.Run("agent refuses", func(t *testing.T) {
		stop := agent(t)
		defer stop()
		mu.Lock()
		answer = hooks.Response{Allow: false, Reason: "lab1 was not negotiated with mig2 (policy require-v2): use `mig2 migrate`"}
		mu.Unlock()
		out, took, err := migrate()
		want := "Hook script execution failed: internal error: Child process (LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /etc/libvirt/hooks/qemu lab1 migrate begin -) unexpected exit status 1: mig2: lab1 was not negotiated with mig2 (policy require-v2): use `mig2 migrate`\n"
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("virsh migrate = %v after %v:\n%s\nwant the hook's refusal:\n%s", err, took, out, want)
		}
		t.Logf("refused in %v", took.Round(time.Millisecond))
		if s := state(a); s != "running" {
			t.Errorf("lab1 on hosta is %q after the refusal; want running", s)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(asked) != 1 || asked[0].Op != hooks.ReqMigrateBegin || asked[0].Domain != "lab1" ||
			len(asked[0].UUID) != 36 || !strings.Contains(asked[0].XML, "<name>lab1</name>") {
			t.Errorf("the agent was asked %+v", asked)
		}
		asked = nil
	})

	t.Run("agent allows", func(t *testing.T) {
		stop := agent(t)
		defer stop()
		mu.Lock()
		answer = hooks.Response{Allow: true}
		mu.Unlock()
		if out, took, err := migrate(); err != nil {
			t.Fatalf("virsh migrate: %v after %v: %s", err, took, out)
		}
		if s := state(b); s != "running" {
			t.Fatalf("lab1 on hostb is %q; want running", s)
		}
		back()
		// hostb releases lab1 after it left: the agent hears of it.
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			var ops []string
			for _, r := range asked {
				ops = append(ops, r.Op)
			}
			mu.Unlock()
			if strings.Join(ops, ",") == "migrate-begin,release" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent was asked %v; want migrate-begin, then release", ops)
			}
			time.Sleep(100 * time.Millisecond)
		}
		mu.Lock()
		asked = nil
		mu.Unlock()
	})

	t.Run("agent down, policy refuse", func(t *testing.T) {
		setPolicy("refuse")
		out, took, err := migrate()
		if err == nil || !strings.Contains(out, "unexpected exit status 1: mig2: refusing the incoming migration of lab1: the mig2 agent at "+sock+" is not answering (connect: ") {
			t.Fatalf("virsh migrate = %v after %v:\n%s", err, took, out)
		}
		t.Logf("refused in %v", took.Round(time.Millisecond))
		if s := state(a); s != "running" {
			t.Errorf("lab1 on hosta is %q; want running", s)
		}
	})

	t.Run("agent hung, policy refuse", func(t *testing.T) {
		setPolicy("refuse")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var conns []net.Conn
		var cmu sync.Mutex
		accepted := make(chan struct{})
		go func() {
			defer close(accepted)
			for {
				c, err := ln.Accept() // and never answer
				if err != nil {
					return
				}
				cmu.Lock()
				conns = append(conns, c)
				cmu.Unlock()
			}
		}()
		defer func() {
			ln.Close()
			<-accepted
			for _, c := range conns {
				c.Close()
			}
		}()
		out, took, err := migrate()
		if err == nil || !strings.Contains(out, "is not answering (receive: no answer within 800ms); this host refuses migrations it cannot check") {
			t.Fatalf("virsh migrate = %v after %v:\n%s", err, took, out)
		}
		t.Logf("refused in %v (the hook waits at most %v)", took.Round(time.Millisecond), hooks.DefaultTimeout)
		if s := state(a); s != "running" {
			t.Errorf("lab1 on hosta is %q; want running", s)
		}
	})

	t.Run("agent down, policy allow", func(t *testing.T) {
		setPolicy("allow")
		os.Remove(sock)
		if out, took, err := migrate(); err != nil {
			t.Fatalf("virsh migrate: %v after %v: %s", err, took, out)
		}
		if s := state(b); s != "running" {
			t.Fatalf("lab1 on hostb is %q; want running", s)
		}
	})
}
