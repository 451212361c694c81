//go:build integration

package libvirtqmp

// Integration test against a real libvirt QEMU driver. It uses libvirt's
// embedded driver (qemu:///embed?root=DIR): no libvirtd, a private state
// directory, a real QEMU started and monitored by libvirt 9.0 in-process.
//
//	go test -tags integration -count=1 ./qmp/libvirtqmp/

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/mig2/mig2/qmp"
)

func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("MIG2_ALLOW_SKIP") == "1" {
		t.Skipf("%s: %v (MIG2_ALLOW_SKIP=1)", what, err)
	}
	t.Fatalf("%s: %v (install libvirt-daemon-driver-qemu and qemu-system-x86, or set MIG2_ALLOW_SKIP=1)", what, err)
}

// runEventLoop runs libvirt's default event loop until the test ends.
func runEventLoop(t *testing.T) {
	if err := libvirt.EventRegisterDefaultImpl(); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	done := make(chan struct{})
	// A periodic timer wakes the loop so that it can notice stop.
	timer, err := libvirt.EventAddTimeout(50, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		for !stop.Load() {
			if err := libvirt.EventRunDefaultImpl(); err != nil {
				t.Errorf("libvirt event loop: %v", err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		stop.Store(true)
		<-done
		libvirt.EventRemoveTimeout(timer)
	})
}

const domainXML = `<domain type='qemu'>
  <name>mig2-libvirtqmp-it</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>%s</emulator>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
</domain>`

func TestIntegrationLibvirtEmbed(t *testing.T) {
	emu, err := exec.LookPath("qemu-system-x86_64")
	need(t, "qemu-system-x86_64", err)
	runEventLoop(t)
	// A short root (unix socket paths under it must fit in 108 bytes) with a
	// qemu.conf that needs no virtlogd, no cgroups and no security driver.
	root, err := os.MkdirTemp("", "mig2-embed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	conf := "stdio_handler = \"file\"\ncgroup_controllers = [ ]\nsecurity_driver = \"none\"\nuser = \"root\"\ngroup = \"root\"\n"
	for _, dir := range []string{root + "/etc", root + "/etc/qemu"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir+"/qemu.conf", []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := libvirt.NewConnect("qemu:///embed?root=" + root)
	need(t, "libvirt embedded QEMU driver", err)
	t.Cleanup(func() { conn.Close() })

	dom, err := conn.DomainCreateXML(strings.Replace(domainXML, "%s", emu, 1), libvirt.DOMAIN_START_PAUSED)
	if err != nil {
		t.Fatalf("starting a domain: %v", err)
	}
	t.Cleanup(func() {
		dom.Destroy()
		dom.Free()
	})

	mon := New(dom, WithConnect(conn))
	t.Cleanup(func() { mon.Close() })
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	sub := mon.Subscribe(32)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	v, err := qmp.QueryVersion(ctx, mon)
	if err != nil || !v.AtLeast(7, 2) {
		t.Fatalf("query-version: %v %v", v, err)
	}
	if st, err := qmp.QueryStatus(ctx, mon); err != nil || st.Running || (st.Status != qmp.RunStatePaused && st.Status != qmp.RunStatePrelaunch) {
		t.Fatalf("query-status: %+v %v", st, err)
	}
	// QMP errors come back inside libvirt's output: classes survive.
	if err := mon.Execute(ctx, "no-such-command", nil, nil); !qmp.IsCommandNotFound(err) {
		t.Fatalf("unknown command: %v", err)
	}
	if err := mon.Execute(ctx, "device_del", map[string]string{"id": "nope"}, nil); !errors.Is(err, qmp.ErrDeviceNotFound) {
		t.Fatalf("device_del: %v", err)
	}
	// A large reply (query-qmp-schema, ~200 KB).
	schema, err := qmp.QuerySchema(ctx, mon)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(schema.CompressionMethods(), ","); got != "none,zlib,zstd" {
		t.Fatalf("compression methods %s", got)
	}

	// Events without data (RESUME, STOP) arrive.
	if err := dom.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, sub, qmp.EventResume)
	if err := dom.Suspend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, sub, qmp.EventStop)

	start := time.Now()
	tree, err := qmp.ReadDeviceTree(ctx, mon)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device tree through libvirt: %v, %d devices", time.Since(start), len(tree.Devices))
	var rng *qmp.Device
	for i := range tree.Devices {
		if tree.Devices[i].ID == "rng0" {
			rng = &tree.Devices[i]
		}
	}
	if rng == nil || rng.Type != "virtio-rng-pci" || !strings.HasPrefix(tree.MachineType, "pc-q35-") || tree.RAMSize != 128<<20 {
		t.Fatalf("tree: %s", tree.Canonical())
	}
}

func waitFor(t *testing.T, ctx context.Context, sub *qmp.Subscription, name string) {
	t.Helper()
	for {
		select {
		case e, ok := <-sub.Events():
			if !ok {
				t.Fatalf("waiting for %s: subscription closed", name)
			}
			if e.Name == name {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no %s event: %v", name, ctx.Err())
		}
	}
}
