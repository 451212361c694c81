package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
)

// qomFake is an Executor serving a hand-made QOM tree, counting commands.
type qomFake struct {
	lists map[string][]ObjectProperty
	props map[string]any // "path property" -> value
	mu    sync.Mutex     // the tree walk runs requests concurrently
	calls []string
}

func (f *qomFake) Execute(ctx context.Context, cmd string, args, result any) error {
	a, _ := json.Marshal(args)
	var p struct{ Path, Property, Implements string }
	json.Unmarshal(a, &p)
	f.mu.Lock()
	f.calls = append(f.calls, cmd+" "+p.Path+" "+p.Property)
	f.mu.Unlock()
	var v any
	switch cmd {
	case "qom-list-types":
		v = map[string][]ObjectTypeInfo{
			"device":         {{Name: "virtio-net-pci"}, {Name: "virtio-net-device"}, {Name: "q35-pcihost"}, {Name: "qemu64-x86_64-cpu"}, {Name: "apic"}},
			"bus":            {{Name: "PCIE"}, {Name: "virtio-bus"}},
			"memory-backend": {{Name: "memory-backend-ram"}},
		}[p.Implements]
	case "query-memory-size-summary":
		v = map[string]int64{"base-memory": 1 << 30, "plugged-memory": 0}
	case "query-cpus-fast":
		v = []map[string]any{{"qom-path": "/machine/unattached/device[0]", "target": "x86_64", "thread-id": 4242}}
	case "qom-list":
		l, ok := f.lists[p.Path]
		if !ok {
			return &Error{Class: ClassDeviceNotFound, Desc: "no " + p.Path, Command: cmd}
		}
		v = l
	case "qom-get":
		x, ok := f.props[p.Path+" "+p.Property]
		if !ok {
			return &Error{Class: ClassGenericError, Desc: "no property " + p.Property, Command: cmd}
		}
		v = x
	default:
		return &Error{Class: ClassCommandNotFound, Command: cmd}
	}
	b, _ := json.Marshal(v)
	return json.Unmarshal(b, result)
}

func child(name, typ string) ObjectProperty {
	return ObjectProperty{Name: name, Type: "child<" + typ + ">"}
}
func link(name, typ string) ObjectProperty {
	return ObjectProperty{Name: name, Type: "link<" + typ + ">"}
}
func prop(name, typ string) ObjectProperty { return ObjectProperty{Name: name, Type: typ} }

func newQOMFake(netFirst bool) *qomFake {
	machine := []ObjectProperty{
		prop("type", "string"), child("peripheral", "container"), child("unattached", "container"),
		child("q35", "q35-pcihost"), link("acpi-device", "hotplug-handler"), link("memory-backend", "memory-backend"),
		child("peripheral-anon", "container"),
	}
	if netFirst { // the same tree, listed in another order
		for i, j := 0, len(machine)-1; i < j; i, j = i+1, j-1 {
			machine[i], machine[j] = machine[j], machine[i]
		}
	}
	return &qomFake{
		lists: map[string][]ObjectProperty{
			"/machine":                 machine,
			"/machine/peripheral":      {prop("type", "string"), child("net0", "virtio-net-pci")},
			"/machine/peripheral-anon": {prop("type", "string")},
			"/machine/unattached": {prop("type", "string"), child("device[0]", "qemu64-x86_64-cpu"),
				child("non-qdev-gpio[0]", "irq"), child("pc.ram[0]", "memory-region")},
			"/machine/unattached/device[0]":       {prop("type", "string"), link("parent_bus", "bus"), child("lapic", "apic")},
			"/machine/unattached/device[0]/lapic": {prop("type", "string"), link("parent_bus", "bus")},
			"/machine/q35":                        {prop("type", "string"), link("parent_bus", "bus"), child("pcie.0", "PCIE"), child("pci-conf-idx[0]", "memory-region")},
			"/machine/peripheral/net0": {prop("type", "string"), link("parent_bus", "bus"), prop("addr", "int32"),
				prop("romfile", "str"), prop("rombar", "uint32"), prop("romsize", "uint32"), prop("multifunction", "bool"),
				prop("vectors", "uint32"), prop("mac", "str"), child("virtio-backend", "virtio-net-device"),
				child("virtio-pci-bus", "virtio-bus"), link("netdev", "netdev"), child("bus master[0]", "memory-region")},
			"/machine/peripheral/net0/virtio-backend": {prop("type", "string"), link("parent_bus", "bus")},
			"/objects": {prop("type", "string"), child("pc.ram", "memory-backend-ram"), child("tls0", "tls-creds-x509")},
		},
		props: map[string]any{
			"/machine type":                                      "pc-q35-7.2-machine",
			"/machine memory-backend":                            "/objects/pc.ram",
			"/machine/unattached/device[0] type":                 "qemu64-x86_64-cpu",
			"/machine/unattached/device[0] parent_bus":           "",
			"/machine/unattached/device[0]/lapic parent_bus":     "/machine/unattached/sysbus",
			"/machine/q35 parent_bus":                            "/machine/unattached/sysbus",
			"/machine/peripheral/net0 parent_bus":                "/machine/q35/pcie.0",
			"/machine/peripheral/net0 addr":                      3<<3 | 1,
			"/machine/peripheral/net0 romfile":                   "/usr/share/qemu/efi-virtio.rom",
			"/machine/peripheral/net0 rombar":                    1,
			"/machine/peripheral/net0 romsize":                   262144,
			"/machine/peripheral/net0 multifunction":             false,
			"/machine/peripheral/net0 vectors":                   3,
			"/machine/peripheral/net0 mac":                       "52:54:00:12:34:56",
			"/machine/peripheral/net0/virtio-backend parent_bus": "/machine/peripheral/net0/virtio-pci-bus",
			"/objects/pc.ram size":                               1 << 30,
		},
	}
}

func TestReadDeviceTreeFake(t *testing.T) {
	f := newQOMFake(false)
	tree, err := ReadDeviceTree(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"buses":[{"path":"/machine/peripheral/net0/virtio-pci-bus","type":"virtio-bus"},{"path":"/machine/q35/pcie.0","type":"PCIE"}],` +
		`"cpu-model":"qemu64","cpus":1,"devices":[` +
		`{"addr":"03.1","bus":"/machine/q35/pcie.0","id":"net0","path":"/machine/peripheral/net0","props":{"multifunction":false,"rombar":1,"romsize":262144,"vectors":3},"rom":true,"romfile":"efi-virtio.rom","type":"virtio-net-pci"},` +
		`{"bus":"/machine/peripheral/net0/virtio-pci-bus","path":"/machine/peripheral/net0/virtio-backend","type":"virtio-net-device"},` +
		`{"path":"/machine/q35","type":"q35-pcihost"},` +
		`{"path":"/machine/unattached/device[0]","type":"qemu64-x86_64-cpu"},` +
		`{"path":"/machine/unattached/device[0]/lapic","type":"apic"}],` +
		`"machine-type":"pc-q35-7.2","memory-backends":[{"id":"pc.ram","size":1073741824,"type":"memory-backend-ram"}],` +
		`"ram-backend":"pc.ram","ram-size":1073741824,"version":1}`
	if got := string(tree.Canonical()); got != want {
		t.Fatalf("canonical:\n%s\nwant\n%s", got, want)
	}
	for _, c := range f.calls {
		for _, bad := range []string{"irq", "memory-region", "gpio", "pc.ram[0]", "bus master", "netdev", "acpi-device", "/objects/tls0", " mac", "pcie.0 ", "q35 parent_bus", "lapic parent_bus"} {
			if strings.Contains(c, bad) {
				t.Errorf("walk sent %q (should skip %s)", c, bad)
			}
		}
	}
	// Same tree listed in another order: same bytes.
	other, err := ReadDeviceTree(context.Background(), newQOMFake(true))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(other.Canonical(), tree.Canonical()) {
		t.Fatal("listing order changed the canonical tree")
	}
	// Errors carry the package name and the failing command.
	f = newQOMFake(false)
	delete(f.lists, "/machine/peripheral/net0")
	if _, err := ReadDeviceTree(context.Background(), f); err == nil || !strings.HasPrefix(err.Error(), "qmp: reading device tree: qmp: qom-list: DeviceNotFound") {
		t.Fatalf("%v", err)
	}
}

func TestCPUModel(t *testing.T) {
	for _, tc := range [][3]string{
		{"qemu64-x86_64-cpu", "x86_64", "qemu64"},
		{"Skylake-Server-v4-x86_64-cpu", "x86_64", "Skylake-Server-v4"},
		{"host-x86_64-cpu", "", "host-x86_64"},
		{"cortex-a57-arm-cpu", "aarch64", "cortex-a57-arm"},
		{"max-arm-cpu", "arm", "max"},
	} {
		if got := cpuModel(tc[0], tc[1]); got != tc[2] {
			t.Errorf("cpuModel(%s, %s) = %s, want %s", tc[0], tc[1], got, tc[2])
		}
	}
}

func sampleTree() *DeviceTree {
	return &DeviceTree{
		Version: 1, MachineType: "pc-q35-7.2", CPUModel: "qemu64", CPUs: 2, RAMSize: 1 << 31, RAMBackend: "pc.ram",
		MemoryBackends: []MemoryBackend{{ID: "pc.ram", Type: "memory-backend-ram", Size: 1 << 31}, {ID: "a", Type: "memory-backend-memfd", Size: 1 << 20}},
		Buses:          []Bus{{Path: "/machine/q35/pcie.0", Type: "PCIE"}, {Path: "/machine/isa", Type: "ISA"}},
		Devices: []Device{
			{Path: "/machine/peripheral/rng0", Type: "virtio-rng-pci", ID: "rng0", Bus: "/machine/q35/pcie.0", Addr: "02.0",
				Props: map[string]json.RawMessage{"vectors": json.RawMessage("2"), "disable-legacy": json.RawMessage(`"auto"`)}},
			{Path: "/machine/a", Type: "mch"},
		},
	}
}

func TestDeviceTreeCanonicalRoundTrip(t *testing.T) {
	tr := sampleTree()
	c := tr.Canonical()
	if bytes.Contains(c, []byte(" ")) || bytes.Contains(c, []byte("\n")) {
		t.Fatalf("whitespace in canonical form: %s", c)
	}
	if tr.Devices[0].Path != "/machine/peripheral/rng0" {
		t.Fatal("Canonical reordered the caller's tree")
	}
	back, err := DecodeDeviceTree(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Canonical(), c) {
		t.Fatalf("round trip:\n%s\n%s", back.Canonical(), c)
	}
	// Indented and reordered input decodes to the same canonical bytes.
	var pretty bytes.Buffer
	json.Indent(&pretty, mustMarshal(t, tr), "", "  ")
	back, err = DecodeDeviceTree(pretty.Bytes())
	if err != nil || !bytes.Equal(back.Canonical(), c) {
		t.Fatalf("pretty input: %v", err)
	}
	// Keys are sorted at every level.
	if !bytes.HasPrefix(c, []byte(`{"buses":[{"path":"/machine/isa","type":"ISA"}`)) || !bytes.Contains(c, []byte(`"props":{"disable-legacy":"auto","vectors":2}`)) {
		t.Fatalf("not sorted: %s", c)
	}
	// No strict prefix decodes.
	for i := 0; i < len(c); i++ {
		if _, err := DecodeDeviceTree(c[:i]); err == nil {
			t.Fatalf("prefix %q decodes", c[:i])
		}
	}
	// Any difference shows.
	tr2 := sampleTree()
	tr2.Devices[0].Props["vectors"] = json.RawMessage("3")
	if bytes.Equal(tr2.Canonical(), c) {
		t.Fatal("a changed property did not change the encoding")
	}
}

func TestDecodeDeviceTreeErrors(t *testing.T) {
	ok := string(sampleTree().Canonical())
	for name, in := range map[string]string{
		"version":       strings.Replace(ok, `"version":1`, `"version":2`, 1),
		"no machine":    strings.Replace(ok, `"machine-type":"pc-q35-7.2"`, `"machine-type":""`, 1),
		"trailing":      ok + " {}",
		"dup device":    strings.Replace(ok, `"path":"/machine/a","type":"mch"`, `"path":"/machine/peripheral/rng0","type":"mch"`, 1),
		"bus = device":  strings.Replace(ok, `"path":"/machine/isa","type":"ISA"`, `"path":"/machine/peripheral/rng0","type":"ISA"`, 1),
		"no type":       strings.Replace(ok, `"type":"mch"`, `"type":""`, 1),
		"dup backend":   strings.Replace(ok, `"id":"a"`, `"id":"pc.ram"`, 1),
		"wrong type":    strings.Replace(ok, `"cpus":2`, `"cpus":"2"`, 1),
		"not an object": `[]`,
	} {
		if _, err := DecodeDeviceTree([]byte(in)); err == nil || !strings.HasPrefix(err.Error(), "qmp: device tree") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// Unknown members are ignored.
	if _, err := DecodeDeviceTree([]byte(strings.Replace(ok, `{"buses"`, `{"future":{"x":1},"buses"`, 1))); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceTreeGolden(t *testing.T) {
	data, err := os.ReadFile("testdata/" + rec72 + "devtree-q35.json")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := DecodeDeviceTree(data)
	if err != nil {
		t.Fatal(err)
	}
	// What the package documentation promises is in there, and what it
	// promises is not.
	s := string(tree.Canonical())
	for _, want := range []string{`"machine-type":"pc-q35-7.2"`, `"cpu-model":"qemu64"`, `"ram-size":268435456`, `/machine/q35/pcie.0`, `"addr":"1f.0"`} {
		if !strings.Contains(s, want) {
			t.Errorf("golden tree lacks %s", want)
		}
	}
	for _, not := range []string{"thread-id", "timestamp", "/tmp/", "memory-region", "irq"} {
		if strings.Contains(s, not) {
			t.Errorf("golden tree contains %s", not)
		}
	}
}
