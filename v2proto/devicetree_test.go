package v2proto

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func tree(devs ...Device) DeviceTree {
	return DeviceTree{MachineType: "pc-q35-7.2", CPUModel: "qemu64", RAMBytes: 2 << 30, Devices: devs}
}

func dev(id, typ string, kv ...string) Device {
	d := Device{ID: id, Type: typ, Props: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Props[kv[i]] = kv[i+1]
	}
	return d
}

func TestDiffTrees(t *testing.T) {
	net0 := dev("net0", "virtio-net-pci", "mac", "52:54:00:00:00:01", "netdev", "hostnet0", "romfile", "efi-virtio.rom")
	disk0 := dev("disk0", "virtio-blk-pci", "drive", "drive0", "serial", "abc")
	rng0 := dev("rng0", "virtio-rng-pci")
	for _, tc := range []struct {
		name     string
		src, dst DeviceTree
		want     []DiffEntry
	}{
		{"identical", tree(net0, disk0), tree(disk0, net0), nil},
		{"machine type", tree(), func() DeviceTree { d := tree(); d.MachineType = "pc-i440fx-7.2"; return d }(),
			[]DiffEntry{{Kind: DiffMachineType, Source: "pc-q35-7.2", Destination: "pc-i440fx-7.2", Fatal: true}}},
		{"cpu model", tree(), func() DeviceTree { d := tree(); d.CPUModel = "host"; return d }(),
			[]DiffEntry{{Kind: DiffCPUModel, Source: "qemu64", Destination: "host", Fatal: true}}},
		{"ram size", tree(), func() DeviceTree { d := tree(); d.RAMBytes = 1 << 30; return d }(),
			[]DiffEntry{{Kind: DiffRAMSize, Source: "2147483648", Destination: "1073741824", Fatal: true}}},
		{"missing on destination", tree(net0, rng0), tree(net0),
			[]DiffEntry{{Kind: DiffMissing, Device: "rng0", DeviceType: "virtio-rng-pci", Source: "virtio-rng-pci", Fatal: true}}},
		{"extra on destination", tree(net0), tree(net0, rng0),
			[]DiffEntry{{Kind: DiffExtra, Device: "rng0", DeviceType: "virtio-rng-pci", Destination: "virtio-rng-pci", Fatal: true}}},
		{"different type", tree(disk0), tree(dev("disk0", "scsi-hd", "drive", "drive0")),
			[]DiffEntry{{Kind: DiffType, Device: "disk0", DeviceType: "virtio-blk-pci", Source: "virtio-blk-pci", Destination: "scsi-hd", Fatal: true}}},
		{"different property", tree(net0), tree(dev("net0", "virtio-net-pci", "mac", "52:54:00:00:00:02", "netdev", "hostnet0", "romfile", "efi-virtio.rom")),
			[]DiffEntry{{Kind: DiffProperty, Device: "net0", DeviceType: "virtio-net-pci", Property: "mac", Source: "52:54:00:00:00:01", Destination: "52:54:00:00:00:02", Fatal: true}}},
		{"property only on the source (option ROM)", tree(net0), tree(dev("net0", "virtio-net-pci", "mac", "52:54:00:00:00:01", "netdev", "hostnet0")),
			[]DiffEntry{{Kind: DiffProperty, Device: "net0", DeviceType: "virtio-net-pci", Property: "romfile", Source: "efi-virtio.rom", Fatal: true}}},
		{"property only on the destination", tree(rng0), tree(dev("rng0", "virtio-rng-pci", "max-bytes", "1024")),
			[]DiffEntry{{Kind: DiffProperty, Device: "rng0", DeviceType: "virtio-rng-pci", Property: "max-bytes", Destination: "1024", Fatal: true}}},
		{"absent equals empty", tree(rng0), tree(dev("rng0", "virtio-rng-pci", "x", "")), nil},
		{"informational properties", tree(net0, disk0), tree(
			dev("net0", "virtio-net-pci", "mac", "52:54:00:00:00:01", "netdev", "hostnet9", "romfile", "efi-virtio.rom", "info.path", "/x"),
			dev("disk0", "virtio-blk-pci", "drive", "drive7", "serial", "abc")),
			[]DiffEntry{
				{Kind: DiffProperty, Device: "disk0", DeviceType: "virtio-blk-pci", Property: "drive", Source: "drive0", Destination: "drive7"},
				{Kind: DiffProperty, Device: "net0", DeviceType: "virtio-net-pci", Property: "info.path", Destination: "/x"},
				{Kind: DiffProperty, Device: "net0", DeviceType: "virtio-net-pci", Property: "netdev", Source: "hostnet0", Destination: "hostnet9"},
			}},
		{"ordering: machine, cpu, ram, then devices by id, then properties by name",
			func() DeviceTree {
				return tree(dev("b", "t", "z", "1", "a", "1"), dev("a", "t"))
			}(),
			func() DeviceTree {
				d := tree(dev("b", "t", "z", "2", "a", "2"), dev("c", "t"))
				d.MachineType, d.CPUModel, d.RAMBytes = "m", "c", 1
				return d
			}(),
			[]DiffEntry{
				{Kind: DiffMachineType, Source: "pc-q35-7.2", Destination: "m", Fatal: true},
				{Kind: DiffCPUModel, Source: "qemu64", Destination: "c", Fatal: true},
				{Kind: DiffRAMSize, Source: "2147483648", Destination: "1", Fatal: true},
				{Kind: DiffMissing, Device: "a", DeviceType: "t", Source: "t", Fatal: true},
				{Kind: DiffProperty, Device: "b", DeviceType: "t", Property: "a", Source: "1", Destination: "2", Fatal: true},
				{Kind: DiffProperty, Device: "b", DeviceType: "t", Property: "z", Source: "1", Destination: "2", Fatal: true},
				{Kind: DiffExtra, Device: "c", DeviceType: "t", Destination: "t", Fatal: true},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := DiffTrees(&tc.src, &tc.dst)
			if len(d.Entries) != len(tc.want) {
				t.Fatalf("got %d entries, want %d:\n%v", len(d.Entries), len(tc.want), d)
			}
			fatal := false
			for i := range tc.want {
				if d.Entries[i] != tc.want[i] {
					t.Errorf("entry %d:\n got %+v\nwant %+v", i, d.Entries[i], tc.want[i])
				}
				fatal = fatal || tc.want[i].Fatal
			}
			if d.Fatal() != fatal || d.Empty() != (len(tc.want) == 0) {
				t.Errorf("Fatal()=%v Empty()=%v", d.Fatal(), d.Empty())
			}
		})
	}
}

func TestDiffRendering(t *testing.T) {
	src := tree(dev("net0", "virtio-net-pci", "mac", "52:54:00:00:00:01", "netdev", "hostnet0"), dev("rng0", "virtio-rng-pci"))
	dst := tree(dev("net0", "virtio-net-pci", "mac", "52:54:00:00:00:01", "netdev", "hostnet1"), dev("serial0", "isa-serial"))
	dst.RAMBytes = 1 << 30
	d := DiffTrees(&src, &dst)
	d.SourceHost, d.DestinationHost = "src.example", "dst.example"
	want := `device trees differ between source (src.example) and destination (dst.example): 3 fatal, 1 informational
  FATAL RAM size: source 2147483648 bytes, destination 1073741824 bytes
  info  device "net0" (virtio-net-pci): property "netdev": source "hostnet0", destination "hostnet1"
  FATAL device "rng0" (virtio-rng-pci): missing on the destination
  FATAL device "serial0" (isa-serial): extra on the destination (not on the source)`
	if got := d.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	js, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Fatal   bool        `json:"fatal"`
		Source  string      `json:"source_host"`
		Entries []DiffEntry `json:"entries"`
	}
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Fatal || back.Source != "src.example" || len(back.Entries) != 4 || back.Entries[2].Device != "rng0" || back.Entries[2].Kind != DiffMissing {
		t.Errorf("JSON: %s", js)
	}
	empty := DiffTrees(&src, &src)
	if js, _ := json.Marshal(empty); !bytes.Contains(js, []byte(`"fatal":false`)) || !bytes.Contains(js, []byte(`"entries":[]`)) {
		t.Errorf("empty JSON: %s", js)
	}
	if empty.String() != "device trees are identical" {
		t.Errorf("empty: %s", empty)
	}
	// The refusal error carries the readable diff.
	msg := (&DeviceMismatchError{Diff: d}).Error()
	if !strings.HasPrefix(msg, "v2proto: refused (device-mismatch): device trees differ") || !strings.Contains(msg, `"rng0"`) {
		t.Errorf("error: %s", msg)
	}
}

func TestIsInformational(t *testing.T) {
	for _, p := range []string{"netdev", "drive", "chardev", "iothread", "memdev", "bootindex", "fd", "vhostfd", "ifname", "info.anything"} {
		if !IsInformational(p) {
			t.Errorf("%s should be informational", p)
		}
	}
	for _, p := range []string{"mac", "romfile", "addr", "bus", "serial", "size", "info"} {
		if IsInformational(p) {
			t.Errorf("%s should be fatal", p)
		}
	}
}

// TestCanonicalEncoding: the encoding does not depend on the order devices or properties were
// given in; digests follow; decoders reject non-canonical input.
func TestCanonicalEncoding(t *testing.T) {
	a := tree(dev("b", "t", "y", "1", "x", "2"), dev("a", "t"))
	b := tree(dev("a", "t"), dev("b", "t", "x", "2", "y", "1"))
	ea, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	eb, _ := b.MarshalBinary()
	if !bytes.Equal(ea, eb) {
		t.Fatal("encoding depends on order")
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatal("digest depends on order")
	}
	b.Devices[1].Props["x"] = "3"
	if db2, _ := b.Digest(); db2 == da {
		t.Fatal("digest ignores a property")
	}
	var back DeviceTree
	if err := back.UnmarshalBinary(ea); err != nil {
		t.Fatal(err)
	}
	if back.Devices[0].ID != "a" || back.Devices[1].Props["y"] != "1" {
		t.Fatalf("round trip: %+v", back)
	}
	dup := tree(dev("a", "t"), dev("a", "u"))
	if _, err := dup.MarshalBinary(); err == nil {
		t.Fatal("duplicate ids encoded")
	}
	noID := tree(dev("", "t"))
	if _, err := noID.MarshalBinary(); err == nil {
		t.Fatal("empty id encoded")
	}
	// Hand-made non-canonical input (devices out of order) is rejected.
	bld := &builder{}
	bld.putString(1, "m")
	bld.putString(2, "c")
	bld.putU64(3, 1)
	bld.field(4, func(b *builder) {
		for _, id := range []string{"b", "a"} {
			b.item(func(b *builder) {
				b.putString(1, id)
				b.putString(2, "t")
				b.field(3, func(*builder) {})
			})
		}
	})
	if err := back.UnmarshalBinary(bld.bytes()); err == nil || !strings.Contains(err.Error(), "not sorted") {
		t.Fatalf("unsorted devices: %v", err)
	}
}

// TestDiffRenderingMachineType: with different machine types, the built-in devices' differences
// are counted in one line instead of flooding the report; the JSON keeps every entry.
func TestDiffRenderingMachineType(t *testing.T) {
	src := &DeviceTree{MachineType: "pc-q35-7.2", Devices: []Device{
		{ID: "/machine/unattached/device[2]", Type: "ICH9-LPC"},
		{ID: "/machine/unattached/device[3]", Type: "i8257"},
		{ID: "rng0", Type: "virtio-rng-pci", Props: map[string]string{"addr": "01.0"}},
	}}
	dst := &DeviceTree{MachineType: "pc-i440fx-7.2", Devices: []Device{
		{ID: "/machine/unattached/device[2]", Type: "i440FX"},
		{ID: "rng0", Type: "virtio-rng-pci", Props: map[string]string{"addr": "02.0"}},
	}}
	d := DiffTrees(src, dst)
	out := d.String()
	for _, want := range []string{"machine type", "pc-q35-7.2", "pc-i440fx-7.2", `"rng0"`, "and 2 differences in devices the machine creates itself"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "device[2]") {
		t.Errorf("built-in devices listed one by one:\n%s", out)
	}
	if len(d.Entries) != 4 { // machine type, device[2] type, device[3] missing, rng0 addr
		t.Errorf("%d entries, want all 4 kept for machines", len(d.Entries))
	}
	// Same machine type: built-in differences are listed (they are unexpected then).
	dst.MachineType = src.MachineType
	if out := DiffTrees(src, dst).String(); !strings.Contains(out, "device[2]") {
		t.Errorf("with equal machine types a built-in difference must be listed:\n%s", out)
	}
}
