package libvirt

import (
	"os"
	"strings"
	"testing"

	"github.com/mig2/mig2/v2proto"
)

const domXML = `<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>guest1</name>
  <memory unit='KiB'>524288</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><kernel>/k</kernel></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='pci' index='0' model='pcie-root'><alias name='pcie.0'/></controller>
    <controller type='pci' index='1' model='pcie-root-port'><address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/></controller>
    <serial type='unix'><source mode='bind' path='/tmp/s'/><target type='isa-serial' port='0'/></serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend><alias name='rng0'/></rng>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-balloon-pci,id=extra0,bus=pcie.0,addr=0x9'/>
  </qemu:commandline>
</domain>`

func TestTreeFromXML(t *testing.T) {
	tree, info, err := TreeFromXML([]byte(domXML))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "guest1" || info.Machine != "pc-q35-7.2" || info.Arch != "x86_64" || info.Type != "qemu" || info.Emulator != "/usr/bin/qemu-system-x86_64" {
		t.Fatalf("info = %+v", info)
	}
	if !strings.Contains(info.CPUXML, "<model fallback=\"forbid\">qemu64</model>") {
		t.Fatalf("cpu xml = %s", info.CPUXML)
	}
	if tree.MachineType != "pc-q35-7.2" || tree.CPUModel != "qemu64" || tree.RAMBytes != 512<<20 {
		t.Fatalf("tree header = %q %q %d", tree.MachineType, tree.CPUModel, tree.RAMBytes)
	}
	want := map[string]string{
		"controller[0]":           "controller/pci/pcie-root",
		"controller[1]":           "controller/pci/pcie-root-port",
		"serial[0]":               "serial/isa-serial",
		"rng[0]":                  "rng/virtio",
		"memballoon[0]":           "memballoon/none",
		"vcpus":                   "vcpus",
		"qemu:commandline/extra0": "virtio-balloon-pci",
	}
	if len(tree.Devices) != len(want) {
		t.Fatalf("%d devices, want %d: %+v", len(tree.Devices), len(want), tree.Devices)
	}
	for _, d := range tree.Devices {
		if want[d.ID] != d.Type {
			t.Errorf("device %s has type %q, want %q", d.ID, d.Type, want[d.ID])
		}
	}
	if _, err := tree.Digest(); err != nil {
		t.Fatalf("the tree is not canonical: %v", err)
	}
}

// TestTreeIgnoresHostSide: what differs between hosts (aliases, backends, paths) never makes
// two trees differ fatally.
func TestTreeIgnoresHostSide(t *testing.T) {
	other := strings.NewReplacer("type='unix'", "type='pty'", "/tmp/s", "/run/x", "<alias name='rng0'/>", "", "/dev/urandom", "/dev/random").Replace(domXML)
	a, _, _ := TreeFromXML([]byte(domXML))
	b, _, _ := TreeFromXML([]byte(other))
	if d := v2proto.DiffTrees(&a, &b); d.Fatal() {
		t.Fatalf("host-side differences were fatal:\n%s", d)
	}
}

// TestTreeCatchesCommandlineDevice: a device only in <qemu:commandline> on one side — the case
// plain libvirt lets through to a late failure — is a fatal difference naming the device.
func TestTreeCatchesCommandlineDevice(t *testing.T) {
	without := strings.Replace(domXML, "virtio-balloon-pci,id=extra0,bus=pcie.0,addr=0x9", "", 1)
	without = strings.Replace(without, "<qemu:arg value='-device'/>", "", 1)
	a, _, _ := TreeFromXML([]byte(domXML))
	b, _, _ := TreeFromXML([]byte(without))
	d := v2proto.DiffTrees(&a, &b)
	if !d.Fatal() || !strings.Contains(d.String(), "extra0") {
		t.Fatalf("diff = %s", d)
	}
}

func TestTreeFromXMLErrors(t *testing.T) {
	for _, bad := range []string{"", "<network/>", "<domain><name>x</name>", "<domain/><domain/>"} {
		if _, _, err := TreeFromXML([]byte(bad)); err == nil {
			t.Errorf("TreeFromXML(%q) accepted", bad)
		}
	}
}

func TestFilterByCaps(t *testing.T) {
	caps := `<domainCapabilities><machine>pc-q35-7.2</machine><devices>
	  <rng supported='yes'><enum name='model'><value>virtio-transitional</value></enum></rng>
	  <disk supported='yes'><enum name='bus'><value>sata</value></enum></disk>
	</devices></domainCapabilities>`
	tree, _, _ := TreeFromXML([]byte(domXML))
	filterByCaps(&tree, caps)
	for _, d := range tree.Devices {
		if d.ID == "rng[0]" {
			t.Fatalf("an rng model the host does not list was kept")
		}
	}
}

func FuzzTreeFromXML(f *testing.F) {
	f.Add([]byte(domXML))
	if b, err := os.ReadFile("testdata/domain.xml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tree, _, err := TreeFromXML(data)
		if err != nil {
			return
		}
		// Whatever parses must encode canonically or be refused cleanly, never panic.
		_, _ = tree.Digest()
	})
}
